"""Drive qingcloud-sim with the official Python SDK (qingcloud-sdk) and compare
the SDK's signatures with hostnic's (`hostnicctl cloud sign`).

Run by .ci/steps/sdk-crosscheck.sh inside a throwaway venv. Exits non-zero on
the first mismatch.
"""

import argparse
import json
import subprocess
import sys
import time

import qingcloud.conn.auth as sdk_auth
from qingcloud.conn.auth import QuerySignatureAuthHandler
from qingcloud.iaas.connection import APIConnection
from qingcloud.misc.utils import get_ts

FAILURES = []


def check(what, ok, detail=""):
    print(("ok   " if ok else "FAIL ") + what + (": " + str(detail) if detail and not ok else ""))
    if not ok:
        FAILURES.append(what)


def connect(args, secret=None):
    return APIConnection(args.key, secret or args.secret, args.zone, host="127.0.0.1",
                         port=args.port, protocol="http", retry_time=1)


def wait_job(conn, job_id, timeout=30):
    deadline = time.time() + timeout
    seen = []
    while time.time() < deadline:
        resp = conn.describe_jobs(jobs=[job_id])
        status = resp["job_set"][0]["status"] if resp.get("job_set") else None
        if not seen or seen[-1] != status:
            seen.append(status)
        if status in ("successful", "failed"):
            return seen
        time.sleep(0.05)
    return seen


def sdk_flow(args):
    conn = connect(args)
    resp = conn.describe_nics(limit=100)
    check("DescribeNics answers", resp.get("ret_code") == 0, resp)
    check("three primary NICs at start", resp.get("total_count") == 3, resp)

    resp = conn.create_nics(vxnet="vxnet-sim2", nic_name="sdk check", count=2)
    check("CreateNics", resp.get("ret_code") == 0 and len(resp.get("nics", [])) == 2, resp)
    ids = [n["nic_id"] for n in resp.get("nics", [])]
    check("NIC ids are MACs", all(i.startswith("52:54:") for i in ids), ids)

    resp = conn.attach_nics(nics=ids, instance="i-sim00002")
    check("AttachNics returns a job", resp.get("ret_code") == 0 and resp.get("job_id"), resp)
    seen = wait_job(conn, resp.get("job_id"))
    check("attach job pending -> ... -> successful", seen and seen[0] == "pending" and seen[-1] == "successful", seen)

    resp = conn.describe_nics(nics=ids)
    check("attached NICs are in-use on the instance",
          all(n["status"] == "in-use" and n["instance_id"] == "i-sim00002" for n in resp.get("nic_set", []))
          and resp.get("total_count") == 2, resp)

    resp = conn.delete_nics(nics=ids)
    check("deleting attached NICs is refused with 1400", resp.get("ret_code") == 1400, resp)

    resp = conn.detach_nics(nics=ids)
    check("DetachNics returns a job", resp.get("ret_code") == 0 and resp.get("job_id"), resp)
    seen = wait_job(conn, resp.get("job_id"))
    check("detach job successful", seen and seen[-1] == "successful", seen)

    resp = conn.delete_nics(nics=ids)
    check("DeleteNics", resp.get("ret_code") == 0, resp)
    resp = conn.describe_nics(nics=ids)
    check("deleted NICs are gone", resp.get("ret_code") == 0 and resp.get("total_count") == 0, resp)

    resp = conn.send_request("DescribeVxnets", {"vxnets": ["vxnet-sim1"], "verbose": 1}, verb="POST")
    check("form POST is accepted", resp.get("ret_code") == 0 and resp.get("total_count") == 1, resp)

    resp = conn.send_request("DescribeNics", {"nic_name": "a b+c/d:é~"})
    check("odd characters in parameters sign the same", resp.get("ret_code") == 0, resp)

    resp = conn.create_nics(vxnet="vxnet-nope")
    check("unknown vxnet -> 2100", resp.get("ret_code") == 2100, resp)

    resp = connect(args, secret="WRONG" + args.secret).describe_nics()
    check("bad signature -> 1200", resp.get("ret_code") == 1200, resp)

    original = sdk_auth.get_ts
    sdk_auth.get_ts = lambda ts=None: get_ts(time.gmtime(time.time() - 3600))
    try:
        resp = connect(args).describe_nics()
    finally:
        sdk_auth.get_ts = original
    check("stale time_stamp -> 1300", resp.get("ret_code") == 1300, resp)


def signature_parity(args):
    fixed = {
        "action": "DescribeNics",
        "zone": "pek3b",
        "access_key_id": args.key,
        "signature_version": 1,
        "version": 1,
        "time_stamp": "2026-11-27T17:26:58Z",
        "req_id": "af0961b2046e4bd79dbafd014f8bd811",
        "nics.1": "52:54:9e:00:00:01",
        "nic_name": "hostnic i-abc/ü+x:y~",
        "limit": 100,
        "status": "",
    }
    handler = QuerySignatureAuthHandler("127.0.0.1", args.key, args.secret)
    for method in ("GET", "POST"):
        params = dict(fixed)
        qs, sig = handler._calc_signature(params, method, "/iaas/")
        sig = sig.decode() if isinstance(sig, bytes) else sig
        cmd = [args.hostnicctl, "cloud", "sign", "--credentials", args.credentials,
               "--method", method, "--path", "/iaas/"]
        cmd += ["%s=%s" % (k, v) for k, v in params.items()]
        out = json.loads(subprocess.check_output(cmd))
        check("%s canonical query equals the SDK's" % method, out["canonical_query"] == qs,
              (out["canonical_query"], qs))
        check("%s signature equals the SDK's" % method, out["signature"] == sig, (out["signature"], sig))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--secret", required=True)
    p.add_argument("--zone", default="pek3a")
    p.add_argument("--hostnicctl", required=True)
    p.add_argument("--credentials", required=True)
    args = p.parse_args()
    sdk_flow(args)
    signature_parity(args)
    if FAILURES:
        print("%d check(s) failed" % len(FAILURES))
        sys.exit(1)
    print("SDK cross-check passed")


if __name__ == "__main__":
    main()
