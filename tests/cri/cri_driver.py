#!/usr/bin/env python3
"""A CRI client driven over stdin/stdout, as the end-to-end suite's kubelet.

Speaks the CRI v1 gRPC API to a containerd socket with the generated stubs of
PyPI's `container-runtime-interface-api` (`cri_api.v1`), the way kubelet calls
it. The Rust suite (`tests/src/cri.rs`) writes one JSON request per line:

    {"id": 7, "method": "RunPodSandbox", "request": {...}, "timeout": 120}

`request` is the CRI message in protobuf's JSON mapping (field names as in the
.proto or camelCase). Each request runs in its own thread, so calls overlap as
kubelet's do. One line answers each request, in completion order:

    {"id": 7, "ok": {...response...}, "elapsed_ms": 123.4}
    {"id": 7, "error": {"code": "UNKNOWN", "details": "..."}, "elapsed_ms": 5.1}

`elapsed_ms` is the gRPC call alone (the client's own start-up is not in it).
EOF on stdin ends the driver once every call answered.
"""

import argparse
import json
import sys
import threading
import time

import grpc
from google.protobuf import json_format
from cri_api.v1 import api_pb2, api_pb2_grpc

# The image service's methods; every other method is the runtime service's.
IMAGE_METHODS = {"ListImages", "ImageStatus", "PullImage", "RemoveImage", "ImageFsInfo"}


def to_dict(message):
    """The message as JSON, zero values included (a READY state is 0)."""
    try:
        return json_format.MessageToDict(
            message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
    except TypeError:  # protobuf < 5
        return json_format.MessageToDict(
            message, preserving_proto_field_name=True, including_default_value_fields=True
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True, help="the runtime's CRI socket")
    args = parser.parse_args()

    channel = grpc.insecure_channel(
        "unix://" + args.socket,
        options=[("grpc.max_receive_message_length", 16 << 20)],
    )
    runtime = api_pb2_grpc.RuntimeServiceStub(channel)
    images = api_pb2_grpc.ImageServiceStub(channel)
    out_lock = threading.Lock()

    def answer(obj):
        line = json.dumps(obj)
        with out_lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    def call(req):
        rid = req.get("id")
        method = req.get("method", "")
        started = time.perf_counter()
        try:
            stub = images if method in IMAGE_METHODS else runtime
            rpc = getattr(stub, method)
            request_type = getattr(api_pb2, method + "Request")
            message = json_format.ParseDict(req.get("request", {}), request_type())
            # Like kubelet, wait for a runtime that is restarting instead of failing fast.
            response = rpc(message, timeout=req.get("timeout", 120), wait_for_ready=True)
            elapsed = (time.perf_counter() - started) * 1000.0
            body = to_dict(response)
            answer({"id": rid, "ok": body, "elapsed_ms": elapsed})
        except grpc.RpcError as e:
            elapsed = (time.perf_counter() - started) * 1000.0
            answer(
                {
                    "id": rid,
                    "error": {"code": e.code().name, "details": e.details() or ""},
                    "elapsed_ms": elapsed,
                }
            )
        except Exception as e:  # a bad request from the suite: say so, keep serving
            answer({"id": rid, "error": {"code": "CLIENT", "details": repr(e)}, "elapsed_ms": 0.0})

    threads = []
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            req = json.loads(line)
        except ValueError as e:
            answer({"id": None, "error": {"code": "CLIENT", "details": "bad request line: %s" % e}})
            continue
        t = threading.Thread(target=call, args=(req,), daemon=True)
        t.start()
        threads.append(t)
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
