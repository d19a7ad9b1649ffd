-- wrk script of bench/serve_bench.sh and tests/serve/soak.sh: POSTs the JSON body in the file
-- $WRK_BODY to the URL (keep-alive, wrk's default), and prints one machine-readable summary line
-- at the end:
--   WRK requests=N duration_us=D non2xx=S connect=C read=R write=W timeout=T p50_us=.. p99_us=..
local f = assert(io.open(os.getenv("WRK_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK requests=%d duration_us=%d non2xx=%d connect=%d read=%d write=%d timeout=%d " ..
    "p50_us=%d p90_us=%d p99_us=%d mean_us=%.1f max_us=%d\n",
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean,
    latency.max))
end
