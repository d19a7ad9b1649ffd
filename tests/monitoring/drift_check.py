"""Drives tern-serve's monitoring for tests/monitoring/monitoring.sh and checks it against
independent computations: numpy's binning, scipy's distances and Evidently's own drift tests.

  send     URL MODEL DATA STATE [--shift F:D ...] [--scale F:K ...] [--prefix P]
           posts the validation rows (transformed), 4 per request with ids P-<n>; STATE keeps the
           rows sent and the classes the server answered
  check    URL MODEL EXPORT DATA STATE --drifted F,... | --none
           the server's drift window against the last rows in STATE: counts equal numpy's
           binning, scores equal numpy/scipy on those bins (and Evidently's tests on the raw
           values of categorical features) within 1e-6 relative, and exactly the named features
           drifted
  feedback URL MODEL DATA STATE
           posts the true labels of STATE's requests; the live-accuracy gauge must equal the
           accuracy of the answers on those rows
"""
import argparse
import json
import math
import sys
import urllib.request

import h5py
import numpy as np
from scipy.spatial import distance
from scipy.stats import wasserstein_distance

ROWS_PER_REQUEST = 4
failures = []


def check(ok, what):
    print(("ok: " if ok else "FAIL: ") + what)
    if not ok:
        failures.append(what)


def post(url, body):
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def get(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.read().decode()


def transformed(data, shifts, scales):
    with h5py.File(data) as f:
        x = f["val/x"][:].astype(np.float32)
        y = f["val/y"][:]
    for spec in shifts:
        col, delta = spec.split(":")
        x[:, int(col)] += np.float32(delta)
    for spec in scales:
        col, factor = spec.split(":")
        x[:, int(col)] *= np.float32(factor)
    return x, y


def send(a):
    x, y = transformed(a.data, a.shift, a.scale)
    answers, ids = [], []
    for start in range(0, len(x), ROWS_PER_REQUEST):
        rows = x[start:start + ROWS_PER_REQUEST]
        rid = f"{a.prefix}-{start}"
        body = {"id": rid, "inputs": [{"name": "input", "datatype": "FP32", "shape": list(rows.shape),
                                       "data": rows.flatten().tolist()}]}
        out = post(f"{a.url}/v2/models/{a.model}/infer", body)
        logits = np.array(out["outputs"][0]["data"], dtype=np.float32).reshape(len(rows), -1)
        answers.extend(int(k) for k in logits.argmax(axis=1))
        ids.append([rid, start, len(rows)])
    json.dump({"x": x.tolist(), "y": y.tolist(), "answers": answers, "ids": ids}, open(a.state, "w"))
    print(f"sent {len(x)} rows in {len(ids)} requests")


def reference_columns(export):
    with h5py.File(export) as f:
        return json.loads(f.attrs["reference_profile"])["inputs"]["columns"]


def numpy_bins(col, values):
    if col["kind"] == "categorical":
        cats = np.array(col["values"])
        idx = np.searchsorted(cats, values)
        hit = (idx < len(cats)) & (cats[np.minimum(idx, len(cats) - 1)] == values)
        return np.where(hit, idx, len(cats))
    return np.searchsorted(np.array(col["edges"]), values, side="right")


def evidently_fill(p):
    smallest = p[p > 0].min()
    p = p.copy()
    p[p == 0] = smallest / 1e6 if smallest <= 1e-4 else 1e-4
    return p


def close(a, b):
    return abs(a - b) <= 1e-6 * max(abs(a), abs(b), 1e-12) or abs(a - b) < 1e-12


def check_window(a):
    state = json.load(open(a.state))
    report = json.loads(get(f"{a.url}/v2/models/{a.model}/drift"))
    cols = reference_columns(a.export)
    n = report["window_rows"]
    window = np.array(state["x"], dtype=np.float32)[-n:]
    check(n >= 100 and len(window) == n, f"the window holds {n} rows, all from the last send")
    with h5py.File(a.data) as f:
        train = f["train/x"][:].astype(np.float32)
    try:
        import pandas as pd
        from evidently.legacy.calculations.stattests.jensenshannon import _jensenshannon
        from evidently.legacy.calculations.stattests.psi import _psi
        from evidently.legacy.calculations.stattests.wasserstein_distance_norm import \
            _wasserstein_distance_norm
        from evidently.legacy.core import ColumnType
    except ImportError as e:
        check(False, f"Evidently imports: {e}")
        return
    bad_counts, bad_scores, evidently_checked, bad_evidently = [], [], 0, []
    for c, (col, got) in enumerate(zip(cols, report["inputs"])):
        values = window[:, c].astype(np.float64)
        counts = np.bincount(numpy_bins(col, values), minlength=len(col["counts"]))
        if not np.array_equal(counts, np.array(got["counts"])):
            bad_counts.append(col["name"])
        p = np.array(col["counts"]) / np.sum(col["counts"])
        q = counts / counts.sum()
        psi = float(np.sum((evidently_fill(p) - evidently_fill(q)) * np.log(evidently_fill(p) / evidently_fill(q))))
        js = float(distance.jensenshannon(p, q))
        sums = np.array(got["sums"])
        positions = np.where(counts > 0, sums / np.maximum(counts, 1), np.array(col["bin_means"]))
        w1 = wasserstein_distance(col["bin_means"], positions, p, q) / max(col["std"], 0.001)
        for name, mine, theirs in (("psi", got["psi"], psi), ("jensen_shannon", got["jensen_shannon"], js),
                                   ("wasserstein", got["wasserstein"], w1)):
            if not close(mine, theirs):
                bad_scores.append(f"{col['name']} {name} {mine} != {theirs}")
        # Evidently bins categorical values by value: the same inputs when every window value is
        # one of the reference's categories.
        if col["kind"] == "categorical" and counts[-1] == 0:
            ref_s, cur_s = pd.Series(train[:, c].astype(np.float64)), pd.Series(values)
            e_psi = _psi(ref_s, cur_s, ColumnType.Categorical, 0.2)[0]
            e_js = _jensenshannon(ref_s, cur_s, ColumnType.Categorical, 0.1)[0]
            e_w1 = _wasserstein_distance_norm(ref_s, cur_s, ColumnType.Numerical, 0.1)[0]
            evidently_checked += 1
            for name, mine, theirs in (("psi", got["psi"], e_psi), ("jensen_shannon", got["jensen_shannon"], e_js),
                                       ("wasserstein", got["wasserstein"], e_w1)):
                if not close(mine, float(theirs)):
                    bad_evidently.append(f"{col['name']} {name} {mine} != Evidently {theirs}")
    check(not bad_counts, f"window counts of {len(cols)} features equal numpy's binning {bad_counts[:5]}")
    check(not bad_scores, f"PSI, Jensen-Shannon, Wasserstein equal numpy/scipy within 1e-6 {bad_scores[:5]}")
    check(evidently_checked > 0 and not bad_evidently,
          f"{evidently_checked} categorical features equal Evidently's psi, jensenshannon, "
          f"wasserstein within 1e-6 {bad_evidently[:5]}")
    drifted = sorted(g["name"] for g in report["inputs"] if g["drifted"])
    want = sorted(a.drifted.split(",")) if a.drifted else []
    worst = max((g["score"] for g in report["inputs"] if not g["drifted"]), default=0)
    check(drifted == want, f"drifted features {drifted}, expected {want} (largest score of the rest {worst:.4f})")
    share = len(want) / len(cols)
    check(close(report["drifted_share"], share), f"drifted share {report['drifted_share']} = {share}")


def feedback(a):
    state = json.load(open(a.state))
    y = state["y"]
    items = [{"id": rid, "labels": y[start:start + n]} for rid, start, n in state["ids"]]
    result = post(f"{a.url}/v2/models/{a.model}/feedback", {"feedback": items})
    check(result["matched"] == len(items) and result["unmatched"] == 0,
          f"feedback for {len(items)} requests joined: {result}")
    again = post(f"{a.url}/v2/models/{a.model}/feedback", {"id": items[0]["id"], "labels": items[0]["labels"]})
    check(again["unmatched"] == 1, f"feedback given twice counts as unmatched: {again}")
    offline = float(np.mean(np.array(state["answers"]) == np.array(y)))
    metrics = get(f"{a.url}/metrics")
    live = [float(line.split()[-1]) for line in metrics.splitlines()
            if line.startswith("tern_live_accuracy{") and f'model="{a.model}"' in line]
    check(len(live) == 1 and close(live[0], offline),
          f"tern_live_accuracy {live} equals the offline accuracy {offline:.6f} of the same rows")


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("send")
    for name in ("url", "model", "data", "state"):
        s.add_argument(name)
    s.add_argument("--shift", action="append", default=[])
    s.add_argument("--scale", action="append", default=[])
    s.add_argument("--prefix", default="r")
    c = sub.add_parser("check")
    for name in ("url", "model", "export", "data", "state"):
        c.add_argument(name)
    c.add_argument("--drifted", default="")
    c.add_argument("--none", action="store_true")
    f = sub.add_parser("feedback")
    for name in ("url", "model", "data", "state"):
        f.add_argument(name)
    a = p.parse_args()
    {"send": send, "check": check_window, "feedback": feedback}[a.cmd](a)
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
