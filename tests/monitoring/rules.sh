#!/usr/bin/env bash
# The monitoring assets, checked with Debian's Prometheus tools (no server, no network):
# alerts.yml parses and passes its unit tests (alerts_test.yml), every alert has a test, its
# labels and annotations, and a runbook_url whose anchor is a heading of docs/operations.md;
# prometheus.yml and alertmanager.yml (and the configs prom_lib.sh writes) are valid; the Grafana
# dashboard is valid JSON whose every query parses as PromQL.
# Exit 0 when all pass, 1 when any fails, 77 (skip) without promtool outside CI.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
source tests/require.sh
source tests/monitoring/prom_lib.sh

PROM_DIR=docker/prometheus
DASHBOARD=docker/grafana/tern-serving.json
RUNBOOK=docs/operations.md
RUNBOOK_URL=https://github.com/tern-ml/tern/blob/main/docs/operations.md

find_prom_tools 2>/dev/null || true
[ -n "$PROMTOOL_BIN" ] || missing_component "promtool (Debian package prometheus; launch/common.sh installs it)"
WORK=$(mktemp -d /tmp/tern-monitoring.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

passed=0 failed=0
pass() { echo "ok: $*"; passed=$((passed + 1)); }
fail() { echo "FAIL: $*" >&2; failed=$((failed + 1)); }
# check WHAT CMD...: CMD succeeds; its output is shown when it does not.
check() {
  local what=$1 out
  shift
  if out=$("$@" 2>&1); then pass "$what"; else fail "$what: $out"; fi
}

check "promtool check rules $PROM_DIR/alerts.yml" "$PROMTOOL_BIN" check rules "$PROM_DIR/alerts.yml"
check "promtool test rules $PROM_DIR/alerts_test.yml" "$PROMTOOL_BIN" test rules "$PROM_DIR/alerts_test.yml"
# rule_files is relative to the config file, so the example checks where it lies.
check "promtool check config $PROM_DIR/prometheus.yml" "$PROMTOOL_BIN" check config "$PROM_DIR/prometheus.yml"
write_prometheus_config "$WORK/prometheus.yml" 127.0.0.1:8000 9093 "$PWD/$PROM_DIR/alerts.yml"
check "promtool check config: start_prometheus's config" "$PROMTOOL_BIN" check config "$WORK/prometheus.yml"

if [ -n "$AMTOOL_BIN" ]; then
  check "amtool check-config $PROM_DIR/alertmanager.yml" "$AMTOOL_BIN" check-config "$PROM_DIR/alertmanager.yml"
  write_alertmanager_config "$WORK/alertmanager.yml" 8080
  check "amtool check-config: start_alertmanager's config" "$AMTOOL_BIN" check-config "$WORK/alertmanager.yml"
elif strict_components; then
  fail "amtool is missing (Debian package prometheus-alertmanager; launch/common.sh installs it)"
else
  echo "skip: amtool check-config (amtool missing: Debian package prometheus-alertmanager)"
fi

# The alerts' shape, their tests and runbook anchors. The rules are read line by line (the
# system python3 has no YAML parser): alerts.yml keeps one key per line.
if out=$("$PROM_PYTHON" - "$PROM_DIR/alerts.yml" "$PROM_DIR/alerts_test.yml" "$RUNBOOK" "$RUNBOOK_URL" "$DASHBOARD" <<'PY' 2>&1
import re, sys
rules_path, tests_path, runbook, runbook_url, dashboard = sys.argv[1:]

def github_anchors(path):
    """The anchors GitHub gives the headings of a Markdown file."""
    anchors, seen, fence = set(), {}, False
    for line in open(path, encoding="utf-8"):
        if line.lstrip().startswith(("```", "~~~")):
            fence = not fence
            continue
        m = None if fence else re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", m.group(1))  # a link counts by its text
        slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors

problems = []
alerts, current = {}, None
for line in open(rules_path, encoding="utf-8"):
    m = re.match(r"\s*- alert:\s*(\S+)", line)
    if m:
        current = alerts.setdefault(m.group(1), {})
        continue
    m = re.match(r"\s*(severity|summary|description|runbook_url|for):\s*(.*?)\s*$", line)
    if m and current is not None:
        current[m.group(1)] = m.group(2).strip("'\"")
if not alerts:
    problems.append(f"{rules_path}: no alert found")

tests = open(tests_path, encoding="utf-8").read()
anchors = github_anchors(runbook)
for name, a in alerts.items():
    for key in ("severity", "summary", "description", "runbook_url"):
        if not a.get(key):
            problems.append(f"{name}: no {key}")
    if a.get("severity") and a["severity"] not in ("critical", "warning", "info"):
        problems.append(f"{name}: severity {a['severity']} is none of critical, warning, info")
    if not re.search(rf"alertname:\s*{re.escape(name)}\s*$", tests, re.M):
        problems.append(f"{name}: no test in {tests_path}")
    url = a.get("runbook_url", "")
    if url:
        base, _, anchor = url.partition("#")
        if base != runbook_url:
            problems.append(f"{name}: runbook_url {url} is not under {runbook_url}")
        elif anchor not in anchors:
            problems.append(f"{name}: runbook_url anchor #{anchor} is no heading of {runbook}")
    # The end-to-end monitoring test expects drift alerts to fire within about 30 s.
    if "Drift" in name and "for" in a:
        m = re.fullmatch(r"(\d+)s", a["for"])
        if not m or int(m.group(1)) > 15:
            problems.append(f"{name}: for: {a['for']}; drift alerts wait at most 15s (see alerts.yml)")
# Links from the dashboard to the runbook.
for anchor in re.findall(re.escape(runbook_url) + r"#([\w-]+)", open(dashboard, encoding="utf-8").read()):
    if anchor not in anchors:
        problems.append(f"{dashboard}: link anchor #{anchor} is no heading of {runbook}")
print("\n".join(problems) or f"{len(alerts)} alerts: " + ", ".join(alerts))
sys.exit(1 if problems else 0)
PY
); then pass "alerts: labels, annotations, tests and runbook anchors ($out)"; else fail "alerts: $out"; fi

# The dashboard: JSON, its shape, and every query written out as a recording rule for
# promtool to parse, with Grafana's variables expanded as check_dashboard_queries does.
if out=$("$PROM_PYTHON" - "$DASHBOARD" "$WORK/dashboard_rules.yml" <<'PY' 2>&1
import json, re, sys
path, rules_out = sys.argv[1:]
try:
    dash = json.load(open(path, encoding="utf-8"))
except ValueError as e:
    sys.exit(f"{path} is not JSON: {e}")
problems = []
if not isinstance(dash.get("schemaVersion"), int):
    problems.append("no schemaVersion")
variables = {v.get("name") for v in dash.get("templating", {}).get("list", [])}
if "DS_PROMETHEUS" not in variables:
    problems.append("no DS_PROMETHEUS datasource variable")

def panels(items):
    for p in items:
        yield p
        yield from panels(p.get("panels", []))

BUILTIN = {"__rate_interval": "1m", "__interval": "1m", "__range": "1m", "__range_s": "60",
           "__range_ms": "60000", "__interval_ms": "60000"}
def expand(expr):
    return re.sub(r"\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)(?::[^\]]*)?\]\]|\$(\w+)",
                  lambda m: BUILTIN.get(m.group(1) or m.group(2) or m.group(3), ".*"), expr)

ids, exprs = set(), []
for p in panels(dash.get("panels", [])):
    title = p.get("title", "?")
    if p.get("id") in ids:
        problems.append(f'panel "{title}": id {p.get("id")} used twice')
    ids.add(p.get("id"))
    if p.get("type") == "row":
        continue
    if "gridPos" not in p:
        problems.append(f'panel "{title}": no gridPos')
    if not p.get("targets"):
        problems.append(f'panel "{title}": no targets')
    for t in [p] + p.get("targets", []):
        ds = t.get("datasource") or {}
        if ds.get("uid") not in ("${DS_PROMETHEUS}", "prometheus"):
            problems.append(f'panel "{title}": datasource {ds} is not ${{DS_PROMETHEUS}}')
    for t in p.get("targets", []):
        if not t.get("expr", "").strip():
            problems.append(f'panel "{title}" [{t.get("refId")}]: no expr')
        else:
            exprs.append((title, expand(t["expr"])))
with open(rules_out, "w") as f:
    f.write("groups:\n  - name: dashboard\n    rules:\n")
    for i, (title, expr) in enumerate(exprs):
        f.write(f"      # {title}\n      - record: dashboard:query_{i}\n        expr: {json.dumps(expr)}\n")
print("\n".join(problems) or f"{len(ids)} panels, {len(exprs)} queries")
sys.exit(1 if problems else 0)
PY
); then
  pass "dashboard $DASHBOARD: $out"
  check "dashboard queries parse as PromQL (promtool check rules)" "$PROMTOOL_BIN" check rules "$WORK/dashboard_rules.yml"
else
  fail "dashboard $DASHBOARD: $out"
fi

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
