"""Drive qingcloud-sim with the official Python SDK (qingcloud-sdk) and compare
the SDK's signatures with hostnic's (`hostnicctl cloud sign`).

Besides the NIC lifecycle and the error codes, it covers what the simulator
models of the account's economics: a VIP allocation (AllocateVips, DescribeVips,
ReleaseVips through `send_request`, as the SDK has no method for them), a paged
listing of more than 100 NICs (at most 100 per page, `offset`/`total_count`),
and the request-quota 2500 (its message tells it from a resource quota).

Run by .ci/steps/sdk-crosscheck.sh inside a throwaway venv. Reports every check
and exits non-zero if any failed.
"""

import argparse
import json
import subprocess
import sys
import time
import urllib.request

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


def admin(args, what, body):
    req = urllib.request.Request("http://127.0.0.1:%d/_sim/%s" % (args.port, what),
                                 data=json.dumps(body).encode(), method="POST")
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def vip_flow(args):
    conn = connect(args)
    resp = conn.send_request("AllocateVips", {"vxnet_id": "vxnet-sim2", "vip_name": "sdk block",
                                              "vip_range": "172.16.2.64-172.16.2.79"})
    check("AllocateVips of a range answers a job and 16 VIPs",
          resp.get("ret_code") == 0 and resp.get("job_id") and len(resp.get("vips", [])) == 16, resp)
    vips = resp.get("vips", [])
    seen = wait_job(conn, resp.get("job_id"))
    check("VIP allocation job successful", seen and seen[-1] == "successful", seen)

    resp = conn.send_request("AllocateVips", {"vxnet_id": "vxnet-sim2", "vip_addrs": ["172.16.2.200"]})
    check("AllocateVips of an explicit address", resp.get("ret_code") == 0 and len(resp.get("vips", [])) == 1, resp)
    single = resp.get("vips", [])
    wait_job(conn, resp.get("job_id"))

    resp = conn.send_request("DescribeVips", {"vxnets": ["vxnet-sim2"], "vip_name": "sdk block", "limit": 100})
    items = resp.get("vip_set", [])
    check("DescribeVips lists the block with its fields",
          resp.get("ret_code") == 0 and resp.get("total_count") == 16
          and all(set(("vip_id", "vip_name", "vip_addr", "vxnet_id", "instance_id", "nic_id", "create_time")) <= set(v)
                  for v in items), resp)
    resp = conn.send_request("DescribeVips", {"vip_addrs": ["172.16.2.70"]})
    check("DescribeVips by address", resp.get("total_count") == 1
          and resp["vip_set"][0]["vip_addr"] == "172.16.2.70", resp)

    resp = conn.send_request("AllocateVips", {"vxnet_id": "vxnet-sim2", "vip_addrs": ["172.16.2.70"]})
    check("a VIP's address is not given twice -> 1400", resp.get("ret_code") == 1400, resp)
    resp = conn.create_nics(vxnet="vxnet-sim2", private_ips=["172.16.2.200"])
    check("no NIC gets a VIP's address -> 1400", resp.get("ret_code") == 1400, resp)
    resp = conn.send_request("AllocateVips", {"vxnet_id": "vxnet-sim2", "vip_range": "172.16.2.90-172.16.2.80"})
    check("a reversed range -> 1100", resp.get("ret_code") == 1100, resp)
    resp = conn.send_request("AllocateVips", {"vxnet_id": "vxnet-sim2", "vip_range": "172.16.3.1-172.16.3.9"})
    check("a range outside the vxnet -> 1100", resp.get("ret_code") == 1100, resp)

    resp = conn.send_request("ReleaseVips", {"vips": vips + single})
    check("ReleaseVips returns a job", resp.get("ret_code") == 0 and resp.get("job_id"), resp)
    seen = wait_job(conn, resp.get("job_id"))
    check("VIP release job successful", seen and seen[-1] == "successful", seen)
    resp = conn.send_request("DescribeVips", {"vxnets": ["vxnet-sim2"]})
    check("released VIPs are gone", resp.get("ret_code") == 0 and resp.get("total_count") == 0, resp)


def paging_flow(args):
    conn = connect(args)
    resp = conn.create_nics(vxnet="vxnet-sim2", nic_name="sdk page", count=150)
    check("CreateNics count=150 in one call", resp.get("ret_code") == 0 and len(resp.get("nics", [])) == 150, resp)
    created = set(n["nic_id"] for n in resp.get("nics", []))
    first = conn.describe_nics(nic_name="sdk page", limit=1000)
    check("a page holds at most 100 NICs whatever limit says",
          first.get("ret_code") == 0 and len(first.get("nic_set", [])) == 100 and first.get("total_count") == 150,
          {k: first.get(k) for k in ("ret_code", "total_count")})
    second = conn.describe_nics(nic_name="sdk page", limit=100, offset=100)
    check("offset 100 gives the other 50", len(second.get("nic_set", [])) == 50, second.get("total_count"))
    listed = set(n["nic_id"] for n in first.get("nic_set", []) + second.get("nic_set", []))
    check("the two pages list every NIC once", listed == created, len(listed))
    resp = conn.describe_nics(limit=0)
    check("limit=0 -> 1100", resp.get("ret_code") == 1100, resp)
    resp = conn.describe_nics(offset=-1)
    check("a negative offset -> 1100", resp.get("ret_code") == 1100, resp)
    resp = conn.create_nics(vxnet="vxnet-sim2", count=253)
    check("count=253 -> 1100", resp.get("ret_code") == 1100, resp)
    resp = conn.delete_nics(nics=sorted(created))
    check("DeleteNics of 150", resp.get("ret_code") == 0, resp)


def quota_flow(args):
    conn = connect(args)
    status, state = admin(args, "quota", {})
    check("/_sim/quota reads the default quota", status == 200 and state.get("quota") == "2000/3600", state)
    used = state.get("keys", {}).get(args.key, {}).get("used", 0)
    check("every request of this run was counted", used > 20, used)
    status, state = admin(args, "quota", {"quota": "3/3600", "reset": True})
    check("the quota changes at run time", status == 200 and state.get("limit") == 3, state)
    answers = [connect(args).describe_nics(limit=1) for _ in range(4)]
    check("three requests fit", all(a.get("ret_code") == 0 for a in answers[:3]), answers[:3])
    last = answers[3]
    check("the fourth answers 2500", last.get("ret_code") == 2500, last)
    check("its message says request quota", "request quota" in last.get("message", ""), last)
    resource = conn.create_nics(vxnet="vxnet-sim2", count=252)
    check("a request over the quota is refused before anything else",
          resource.get("ret_code") == 2500 and "request quota" in resource.get("message", ""), resource)
    status, state = admin(args, "quota", {})
    check("the simulator logged the 2500s it sent",
          state.get("rejections_total") == 2 and state["rejections"][-1]["action"] == "CreateNics", state)
    status, state = admin(args, "quota", {"quota": "bogus"})
    check("a quota string the simulator cannot parse -> 400 with 1100",
          status == 400 and state.get("ret_code") == 1100, state)
    admin(args, "quota", {"quota": "off"})
    # With the quota back, a resource quota answers 2500 with another message.
    conn.create_nics(vxnet="vxnet-sim2", count=250, nic_name="fill")
    resp = conn.create_nics(vxnet="vxnet-sim2", count=5)
    check("a resource-quota 2500 does not say request quota",
          resp.get("ret_code") == 2500 and "request quota" not in resp.get("message", ""), resp)


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
    vip_flow(args)
    paging_flow(args)
    quota_flow(args)
    signature_parity(args)
    if FAILURES:
        print("%d check(s) failed: %s" % (len(FAILURES), "; ".join(FAILURES)))
        sys.exit(1)
    print("SDK cross-check passed")


if __name__ == "__main__":
    main()
