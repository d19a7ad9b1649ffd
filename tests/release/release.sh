#!/usr/bin/env bash
# Safe releases, end to end against tern-serve with real client loops on loopback: a failing
# canary rolled back and a healthy one promoted under load (and their state across a restart),
# a shadow challenger that disagrees, crashes and hangs, a primary that times out behind a
# fallback and a circuit breaker, overload shed with 429, and Triton's model control API with
# the admin token (curl and tritonclient[http]). The models misbehave through the real loading
# path: [fault] control files that each version's workers read.
source "$(dirname "$0")/../e2e/lib.sh"
[ -n "${TERN_TEST_PYTHON:-}" ] || missing_component "TERN_TEST_PYTHON is not set (launch/test.sh sets it up)"
"$TERN_TEST_PYTHON" -c 'import tritonclient.http' 2>/dev/null ||
  missing_component "tritonclient[http] in the test Python (launch/common.sh installs it)"
make_model() { mkdir -p "$(dirname "$1")" && "$TERN_BIN/tern_serve_make_model" "$1" 4 3 "$2" >/dev/null; }
check() { "$TERN_TEST_PYTHON" "$(dirname "$0")/release_check.py" "$1" "$URL" "$WORK" "$WORK/token" || fail "scenario $1"; }

REPO=$WORK/repo
umask 077
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$WORK/token"
for m in canary_bad canary_good canary_long champ; do
  make_model "$REPO/$m/1/model.h5" 1 && make_model "$REPO/$m/2/model.h5" 2
done
for m in plain primary lonely tight; do make_model "$REPO/$m/1/model.h5" 1; done
make_model "$REPO/simple/1/model.h5" 9
rollout() {  # rollout STEP MAX
  printf 'version_policy = latest:2\n[rollout]\nenabled = true\nstep_weight = %s\nmax_weight = %s\ninterval_seconds = 1\nthreshold = 3\nmin_requests = 5\n' "$1" "$2"
}
{ rollout 10 50; printf '[fault]\ncontrol = %s/fault-canary_bad-{version}\n' "$WORK"; } >"$REPO/canary_bad/config.ini"
echo "fail = 0.2" >"$WORK/fault-canary_bad-2"
rollout 10 50 >"$REPO/canary_good/config.ini"
rollout 5 100 >"$REPO/canary_long/config.ini"
printf 'version_policy = latest:2\ntraffic = 1:1\n[shadow]\nversion = 2\n[fault]\ncontrol = %s/fault-champ-{version}\n' "$WORK" >"$REPO/champ/config.ini"
cat >"$REPO/primary/config.ini" <<EOC
fallback = simple
[breaker]
enabled = true
window = 10
min_calls = 4
failure_rate = 50
open_seconds = 2
half_open_calls = 2
[fault]
control = $WORK/fault-primary-{version}
EOC
printf '[fault]\ncontrol = %s/fault-lonely-{version}\n' "$WORK" >"$REPO/lonely/config.ini"
printf 'instances = 1\nmax_queue_size = 8\npriority_levels = 2\n[fault]\ncontrol = %s/fault-tight-{version}\n' "$WORK" >"$REPO/tight/config.ini"
echo "sleep_ms = 20" >"$WORK/fault-tight-1"

serve_repo "$REPO" --server.admin_token_file="$WORK/token"
check canary
# The rollouts' state survives a restart of the server.
kill -TERM $SERVER && wait $SERVER
cp "$WORK/serve.log" "$WORK/serve-1.log"
serve_repo "$REPO" --server.admin_token_file="$WORK/token"
check canary_restarted
check shadow
check fallback
check overload
grep -q '"decision":"rollback"' "$WORK/serve-1.log" && pass "each rollout decision is a JSON log line" ||
  fail "no rollback decision in the log"
kill -TERM $SERVER && wait $SERVER
cat "$WORK/serve.log" >>"$WORK/serve-1.log"

# Triton's model control API, explicit mode: "ctl" is loaded on request only.
CTL=$WORK/ctl
make_model "$CTL/ctl/1/model.h5" 3 && make_model "$CTL/slowctl/1/model.h5" 4
printf '[fault]\ncontrol = %s/fault-slowctl\n' "$WORK" >"$CTL/slowctl/config.ini"
echo "sleep_ms = 200" >"$WORK/fault-slowctl"
cp "$WORK/token" "$WORK/ctl-token"
serve_repo "$CTL" --model-control-mode=explicit --load-model=slowctl --admin-token-file="$WORK/token"
check control
kill -TERM $SERVER && wait $SERVER
cat "$WORK/serve.log" >>"$WORK/serve-1.log"
grep -qF "$(cat "$WORK/token")" "$WORK/serve-1.log" && fail "the admin token appears in the server's log" ||
  pass "the admin token appears in no log line"
grep -q "failed to load 'nosuch'" "$WORK/serve-1.log" || true
finish
