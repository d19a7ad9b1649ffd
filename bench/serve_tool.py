#!/usr/bin/env python3
"""Helpers of bench/serve_bench.sh (the standard library only).

  serve_tool.py body CSV ROW OUT             one row of a CSV (label last) as a v2 request [1, F]
  serve_tool.py body-const FEATURES OUT      a request [1, FEATURES] of 1, 2, 3, ...
  serve_tool.py check TERN_URL PEER_URL MODEL CSV ROWS
                                             the same rows to both servers (one by one and as one
                                             batch); exit 1 unless every output agrees within 1e-4
  serve_tool.py metrics URL MODEL            tern-serve's counters of MODEL version 1, as JSON
  serve_tool.py mdelta BEFORE AFTER          the change of those counters, as key=value
  serve_tool.py cpu PID                      CPU seconds (user + system) of PID and its children
  serve_tool.py wrkline FILE                 the WRK summary line of a wrk output, as key=value
  serve_tool.py report RESULTS               the summary lines, from the key=value result lines
"""
import json
import os
import re
import sys
import urllib.request


def csv_rows(path, n):
    rows = []
    with open(path) as f:
        for line in f:
            vals = line.strip().split(",")
            try:
                rows.append([float(v) for v in vals[:-1]])
            except ValueError:
                continue  # a header
            if len(rows) >= n:
                break
    return rows


def request(rows):
    return {"inputs": [{"name": "input", "datatype": "FP32", "shape": [len(rows), len(rows[0])],
                        "data": [v for r in rows for v in r]}]}


def post(url, model, body):
    req = urllib.request.Request(f"{url}/v2/models/{model}/infer", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200, r.status
        out = json.loads(r.read())
    o = out["outputs"][0]
    return o["shape"], o["data"]


def check(tern, peer, model, csv, n):
    rows = csv_rows(csv, n)
    worst = 0.0
    cases = [[r] for r in rows] + [rows]
    for case in cases:
        (ts, td), (ps, pd) = post(tern, model, request(case)), post(peer, model, request(case))
        if ts != ps or len(td) != len(pd):
            print(f"check: shapes differ: tern-serve {ts}, peer {ps}")
            return 1
        worst = max(worst, max(abs(a - b) for a, b in zip(td, pd)))
    ok = worst <= 1e-4
    print(f"outputs of tern-serve and the peer on {n} rows (one by one and as one batch of {n}): "
          f"max |difference| {worst:.2e} ({'OK' if ok else 'MISMATCH'}, limit 1e-4)")
    return 0 if ok else 1


def metrics(url, model):
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as r:
        text = r.read().decode()
    want = f'{{model="{model}",version="1"}}'
    out = {}
    for line in text.splitlines():
        m = re.match(r'(nv_[a-z_]+)(\{[^}]*\}) (\S+)$', line)
        if m and m[2] == want:
            out[m[1]] = float(m[3])
    return out


def cpu(pid):
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = open(f"/proc/{d}/stat").read()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            kids.setdefault(ppid, []).append(int(d))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])  # utime, stime (fields 14, 15)
        except OSError:
            pass
        todo += kids.get(p, [])
    return total / os.sysconf("SC_CLK_TCK")


def wrkline(path):
    for line in open(path):
        if line.startswith("WRK "):
            return line[4:].strip()
    return "missing=1"


def parse(path):
    runs = {}
    for line in open(path):
        kv = dict(x.split("=", 1) for x in line.split())
        runs[kv["run"]] = kv
    return runs


def fig(r):
    req_s = int(r["requests"]) / (int(r["duration_us"]) / 1e6)
    return req_s, int(r["p50_us"]) / 1000, int(r["p99_us"]) / 1000


def report(path):
    runs = parse(path)
    bad = []
    for name, r in runs.items():
        errs = sum(int(r.get(k, 0)) for k in ("non2xx", "connect", "read", "write", "timeout"))
        if errs or "missing" in r:
            bad.append(f"{name}: non-2xx {r.get('non2xx')}, socket errors connect {r.get('connect')}"
                       f" read {r.get('read')} write {r.get('write')} timeout {r.get('timeout')}")
    print("== summary (load generator and servers share the same 2 cores)")
    print("all responses 200: " + ("yes (wrk: no non-2xx, no socket errors)" if not bad else
                                   "NO: " + "; ".join(bad)))
    for c in (1, 16, 64):
        t, p = runs.get(f"tern_c{c}"), runs.get(f"peer_c{c}")
        if not t or not p:
            continue
        tr, t50, t99 = fig(t)
        pr, p50, p99 = fig(p)
        print(f"concurrency {c}: tern-serve {tr:.0f} req/s p50 {t50:.2f} ms p99 {t99:.2f} ms; "
              f"fastapi {pr:.0f} req/s p50 {p50:.2f} ms p99 {p99:.2f} ms; "
              f"throughput ratio {tr / pr:.1f}x (goal >= 10x)")
    for c in (1, 16, 64):
        t, p = runs.get(f"tern_c{c}"), runs.get(f"peer_c{c}")
        if t and p:
            tc = float(t["cpu_server"]) / int(t["requests"]) * 1e6
            pc = float(p["cpu_server"]) / int(p["requests"]) * 1e6
            tw = float(t["cpu_wrk"]) / int(t["requests"]) * 1e6
            pw = float(p["cpu_wrk"]) / int(p["requests"]) * 1e6
            print(f"CPU per request at concurrency {c}: tern-serve {tc:.0f} us (wrk {tw:.0f} us); "
                  f"fastapi {pc:.0f} us (wrk {pw:.0f} us)")
    if "tern_c16" in runs:
        _, _, t99 = fig(runs["tern_c16"])
        print(f"p99 at concurrency 16: {t99:.2f} ms (goal < 2 ms)")
    t = runs.get("triv_c1")
    if t:
        _, t50, t99 = fig(t)
        ovh = float(t["dur_us"]) / float(t["success"])
        # The goal is judged on the client's figure: the in-server counter starts once the whole
        # request has been read and stops before the answer is written, so it leaves out socket
        # I/O, the kernel's TCP on loopback and the time a request waits for an I/O thread.
        print(f"server overhead (trivial model, concurrency 1), client side (wrk): p50 "
              f"{t50 * 1000:.0f} us, p99 {t99 * 1000:.0f} us per request, end to end on loopback "
              f"(goal p50 < 100 us: {'met' if t50 * 1000 < 100 else 'NOT met'}); in-server "
              f"{ovh:.1f} us (nv_inference_request_duration_us / nv_inference_request_success over "
              f"{int(float(t['success']))} requests, read-to-answer without socket I/O: queue "
              f"{float(t['queue_us']) / float(t['success']):.1f} us, compute "
              f"{float(t['compute_us']) / float(t['success']):.1f} us)")
    for name, label in (("batch_off_c64", "max_batch_size=1 (batching off)"),
                        ("tern_c64", "max_batch_size=64, max_queue_delay_microseconds=0"),
                        ("batch_on_c64", f"max_batch_size=64, max_queue_delay_microseconds="
                                         f"{runs.get('batch_on_c64', {}).get('delay', '?')}")):
        r = runs.get(name)
        if r:
            rs, r50, r99 = fig(r)
            mean_batch = (float(r["rows"]) / float(r["execs"])) if float(r.get("execs", 0)) else 0
            print(f"dynamic batching, digits, concurrency 64, {label}: {rs:.0f} req/s p50 "
                  f"{r50:.2f} ms p99 {r99:.2f} ms (mean batch {mean_batch:.1f} rows)")
    off, on = runs.get("batch_off_c64"), runs.get("batch_on_c64")
    if off and on:
        print(f"dynamic batching gain at concurrency 64: throughput "
              f"{fig(on)[0] / fig(off)[0]:.2f}x, p99 {fig(off)[2]:.2f} -> {fig(on)[2]:.2f} ms")


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "body":
        row = csv_rows(args[0], int(args[1]) + 1)[int(args[1])]
        json.dump(request([row]), open(args[2], "w"))
    elif cmd == "body-const":
        json.dump(request([[float(i + 1) for i in range(int(args[0]))]]), open(args[1], "w"))
    elif cmd == "check":
        sys.exit(check(args[0], args[1], args[2], args[3], int(args[4])))
    elif cmd == "metrics":
        print(json.dumps(metrics(args[0], args[1])))
    elif cmd == "mdelta":
        a, b = json.load(open(args[0])), json.load(open(args[1]))
        d = {k: b.get(k, 0) - a.get(k, 0) for k in b}
        comp = sum(d.get(f"nv_inference_compute_{k}_duration_us", 0)
                   for k in ("input", "infer", "output"))
        print(f"success={d['nv_inference_request_success']:.0f} "
              f"dur_us={d['nv_inference_request_duration_us']:.0f} "
              f"queue_us={d['nv_inference_queue_duration_us']:.0f} compute_us={comp:.0f} "
              f"rows={d['nv_inference_count']:.0f} execs={d['nv_inference_exec_count']:.0f}")
    elif cmd == "cpu":
        print(f"{cpu(int(args[0])):.2f}")
    elif cmd == "wrkline":
        print(wrkline(args[0]))
    elif cmd == "report":
        report(args[0])
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
