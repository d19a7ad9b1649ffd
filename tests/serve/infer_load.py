#!/usr/bin/env python3
"""Infer requests against tern-serve over keep-alive connections (the standard library only),
for tests/e2e/serve.sh.

  infer_load.py HOST:PORT MODEL OUT --count N
      N requests in sequence on one connection; OUT gets one line per request:
      "0 STATUS VERSION" (VERSION is the response's model_version, or "-").
  infer_load.py HOST:PORT MODEL OUT --threads T --stop-file F --max-seconds S
      T threads, each on its own connection, send requests until F exists or S seconds pass;
      OUT gets "THREAD STATUS VERSION" per request, flushed as it goes. A connection error is
      recorded as status "ERR" (then the thread reconnects).
Requests name no version. Exit 0 unless the arguments are wrong.
"""
import argparse
import http.client
import json
import os
import threading
import time

BODY = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4],
                               "data": [1, 2, 3, 4]}]}).encode()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("address")
    ap.add_argument("model")
    ap.add_argument("out")
    ap.add_argument("--count", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--stop-file", default="")
    ap.add_argument("--max-seconds", type=float, default=60)
    args = ap.parse_args()
    host, port = args.address.rsplit(":", 1)
    path = f"/v2/models/{args.model}/infer"
    deadline = time.monotonic() + args.max_seconds
    lock = threading.Lock()
    out = open(args.out, "w", buffering=1)

    def record(tid, status, version):
        with lock:
            out.write(f"{tid} {status} {version}\n")

    def worker(tid, count):
        conn = None
        sent = 0
        while time.monotonic() < deadline:
            if count and sent >= count:
                break
            if not count and args.stop_file and os.path.exists(args.stop_file):
                break
            sent += 1
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(host, int(port), timeout=30)
                conn.request("POST", path, BODY, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
                version = "-"
                if resp.status == 200:
                    version = json.loads(data).get("model_version", "-")
                record(tid, resp.status, version)
            except Exception as e:  # noqa: BLE001 - every failure is a result here
                record(tid, "ERR", type(e).__name__)
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    if args.count:
        worker(0, args.count)
    else:
        threads = [threading.Thread(target=worker, args=(t, 0)) for t in range(args.threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    out.close()


if __name__ == "__main__":
    main()
