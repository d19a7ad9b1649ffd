"""Safe releases against a running tern-serve, with real client loops on loopback.
Usage: release_check.py SCENARIO URL WORK TOKEN_FILE
Scenarios: canary, canary_restarted, shadow, fallback, overload, control. Each prints "ok: ..."
lines and raises (non-zero exit) on the first failed check. Every loop is bounded in time."""
import http.client
import json
import os
import sys
import threading
import time
import urllib.parse

scenario, url, work, token_file = sys.argv[1:5]
host = urllib.parse.urlparse(url)
TOKEN = open(token_file).read().strip()
ROW = [0.5, -1.0, 2.0, 0.25]


def ok(msg):
    print("ok: " + msg, flush=True)


def check(cond, msg):
    if not cond:
        raise SystemExit("FAIL: " + msg)
    ok(msg)


class Client:
    """One keep-alive connection."""

    def __init__(self):
        self.conn = http.client.HTTPConnection(host.hostname, host.port, timeout=30)

    def request(self, method, path, body=None, headers=None):
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        data = json.dumps(body) if isinstance(body, (dict, list)) else body
        for attempt in range(2):
            try:
                self.conn.request(method, path, body=data, headers=h)
                r = self.conn.getresponse()
                return r.status, dict(r.getheaders()), r.read().decode()
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = http.client.HTTPConnection(host.hostname, host.port, timeout=30)
                if attempt:
                    raise


def infer_body(rows=1, params=None):
    b = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [rows, 4], "data": ROW * rows}]}
    if params:
        b["parameters"] = params
    return b


def infer(client, model, version=None, params=None, headers=None):
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
    t = time.monotonic()
    status, hdrs, text = client.request("POST", path, infer_body(params=params), headers)
    return status, hdrs, text, time.monotonic() - t


def get_json(path, headers=None):
    status, _, text = Client().request("GET", path, headers=headers)
    assert status == 200, (path, status, text)
    return json.loads(text)


def admin(path, body=None, token=TOKEN):
    h = {"Authorization": "Bearer " + token} if token is not None else {}
    return Client().request("POST", path, body if body is not None else {}, h)


def metric(text, name, **labels):
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
        if not labels and line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise KeyError(f"{name}{{{want}}} not in /metrics")


def metrics():
    return Client().request("GET", "/metrics")[2]


def loop(models, seconds, concurrency, record, params=None, headers_of=None, pace=0.0):
    """Clients sending requests naming no version to `models` in turn for `seconds`; with
    `pace`, each client sends one request every `pace` seconds (an open loop at a fixed rate)."""
    stop = time.monotonic() + seconds

    def run(i):
        c = Client()
        n = 0
        next_at = time.monotonic()
        while time.monotonic() < stop:
            if pace:
                next_at += pace
                time.sleep(max(0.0, next_at - time.monotonic()))
            m = models[(i + n) % len(models)]
            h = headers_of(i, n) if headers_of else None
            record(m, *infer(c, m, params=params, headers=h))
            n += 1

    threads = [threading.Thread(target=run, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def decisions(model):
    path = os.path.join(work, "repo", ".tern-state", "rollout.jsonl")
    out = []
    for line in open(path):
        d = json.loads(line)
        if d["model"] == model:
            out.append(d)
    return out


def p99(xs):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(0.99 * len(xs)))]


if scenario == "canary":
    # canary_bad's version 2 fails 20% of its batches; canary_good's is healthy; canary_long
    # goes in 10 steps, to be caught half way by the restart. interval 1 s, threshold 3.
    seen = {}
    lock = threading.Lock()

    def record(model, status, hdrs, text, secs):
        body = json.loads(text) if text else {}
        v = body.get("model_version") or ("2" if "version 2" in body.get("error", "") else "1")
        with lock:
            seen.setdefault((model, v, status), 0)
            seen[(model, v, status)] += 1

    loop(["canary_bad", "canary_good", "canary_long"], 8.5, 4, record)
    count = lambda m, v, s=None: sum(n for (mm, vv, ss), n in seen.items()
                                     if mm == m and vv == v and (s is None or ss == s))
    for m in ("canary_bad", "canary_good", "canary_long"):
        check(count(m, "1") == count(m, "1", 200), f"{m}: the primary (version 1) failed none of its {count(m, '1')} requests")
    bad = decisions("canary_bad")
    kinds = [d["decision"] for d in bad]
    check("rollback" in kinds, f"canary_bad rolled back (decisions: {kinds})")
    start = next(d["time"] for d in bad if d["decision"] == "start")
    back = next(d["time"] for d in bad if d["decision"] == "rollback")
    # threshold x interval = 3 s, plus one tick (0.2 s) and the first interval's wait for data.
    check(back - start <= 3 * 1.0 + 0.6, f"rolled back {back - start:.2f} s after the start (threshold x interval = 3 s)")
    failed = sum(n for (m, v, s), n in seen.items() if m == "canary_bad" and s != 200)
    total = sum(n for (m, v, s), n in seen.items() if m == "canary_bad")
    # At weight 10% (checks fail, so it never advances), 20% of the canary's requests fail: 2%
    # of all, while the canary serves (about half of the loop).
    check(failed <= 0.10 * 0.2 * 1.6 * total and failed > 0,
          f"canary_bad: clients saw {failed} failures of {total} requests, within its weight (10%) x 20%")
    st = get_json("/v2/models/canary_bad/rollout")
    check(st["state"]["phase"] == "failed" and st["weights"] == {"1": 100.0}, f"canary_bad: phase failed, weights {st['weights']}")
    good = decisions("canary_good")
    kinds = [d["decision"] for d in good]
    check(kinds[:1] == ["initialize"] and kinds.count("advance") == 4 and kinds[-1] == "promote",
          f"canary_good: start, 4 advances, promote (decisions: {kinds})")
    t0 = next(d["time"] for d in good if d["decision"] == "start")
    t1 = next(d["time"] for d in good if d["decision"] == "promote")
    check(4.5 <= t1 - t0 <= 6.5, f"canary_good promoted {t1 - t0:.2f} s after the start (max_weight / step_weight = 5 intervals)")
    st = get_json("/v2/models/canary_good/rollout")
    check(st["state"]["primary"] == 2 and st["weights"] == {"2": 100.0}, f"canary_good: version 2 takes 100%: {st['weights']}")
    m = metrics()
    check(metric(m, "tern_rollout_state", model="canary_bad") == 3 and metric(m, "tern_rollout_state", model="canary_good") == 2,
          "tern_rollout_state: canary_bad 3 (failed), canary_good 2 (promoted)")
    long = get_json("/v2/models/canary_long/rollout")["state"]
    check(long["phase"] == "progressing" and long["weight"] >= 30, f"canary_long progressing at {long['weight']}%")
    json.dump(long, open(os.path.join(work, "long_before.json"), "w"))

elif scenario == "canary_restarted":
    before = json.load(open(os.path.join(work, "long_before.json")))
    st = {m: get_json(f"/v2/models/{m}/rollout") for m in ("canary_bad", "canary_good", "canary_long")}
    check(st["canary_bad"]["state"]["phase"] == "failed" and st["canary_bad"]["weights"] == {"1": 100.0},
          "after the restart canary_bad stays rolled back")
    check(st["canary_good"]["state"]["phase"] == "promoted" and st["canary_good"]["state"]["primary"] == 2,
          "after the restart canary_good's version 2 stays primary")
    check(st["canary_long"]["state"]["weight"] >= before["weight"],
          f"after the restart canary_long goes on from {before['weight']}% ({st['canary_long']['state']['weight']}%)")
    seen = {}

    def record(model, status, hdrs, text, secs):
        v = json.loads(text).get("model_version") if status == 200 else "error"
        seen[(model, v)] = seen.get((model, v), 0) + 1

    loop(["canary_bad", "canary_good"], 1.5, 2, record)
    check(not seen.get(("canary_bad", "2")) and seen.get(("canary_bad", "1")),
          f"canary_bad's version 2 takes no traffic: {seen}")
    check(seen.get(("canary_good", "2")) and not seen.get(("canary_good", "1")),
          "canary_good's traffic all goes to version 2")

elif scenario == "shadow":
    c = Client()
    want = json.loads(c.request("POST", "/v2/models/champ/versions/1/infer", infer_body())[2])["outputs"][0]["data"]
    fault = os.path.join(work, "fault-champ-2")

    def run(model, seconds=1.5):
        lat, answers = [], []

        def record(m, status, hdrs, text, secs):
            lat.append(secs)
            answers.append((status, json.loads(text)))

        # One client at a fixed rate the two cores carry with room to spare (500 requests/s):
        # what a shadow must not take from the primary is latency. One client thread, so the
        # test's own interpreter lock does not add its switch interval to the tail.
        loop([model], seconds, 1, record, pace=0.002)
        return lat, answers

    # Each mode against a run without shadow just before it, so both see the same machine.
    results = {}
    for mode, command in (("disagree", ""), ("crash", "fail = 1\n"), ("hang", "sleep_ms = 2000\n")):
        open(fault + ".tmp", "w").write(command)
        os.replace(fault + ".tmp", fault)
        # Three alternations, and the median of each side's p99s: one scheduling hiccup of the
        # machine moves one run's p99, not the median.
        p99s = {"plain": [], "champ": []}
        for _ in range(3):
            for model in ("plain", "champ"):
                lat, answers = run(model)
                bad = [a for a in answers if a[0] != 200 or a[1]["model_version"] != "1" or a[1]["outputs"][0]["data"] != want]
                if bad:
                    raise SystemExit(f"FAIL: {mode}, {model}: {len(bad)} answers not the primary's: {bad[:2]}")
                p99s[model].append(p99(lat))
        ok(f"{mode}: every answer came from the primary, unchanged")
        for model in p99s:
            results[(mode, model)] = sorted(p99s[model])[1]
        time.sleep(0.3)
    m = metrics()
    lbl = dict(model="champ", challenger="champ", challenger_version="2")
    check(metric(m, "tern_shadow_rows_compared_total", **lbl) > 100 and metric(m, "tern_shadow_agreement", **lbl) < 0.999 or
          metric(m, "tern_shadow_mean_abs_diff", **lbl) > 0,
          f"the challenger's disagreement shows: agreement {metric(m, 'tern_shadow_agreement', **lbl):.3f}, "
          f"mean |diff| {metric(m, 'tern_shadow_mean_abs_diff', **lbl):.4f}")
    check(metric(m, "tern_shadow_errors_total", **lbl) > 50, f"its crashes show: tern_shadow_errors_total {metric(m, 'tern_shadow_errors_total', **lbl):.0f}")
    check(metric(m, "tern_shadow_dropped_total", **lbl) > 50, f"its hang shows: tern_shadow_dropped_total {metric(m, 'tern_shadow_dropped_total', **lbl):.0f}")
    for mode in ("disagree", "crash", "hang"):
        base, shadowed = results[(mode, "plain")], results[(mode, "champ")]
        # 10%, and 1 ms for the scheduling noise of 2 shared cores at sub-millisecond latencies
        # (runs without a shadow alone range 0.7 to 1.3 ms). A primary that waited for its
        # challenger would show the hang's 2 s.
        check(shadowed <= 1.10 * base + 0.001,
              f"{mode}: the primary's p99 {shadowed * 1e3:.2f} ms (median of 3 runs) within 10% + 1 ms of {base * 1e3:.2f} ms without shadow")
    open(fault, "w").write("")
    status, _, text = admin("/v2/repository/models/champ/promote", {"version": "2"})
    check(status == 200, f"promote through the control API: {status} {text}")
    # Version 2 first works off the copies its hang left queued (429 meanwhile).
    c = Client()
    for _ in range(100):
        status, _, text, _ = infer(c, "champ")
        if status == 200:
            break
        time.sleep(0.1)
    check(status == 200 and json.loads(text)["model_version"] == "2", "after the promotion version 2 answers")

elif scenario == "fallback":
    fault = os.path.join(work, "fault-primary-1")
    c = Client()
    open(fault, "w").write("sleep_ms = 1000\n")
    params = {"timeout": 400000}  # 400 ms
    for i in range(6):
        status, hdrs, text, secs = infer(c, "primary", params=params)
        body = json.loads(text)
        check(status == 200 and body["model_name"] == "simple" and hdrs.get("X-Tern-Fallback") in ("deadline", "breaker") and secs < 0.4,
              f"request {i}: the fallback answered in {secs * 1e3:.0f} ms ({hdrs.get('X-Tern-Fallback')}) within the 400 ms deadline")
    check(metric(metrics(), "tern_breaker_state", model="primary", version="1") == 1, "the breaker opened after its threshold (4 slow calls)")
    status, hdrs, text, secs = infer(c, "primary", params=params)
    check(status == 200 and hdrs.get("X-Tern-Fallback") == "breaker" and secs < 0.05, f"open: the fallback answers at once ({secs * 1e3:.1f} ms)")
    open(fault + ".tmp", "w").write("")
    os.replace(fault + ".tmp", fault)
    time.sleep(2.5)  # open_seconds 2, and the hung calls end
    check(metric(metrics(), "tern_breaker_state", model="primary", version="1") == 2, "half-open after open_seconds")
    answered = []
    for i in range(4):
        status, hdrs, text, secs = infer(c, "primary", params=params)
        answered.append(json.loads(text)["model_name"])
    check(answered == ["primary"] * 4, f"the primary answers again: {answered}")
    check(metric(metrics(), "tern_breaker_state", model="primary", version="1") == 0, "closed again through half-open")
    m = metrics()
    check(metric(m, "tern_fallback_total", model="primary", version="1", reason="deadline") >= 4 and
          metric(m, "tern_fallback_total", model="primary", version="1", reason="breaker") >= 1, "fallback use counted by reason")
    # No fallback: a deadline is a 504 with a clear body, and the connection stays usable.
    open(os.path.join(work, "fault-lonely-1"), "w").write("sleep_ms = 500\n")
    status, hdrs, text, secs = infer(c, "lonely", params={"timeout": 100000})
    check(status == 504 and "deadline of 100 ms" in text and secs < 0.3, f"no fallback: 504 in {secs * 1e3:.0f} ms: {text}")
    status, _, _, _ = infer(c, "primary")
    check(status == 200, "the same connection serves the next request")

elif scenario == "overload":
    def rss():
        return metric(metrics(), "process_resident_memory_bytes")

    statuses, retry = {}, set()
    lock = threading.Lock()

    def record(m, status, hdrs, text, secs):
        with lock:
            statuses[status] = statuses.get(status, 0) + 1
            if status == 429:
                retry.add(hdrs.get("Retry-After"))

    loop(["tight"], 1.5, 32, record)  # warm-up: every buffer at its size
    before = rss()
    statuses.clear()
    prio = {1: [0, 0], 2: [0, 0]}

    def record_prio(m, status, hdrs, text, secs):
        record(m, status, hdrs, text, secs)

    def run_prio(p, seconds):
        stop = time.monotonic() + seconds
        c = Client()
        while time.monotonic() < stop:
            status, hdrs, text, secs = infer(c, "tight", params={"priority": p})
            with lock:
                prio[p][0] += 1
                prio[p][1] += status == 429
            record("tight", status, hdrs, text, secs)

    threads = [threading.Thread(target=run_prio, args=(1 + i % 2, 4.0)) for i in range(48)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = rss()
    check(set(statuses) <= {200, 429} and statuses.get(429, 0) > 100 and statuses.get(200, 0) > 50,
          f"overload: only 200 and 429 answers ({statuses})")
    check(retry == {"1"}, f"every 429 carries Retry-After ({retry})")
    check(after - before < 16 << 20, f"resident memory flat under overload: {before / 2**20:.1f} -> {after / 2**20:.1f} MiB")
    share = {p: prio[p][1] / max(prio[p][0], 1) for p in prio}
    check(share[1] < share[2], f"priority 1 is shed less than priority 2 ({share[1]:.2f} < {share[2]:.2f})")
    c = Client()
    codes = [infer(c, "tight")[0] for _ in range(20)]
    check(codes == [200] * 20, "full service once the load drops")

elif scenario == "control":
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException
    auth = {"Authorization": "Bearer " + TOKEN}
    status, hdrs, text = admin("/v2/repository/index", token=None)
    check(status == 401 and "Bearer" in hdrs.get("WWW-Authenticate", ""), f"index without a token: 401 ({text})")
    status, _, text = admin("/v2/repository/models/ctl/load", token="x" * 32)
    check(status == 403, f"load with a wrong token: 403 ({text})")
    status, _, text = admin("/v2/repository/models/ctl/unload", token=None)
    check(status == 401, "unload without a token: 401")
    client = httpclient.InferenceServerClient(url=f"{host.hostname}:{host.port}")
    index = client.get_model_repository_index(headers=auth)
    states = {(e["name"], e.get("version")): e.get("state") for e in index}
    check(states.get(("ctl", "1")) == "UNAVAILABLE" and states.get(("slowctl", "1")) == "READY",
          f"explicit mode: only --load-model's models loaded at startup ({states})")
    try:
        client.get_model_repository_index()
        raise SystemExit("FAIL: tritonclient's index without the token was answered")
    except InferenceServerException as e:
        check("Authorization" in str(e), "tritonclient without the token gets the 401's message")
    client.load_model("ctl", headers=auth)
    check(client.is_model_ready("ctl"), "tritonclient load_model: ctl is ready")
    client.load_model("ctl", headers=auth, config=json.dumps({"max_batch_size": 4}))
    check(client.get_model_config("ctl")["max_batch_size"] == 4, "load with a config in the body: max_batch_size 4")
    try:
        client.load_model("nosuch", headers=auth)
        raise SystemExit("FAIL: loading an unknown model succeeded")
    except InferenceServerException as e:
        check("nosuch" in str(e), f"load of an unknown model fails naming it: {e}")
    # Unload under load: requests in flight on the slow model (200 ms each) all finish.
    results = []

    def slow_request():
        results.append(infer(Client(), "slowctl")[0])

    threads = [threading.Thread(target=slow_request) for _ in range(6)]
    for t in threads:
        t.start()
    time.sleep(0.1)
    client.unload_model("slowctl", headers=auth)
    for t in threads:
        t.join()
    check(results == [200] * 6, f"unload under load: the requests in flight finished ({results})")
    status = infer(Client(), "slowctl")[0]
    check(status in (404, 503), f"after the unload the model is gone ({status})")
    check(not client.is_model_ready("slowctl"), "tritonclient: slowctl not ready")
    client.unload_model("ctl", headers=auth)
    index = {(e["name"], e.get("version")): e.get("state") for e in client.get_model_repository_index(headers=auth)}
    check(index.get(("ctl", "1")) == "UNAVAILABLE", "unloaded models stay in the index")
    bodies = [admin("/v2/repository/index", token=None)[2], admin("/v2/repository/models/ctl/load", token=TOKEN[:-1] + "x")[2], metrics()]
    check(all(TOKEN not in b for b in bodies), "the token is in no error body or metric")
else:
    raise SystemExit("unknown scenario " + scenario)
