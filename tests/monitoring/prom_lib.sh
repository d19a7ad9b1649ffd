# Prometheus, Alertmanager and an alert webhook on 127.0.0.1, for the monitoring tests. Source it.
#
#   source tests/monitoring/prom_lib.sh
#   find_prom_tools || missing_component "prometheus / prometheus-alertmanager (Debian packages)"
#   trap stop_monitoring EXIT
#   start_alert_webhook "$HOOK_PORT" "$DIR/webhook.jsonl"
#   start_alertmanager "$AM_PORT" "$HOOK_PORT" "$DIR"
#   start_prometheus "$PROM_PORT" 127.0.0.1:"$SERVE_PORT" "$DIR" "$AM_PORT"
#   wait_prom_scraped "$PROM_PORT" 30
#   wait_alert_firing "$PROM_PORT" TernFeatureDrift 60
#   wait_webhook_alert "$DIR/webhook.jsonl" TernFeatureDrift 30
#   check_dashboard_queries "$PROM_PORT" docker/grafana/tern-serving.json
#
# Call the start_* functions directly, not in $(...): they record the pids they start for
# stop_monitoring. Every wait is bounded; a start that does not come up returns 1 after printing
# the end of the process's log. Ports: prom_free_port prints one that is free now. HTTP and JSON
# go through the system python3 with its standard library only.

PROM_LIB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# The rules start_prometheus loads; another file may be given.
PROM_RULES_FILE=${PROM_RULES_FILE:-$PROM_LIB_ROOT/docker/prometheus/alerts.yml}
PROM_LIB_PIDS=()
if [ -x /usr/bin/python3 ]; then PROM_PYTHON=${PROM_PYTHON:-/usr/bin/python3}; else PROM_PYTHON=${PROM_PYTHON:-python3}; fi

# find_prom_tools: sets PROMETHEUS_BIN, PROMTOOL_BIN, ALERTMANAGER_BIN and AMTOOL_BIN (empty
# when missing) from the environment, PATH or Debian's paths. Debian's prometheus-alertmanager
# package names the binary prometheus-alertmanager; upstream's is alertmanager. Returns 1, naming
# them, when prometheus, promtool or alertmanager is missing (amtool is optional).
find_prom_tools() {
  _prom_which() {
    local name
    for name in "$@"; do
      if [ -x "$name" ]; then echo "$name"; return 0; fi
      command -v "$name" 2>/dev/null && return 0
      [ -x "/usr/bin/$name" ] && { echo "/usr/bin/$name"; return 0; }
    done
    return 1
  }
  PROMETHEUS_BIN=${PROMETHEUS_BIN:-$(_prom_which prometheus || true)}
  PROMTOOL_BIN=${PROMTOOL_BIN:-$(_prom_which promtool || true)}
  ALERTMANAGER_BIN=${ALERTMANAGER_BIN:-$(_prom_which prometheus-alertmanager alertmanager || true)}
  AMTOOL_BIN=${AMTOOL_BIN:-$(_prom_which amtool || true)}
  local missing=()
  [ -n "$PROMETHEUS_BIN" ] || missing+=(prometheus)
  [ -n "$PROMTOOL_BIN" ] || missing+=(promtool)
  [ -n "$ALERTMANAGER_BIN" ] || missing+=(prometheus-alertmanager)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "missing: ${missing[*]} (Debian packages prometheus, prometheus-alertmanager)" >&2
    return 1
  fi
}

# prom_free_port: a TCP port of 127.0.0.1 that is free now.
prom_free_port() {
  "$PROM_PYTHON" -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# _prom_port_taken PORT: true when something listens on 127.0.0.1:PORT already (a server started
# there would fail to bind while the readiness check reached the other one).
_prom_port_taken() {
  "$PROM_PYTHON" -c 'import socket, sys
s = socket.socket()
s.settimeout(1)
sys.exit(0 if s.connect_ex(("127.0.0.1", int(sys.argv[1]))) == 0 else 1)' "$1"
}

# _prom_wait_http URL TIMEOUT PID LOG: polls URL until it answers 2xx; 1 when PID exits or
# TIMEOUT seconds pass (the end of LOG is printed then).
_prom_wait_http() {
  local url=$1 timeout=$2 pid=$3 log=$4
  if "$PROM_PYTHON" - "$url" "$timeout" "$pid" <<'PY'; then return 0; fi
import os, sys, time, urllib.request
url, timeout, pid = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
deadline = time.monotonic() + timeout
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit(f"process {pid} exited before {url} answered")
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            if 200 <= r.status < 300:
                sys.exit(0)
    except Exception:
        pass
    time.sleep(0.2)
sys.exit(f"{url} did not answer within {timeout:g} s")
PY
  echo "--- end of $log:" >&2
  tail -20 "$log" >&2 2>/dev/null || true
  return 1
}

# start_alert_webhook PORT FILE: an HTTP server on 127.0.0.1:PORT that appends the body of each
# POST (Alertmanager's JSON) to FILE as one JSON line and answers 200.
start_alert_webhook() {
  local port=$1 file=$2
  if _prom_port_taken "$port"; then echo "127.0.0.1:$port is in use" >&2; return 1; fi
  : >>"$file"
  "$PROM_PYTHON" - "$port" "$file" >"$file.log" 2>&1 <<'PY' &
import http.server, json, sys
port, path = int(sys.argv[1]), sys.argv[2]

class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            line = json.dumps(json.loads(body), separators=(",", ":"))
        except ValueError:
            line = json.dumps({"unparsed": body.decode("utf-8", "replace")})
        with open(path, "a") as f:
            f.write(line + "\n")
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):  # readiness probe of the helpers
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, fmt, *args):
        sys.stderr.write("webhook: " + fmt % args + "\n")

http.server.ThreadingHTTPServer(("127.0.0.1", port), Hook).serve_forever()
PY
  local pid=$!
  PROM_LIB_PIDS+=("$pid")
  _prom_wait_http "http://127.0.0.1:$port/" 10 "$pid" "$file.log"
}

# write_alertmanager_config FILE WEBHOOK_PORT: everything to the webhook, at once.
write_alertmanager_config() {
  cat >"$1" <<EOF
route:
  receiver: webhook
  group_by: [alertname, model, version]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1m
receivers:
  - name: webhook
    webhook_configs:
      - url: http://127.0.0.1:$2/alerts
        send_resolved: true
EOF
}

# start_alertmanager PORT WEBHOOK_PORT DIR: Alertmanager on 127.0.0.1:PORT, clustering off, its
# config, data and log (alertmanager.log) in DIR; returns once /-/ready answers (30 s at most).
start_alertmanager() {
  local port=$1 hook_port=$2 dir=$3
  if _prom_port_taken "$port"; then echo "127.0.0.1:$port is in use" >&2; return 1; fi
  [ -n "${ALERTMANAGER_BIN:-}" ] || find_prom_tools || return 1
  mkdir -p "$dir/alertmanager-data"
  write_alertmanager_config "$dir/alertmanager.yml" "$hook_port"
  "$ALERTMANAGER_BIN" --config.file="$dir/alertmanager.yml" \
    --storage.path="$dir/alertmanager-data" \
    --web.listen-address="127.0.0.1:$port" \
    --cluster.listen-address= \
    --log.level=info >"$dir/alertmanager.log" 2>&1 &
  local pid=$!
  PROM_LIB_PIDS+=("$pid")
  _prom_wait_http "http://127.0.0.1:$port/-/ready" 30 "$pid" "$dir/alertmanager.log"
}

# write_prometheus_config FILE TARGET ALERTMANAGER_PORT [RULES]: scrape and evaluate every
# second, job tern-serve (the name alerts.yml expects).
write_prometheus_config() {
  cat >"$1" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - ${4:-$PROM_RULES_FILE}
alerting:
  alertmanagers:
    - static_configs:
        - targets: ["127.0.0.1:$3"]
scrape_configs:
  - job_name: tern-serve
    metrics_path: /metrics
    static_configs:
      - targets: ["$2"]
EOF
}

# start_prometheus PORT TARGET DIR ALERTMANAGER_PORT: Prometheus on 127.0.0.1:PORT scraping
# TARGET (host:port) every second with the repository's alerts.yml, alerts to the Alertmanager
# on 127.0.0.1:ALERTMANAGER_PORT; config, TSDB and log (prometheus.log) in DIR. Returns once
# /-/ready answers (60 s at most).
start_prometheus() {
  local port=$1 target=$2 dir=$3 am_port=$4
  if _prom_port_taken "$port"; then echo "127.0.0.1:$port is in use" >&2; return 1; fi
  [ -n "${PROMETHEUS_BIN:-}" ] || find_prom_tools || return 1
  mkdir -p "$dir/prometheus-data"
  write_prometheus_config "$dir/prometheus.yml" "$target" "$am_port"
  "$PROMETHEUS_BIN" --config.file="$dir/prometheus.yml" \
    --storage.tsdb.path="$dir/prometheus-data" \
    --web.listen-address="127.0.0.1:$port" \
    --log.level=info >"$dir/prometheus.log" 2>&1 &
  local pid=$!
  PROM_LIB_PIDS+=("$pid")
  _prom_wait_http "http://127.0.0.1:$port/-/ready" 60 "$pid" "$dir/prometheus.log"
}

# wait_prom_scraped PORT TIMEOUT [N]: waits until Prometheus has scraped the tern-serve job
# successfully N times (default 2, what rate() needs); Prometheus applies new targets only every
# 5 s, so the first scrape comes up to 5 s after start. 1 after TIMEOUT seconds.
wait_prom_scraped() {
  local port=$1 timeout=$2 n=${3:-2} deadline out
  deadline=$(($(date +%s) + timeout))
  while [ "$(date +%s)" -le "$deadline" ]; do
    out=$(prom_query "$port" "sum_over_time(up{job=\"tern-serve\"}[10m]) >= $n" 2>/dev/null) || true
    [[ $out == *'"result":[{'* ]] && return 0
    sleep 0.5
  done
  echo "Prometheus on $port: the tern-serve target not scraped $n times within $timeout s" >&2
  return 1
}

# prom_query PORT EXPR: prints the JSON answer of /api/v1/query for EXPR (now); 1 when the
# request fails or the status is not success.
prom_query() {
  "$PROM_PYTHON" - "$1" "$2" <<'PY'
import json, sys, urllib.error, urllib.parse, urllib.request
port, expr = sys.argv[1], sys.argv[2]
url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
try:
    with urllib.request.urlopen(url, timeout=10) as r:
        body = r.read().decode()
except urllib.error.HTTPError as e:  # 400/422 carry Prometheus' error JSON
    body = e.read().decode()
except Exception as e:
    sys.exit(f"prom_query: {url}: {e}")
print(body)
sys.exit(0 if json.loads(body).get("status") == "success" else 1)
PY
}

# wait_alert_firing PORT ALERTNAME TIMEOUT: polls /api/v1/alerts until ALERTNAME is firing and
# prints that alert's JSON and how long the wait took; 1 after TIMEOUT seconds (its last state
# is printed).
wait_alert_firing() {
  "$PROM_PYTHON" - "$1" "$2" "$3" <<'PY'
import json, sys, time, urllib.request
port, name, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
start = time.monotonic()
states = "absent"
while True:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/alerts", timeout=5) as r:
            alerts = json.load(r)["data"]["alerts"]
        mine = [a for a in alerts if a["labels"].get("alertname") == name]
        firing = [a for a in mine if a["state"] == "firing"]
        if firing:
            for a in firing:
                print(json.dumps(a))
            print(f"{name} firing after {time.monotonic() - start:.1f} s of waiting")
            sys.exit(0)
        states = ", ".join(sorted({a["state"] for a in mine})) or "absent"
    except Exception as e:
        states = f"error: {e}"
    if time.monotonic() - start > timeout:
        sys.exit(f"{name} not firing within {timeout:g} s (last state: {states})")
    time.sleep(0.25)
PY
}

# wait_webhook_alert FILE ALERTNAME TIMEOUT: waits until the webhook has written a notification
# with ALERTNAME firing to FILE; prints that alert; 1 after TIMEOUT seconds.
wait_webhook_alert() {
  "$PROM_PYTHON" - "$1" "$2" "$3" <<'PY'
import json, sys, time
path, name, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
start = time.monotonic()
while True:
    try:
        with open(path) as f:
            for line in f:
                try:
                    note = json.loads(line)
                except ValueError:
                    continue
                for a in note.get("alerts", []):
                    if a.get("labels", {}).get("alertname") == name and a.get("status") == "firing":
                        print(json.dumps(a))
                        print(f"{name} reached the webhook after {time.monotonic() - start:.1f} s of waiting")
                        sys.exit(0)
    except FileNotFoundError:
        pass
    if time.monotonic() - start > timeout:
        sys.exit(f"no firing {name} at the webhook ({path}) within {timeout:g} s")
    time.sleep(0.25)
PY
}

# check_dashboard_queries PORT DASHBOARD_JSON: runs the expr of every target of every panel
# (rows' panels included) through /api/v1/query, Grafana's variables expanded ($__rate_interval,
# $__interval, $__range: 1m; any other $var, ${var}, ${var:fmt} or [[var]]: .*), and prints each
# with its number of series. Returns 1 naming every panel whose query errs or comes back empty.
check_dashboard_queries() {
  "$PROM_PYTHON" - "$1" "$2" <<'PY'
import json, re, sys, urllib.error, urllib.parse, urllib.request
port, path = sys.argv[1], sys.argv[2]
with open(path) as f:
    dash = json.load(f)

BUILTIN = {"__rate_interval": "1m", "__interval": "1m", "__range": "1m", "__range_s": "60",
           "__range_ms": "60000", "__interval_ms": "60000"}

def expand(expr):
    def sub(m):
        name = m.group(1) or m.group(2) or m.group(3)
        return BUILTIN.get(name, ".*")
    return re.sub(r"\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)(?::[^\]]*)?\]\]|\$(\w+)", sub, expr)

def panels(items):
    for p in items:
        yield p
        yield from panels(p.get("panels", []))

failed, checked = [], 0
for p in panels(dash.get("panels", [])):
    for t in p.get("targets", []):
        expr = t.get("expr")
        if not expr:
            continue
        checked += 1
        q = expand(expr)
        url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": q})
        what = f'panel "{p.get("title")}" [{t.get("refId", "?")}]'
        try:
            try:
                with urllib.request.urlopen(url, timeout=10) as r:
                    ans = json.load(r)
            except urllib.error.HTTPError as e:
                ans = json.loads(e.read() or b"{}")
            if ans.get("status") != "success":
                raise RuntimeError(f'{ans.get("errorType")}: {ans.get("error")}')
            result = ans["data"]["result"]
            n = len(result) if isinstance(result, list) else 1
            if n == 0:
                raise RuntimeError("empty result")
            print(f"ok   {what}: {n} series: {q}")
        except Exception as e:
            print(f"FAIL {what}: {e}: {q}")
            failed.append(p.get("title"))
if checked == 0:
    sys.exit(f"{path}: no panel has a query")
if failed:
    names = ", ".join(f'"{t}"' for t in dict.fromkeys(failed))
    sys.exit(f"{len(failed)} of {checked} dashboard queries failed or came back empty, panels: {names}")
print(f"all {checked} dashboard queries returned data")
PY
}

# stop_monitoring: stops what the start_* functions started (SIGTERM, SIGKILL after 5 s).
stop_monitoring() {
  local pid
  for pid in "${PROM_LIB_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PROM_LIB_PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
    wait "$pid" 2>/dev/null || true
  done
  PROM_LIB_PIDS=()
}
