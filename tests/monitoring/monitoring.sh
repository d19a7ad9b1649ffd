#!/usr/bin/env bash
# Watching a served model, end to end with the real components: the digits model trained on 1 and
# on 2 ranks carries the same reference distributions; tern-serve checks inputs under each range
# policy, measures drift over a window (checked against numpy, scipy and Evidently), joins
# feedback into live accuracy and logs requests; Debian's Prometheus scrapes it with
# docker/prometheus/alerts.yml, the drift alert fires and reaches Debian's Alertmanager (a webhook
# records it), and every panel of docs/grafana's dashboard returns data; tern-data validate and
# import-log on good and broken files.
source "$(dirname "$0")/../e2e/lib.sh"
source "$(dirname "$0")/prom_lib.sh"
[ -n "${TERN_TEST_PYTHON:-}" ] || missing_component "TERN_TEST_PYTHON is not set (launch/test.sh sets it up)"
"$TERN_TEST_PYTHON" -c 'import scipy, evidently.legacy.calculations.stattests.psi' 2>/dev/null ||
  missing_component "scipy and evidently in the test Python (launch/common.sh installs them)"
find_prom_tools || missing_component "prometheus, promtool, prometheus-alertmanager (Debian packages)"
py() { "$TERN_TEST_PYTHON" "$@"; }

data="$WORK/digits.h5"
"$TERN_BIN/tern-data" convert --input data/digits.csv --output "$data" >/dev/null

# The reference is computed over the whole training split: the same for any number of ranks.
"$TERN_BIN/tern-train" --config configs/digits_mlp.ini --data.path="$data" --run.dir="$WORK/one" \
  --checkpoint.uri="$WORK/one/store" >"$WORK/one.log" 2>&1 || fail "training on 1 rank: $(tail -3 "$WORK/one.log")"
launch 2 "$TERN_BIN/tern-train" --config configs/digits_mlp.ini --data.path="$data" --run.dir="$WORK/two" \
  --checkpoint.uri="$WORK/two/store" >"$WORK/two.log" 2>&1 || fail "training on 2 ranks: $(tail -3 "$WORK/two.log")"
export_ref() {
  py -c 'import h5py, json, sys; print(json.dumps(json.loads(h5py.File(sys.argv[1]).attrs["reference_profile"])[sys.argv[2]], sort_keys=True))' "$@"
}
[ "$(export_ref "$WORK/one/model.h5" inputs)" = "$(export_ref "$WORK/two/model.h5" inputs)" ] &&
  pass "the input reference of the 1-rank and the 2-rank export are identical" ||
  fail "the input references of 1 and 2 ranks differ"
export_ref "$WORK/one/model.h5" predictions | grep -q '"predicted_class"' &&
  pass "the export carries the distribution of its predictions on the validation split" ||
  fail "no prediction reference in the export"
model="$WORK/one/model.h5"

# One model per range policy; "digits" watches drift over 300 rows and logs its requests.
for m in digits strict lenient; do mkdir -p "$WORK/repo/$m/1" && cp "$model" "$WORK/repo/$m/1/"; done
cat >"$WORK/repo/digits/config.ini" <<EOF
[drift]
window_rows = 300
[feedback]
window = 1000
[request_log]
path = $WORK/requests.jsonl
EOF
printf '[input_checks]\nrange = reject\n' >"$WORK/repo/strict/config.ini"
# An export from before reference profiles: it serves, and says what monitoring lacks.
mkdir -p "$WORK/repo/old/1" && cp "$model" "$WORK/repo/old/1/"
py -c 'import h5py, sys; f = h5py.File(sys.argv[1], "a"); del f.attrs["reference_profile"]' "$WORK/repo/old/1/model.h5"
printf '[input_checks]\nrange = off\n' >"$WORK/repo/lenient/config.ini"
serve_repo "$WORK/repo"
trap 'stop_monitoring; kill $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true; rm -rf "$WORK"' EXIT

# Input checks: row 1, feature 5 (trained on 0..16) at 100; and values no policy lets through.
row() { python3 -c "import sys; v=['0']*64; v[int(sys.argv[1])]=sys.argv[2]; print(','.join(v))" "$@"; }
infer_body() { echo "{\"inputs\":[{\"name\":\"input\",\"datatype\":\"FP32\",\"shape\":[2,64],\"data\":[$(row 0 0),$1]}]}"; }
expect_http() {  # expect_http CODE PATTERN MODEL BODY
  local out code
  out=$(curl -s -w '\n%{http_code}' "$URL/v2/models/$3/infer" -d "$4")
  code=${out##*$'\n'}
  if [ "$code" = "$1" ] && grep -qF -- "$2" <<<"$out"; then pass "$3: $1, '$2'"; else fail "$3: got $code $out, expected $1 '$2'"; fi
}
expect_http 400 "row 1, feature 5 ('f5'): value 100 is outside the training range" strict "$(infer_body "$(row 5 100)")"
expect_http 200 '"model_name":"digits"' digits "$(infer_body "$(row 5 100)")"
expect_http 200 '"model_name":"lenient"' lenient "$(infer_body "$(row 5 100)")"
for m in digits strict lenient; do
  expect_http 400 "row 1, feature 3 ('f3'): a value beyond +-3.40282e+38 is not representable as FP32" "$m" "$(infer_body "$(row 3 1e39)")"
done
nan_body="$WORK/nan.bin"
py -c 'import json, struct, sys
head = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "parameters": {"binary_data_size": 256}}]}).encode()
vals = [0.0] * 64; vals[7] = float("nan")
open(sys.argv[1], "wb").write(head + struct.pack("<64f", *vals)); print(len(head))' "$nan_body" >"$WORK/nan.len"
for m in digits strict lenient; do
  out=$(curl -s -w ' %{http_code}' "$URL/v2/models/$m/infer" -H "Inference-Header-Content-Length: $(cat "$WORK/nan.len")" --data-binary @"$nan_body")
  grep -q "row 0, feature 7 ('f7'): value NaN is not a finite number.* 400$" <<<"$out" &&
    pass "$m: NaN in binary data -> 400 naming row 0, feature 7" || fail "$m: NaN answered $out"
done
metrics=$(curl -s "$URL/metrics")
grep -q '^tern_input_out_of_range_total{model="digits",version="1",feature="f5"} 1$' <<<"$metrics" &&
  pass "flag: the out-of-range value was served and counted for feature f5" || fail "no flag count: $(grep out_of_range_total <<<"$metrics" | grep -v ' 0$')"
grep -q '^tern_input_rejected_total{model="strict",version="1",reason="out_of_range"} 1$' <<<"$metrics" &&
  grep -q '^tern_input_rejected_total{model="digits",version="1",reason="not_representable"} 1$' <<<"$metrics" &&
  grep -q '^tern_input_rejected_total{model="lenient",version="1",reason="non_finite"} 1$' <<<"$metrics" &&
  pass "rejections counted by reason" || fail "rejection counts: $(grep input_rejected <<<"$metrics")"
! grep -q 'tern_input_out_of_range_total{model="lenient"' <<<"$metrics" && pass "off: no range counting" ||
  fail "range counted under range = off"
expect_http 200 '"model_name":"strict"' strict "$(infer_body "$(row 5 3)")"
expect_http 200 '"model_name":"old"' old "$(infer_body "$(row 5 100)")"
metrics=$(curl -s "$URL/metrics")
grep -q '^tern_drift_reference_available{model="old",version="1",part="inputs"} 0$' <<<"$metrics" &&
  grep -q '^tern_input_out_of_range_total{model="old",version="1",feature="f5"} 1$' <<<"$metrics" &&
  grep -q "model 'old' version 1: the export carries no reference distribution of its inputs" "$WORK/serve.log" &&
  pass "an export without reference profiles serves, its range checks work, and it says drift is not measured" ||
  fail "old export: $(grep 'model="old"' <<<"$metrics" | grep -v ' 0$' | head -5)"

# Drift: the validation rows drift nowhere; then the same rows with f20 shifted by 6 and f43
# scaled by 3: exactly those two cross the threshold within one window.
check_py() { local what=$1; shift; if py tests/monitoring/drift_check.py "$@" >"$WORK/py.log" 2>&1; then pass "$what: $(grep -c '^ok' "$WORK/py.log") checks"; else fail "$what: $(cat "$WORK/py.log")"; fi; cat "$WORK/py.log"; }
py tests/monitoring/drift_check.py send "$URL" digits "$data" "$WORK/val.json" --prefix val >/dev/null || fail "sending the validation rows"
check_py "validation rows: no feature drifted" check "$URL" digits "$model" "$data" "$WORK/val.json" --none
check_py "live accuracy" feedback "$URL" digits "$data" "$WORK/val.json"

PROM=$(prom_free_port) AM=$(prom_free_port) HOOK=$(prom_free_port)
start_alert_webhook "$HOOK" "$WORK/webhook.jsonl" || fail "webhook receiver did not start"
start_alertmanager "$AM" "$HOOK" "$WORK/am" || fail "alertmanager did not start"
start_prometheus "$PROM" "${URL#http://}" "$WORK/prom" "$AM" || fail "prometheus did not start"
wait_prom_scraped "$PROM" 30 || fail "prometheus did not scrape tern-serve"
[ "$(prom_query "$PROM" 'tern_dataset_drift' | py -c 'import json,sys; print(json.load(sys.stdin)["data"]["result"][0]["value"][1])')" = 0 ] &&
  pass "Prometheus sees no data set drift after the validation rows" || fail "data set drift before any shift"

py tests/monitoring/drift_check.py send "$URL" digits "$data" "$WORK/shifted.json" --prefix shifted \
  --shift 20:6 --scale 43:3 >/dev/null || fail "sending the shifted rows"
check_py "shifted rows: exactly f20 and f43 drifted" check "$URL" digits "$model" "$data" "$WORK/shifted.json" --drifted f20,f43
wait_alert_firing "$PROM" TernFeatureDrift 60 && pass "TernFeatureDrift is firing in Prometheus" ||
  fail "TernFeatureDrift did not fire: $(curl -s "127.0.0.1:$PROM/api/v1/alerts")"
wait_webhook_alert "$WORK/webhook.jsonl" TernFeatureDrift 60 && pass "Alertmanager delivered TernFeatureDrift to the webhook" ||
  fail "no TernFeatureDrift at the webhook: $(cat "$WORK/webhook.jsonl" 2>/dev/null | head -c 400)"
firing=$(curl -s "127.0.0.1:$PROM/api/v1/alerts" | py -c 'import json,sys; print(sorted({a["labels"]["feature"] for a in json.load(sys.stdin)["data"]["alerts"] if a["labels"]["alertname"]=="TernFeatureDrift"}))')
[ "$firing" = "['f20', 'f43']" ] && pass "the drift alerts name f20 and f43" || fail "drift alerts for $firing"
check_dashboard_queries "$PROM" docker/grafana/tern-serving.json >"$WORK/dash.log" 2>&1 &&
  pass "every dashboard query returns data: $(tail -1 "$WORK/dash.log")" || fail "dashboard: $(cat "$WORK/dash.log")"

# The request log back into a data set: the rows that got feedback, with their true labels.
"$TERN_BIN/tern-data" import-log --input "$WORK/requests.jsonl" --model digits --output "$WORK/live.h5" >"$WORK/import.log" 2>&1 &&
  grep -q "labelled (feedback)" "$WORK/import.log" && pass "import-log: $(cat "$WORK/import.log")" || fail "import-log: $(cat "$WORK/import.log")"
py -c 'import h5py, sys
live, val = h5py.File(sys.argv[1]), h5py.File(sys.argv[2])
same_x = sorted(map(tuple, live["train/x"][:].tolist())) == sorted(map(tuple, val["val/x"][:].tolist()))
same_y = sorted(live["train/y"][:].tolist()) == sorted(val["val/y"][:].tolist())
sys.exit(0 if same_x and same_y else 1)' "$WORK/live.h5" "$data" &&
  pass "the imported rows and labels are the validation rows that were labelled" || fail "imported rows differ from the labelled ones"

# tern-data validate: the training data passes; each broken file fails naming what and where.
expect_exit 0 "all checks passed" "$TERN_BIN/tern-data" validate --reference "$model" "$data"
expect_exit 0 "all checks passed" "$TERN_BIN/tern-data" validate --reference "$data" "$WORK/live.h5" --json "$WORK/report.json"
py -c 'import json,sys; r=json.load(open(sys.argv[1])); sys.exit(0 if r["passed"] and r["splits"]["train"]["features"][5]["name"]=="f5" else 1)' "$WORK/report.json" &&
  pass "the JSON report holds every feature" || fail "JSON report: $(head -c 300 "$WORK/report.json")"
py - "$data" "$WORK" <<'EOF'
import h5py, numpy as np, sys
src, out = sys.argv[1], sys.argv[2]
with h5py.File(src) as f:
    x, y = f["train/x"][:], f["train/y"][:]
def write(name, x=x, y=y, drop=None):
    with h5py.File(f"{out}/{name}.h5", "w") as g:
        if drop != "x": g["train/x"] = x
        g["train/y"] = y
shifted = x.copy(); shifted[:, 30] += 5; write("shifted", shifted)
write("missing", drop="x")
write("ints", x.astype(np.int64))
nans = x.copy(); nans[17, 12] = np.nan; nans[99, 12] = np.nan; write("nans", nans)
EOF
expect_exit 1 "drift: $WORK/shifted.h5 /train/x: 1 of 64 feature(s) drifted: f30" "$TERN_BIN/tern-data" validate --reference "$model" "$WORK/shifted.h5"
expect_exit 1 "schema: $WORK/missing.h5 /train/x: the dataset is missing" "$TERN_BIN/tern-data" validate --reference "$model" "$WORK/missing.h5"
expect_exit 1 "schema: $WORK/ints.h5 /train/x: dtype int64, the reference has float32" "$TERN_BIN/tern-data" validate --reference "$model" "$WORK/ints.h5"
expect_exit 1 "missing: $WORK/nans.h5 /train/x feature 12 ('f12'): 2 NaN" "$TERN_BIN/tern-data" validate --reference "$model" "$WORK/nans.h5"
expect_exit 2 "is missing or is not an HDF5 file" "$TERN_BIN/tern-data" validate --reference "$model" "$WORK/absent.h5"
curl -sf "$URL/v2/health/ready" >/dev/null && pass "the server still serves" || fail "the server stopped answering"
finish
