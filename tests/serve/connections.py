"""Many idle and half-sent connections against a running tern-serve (loopback only):

    python3 tests/serve/connections.py HOST PORT IDLE_TIMEOUT_SECS [N]

Opens N connections (default 1000): a third send nothing, a third half a request head, a third a
whole head and half the body it announces. Then, while they are all open, real requests on fresh
connections must each be answered within 100 ms. Halfway to the idle timeout the waiting
connections must still be open; once it has passed (plus a margin) the server must have closed
every one of them. Prints one line per check; exit 1 when any failed.
"""

import json
import resource
import select
import socket
import sys
import time

host, port, idle = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
n = int(sys.argv[4]) if len(sys.argv) > 4 else 1000
failures = 0


def check(ok, what):
    global failures
    print(("ok: " if ok else "FAIL: ") + what, flush=True)
    failures += 0 if ok else 1


# This process holds n sockets too.
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
want = min(hard, max(soft, n + 256)) if hard != resource.RLIM_INFINITY else max(soft, n + 256)
resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4],
                               "data": [0.1, 0.2, 0.3, 0.4]}]}).encode()
head = (f"POST /v2/models/m/infer HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n").encode()
partial = [b"", head[: len(head) // 2], head + body[: len(body) // 2]]
kinds = ["idle", "half a head", "a head and half its body"]

t0 = time.monotonic()
held = []
for i in range(n):
    s = socket.create_connection((host, port), timeout=10)
    if partial[i % 3]:
        s.sendall(partial[i % 3])
    held.append((s, i % 3))
opened = time.monotonic() - t0
print(f"{n} connections open in {opened:.2f} s: " +
      ", ".join(f"{sum(1 for _, k in held if k == j)} {kinds[j]}" for j in range(3)), flush=True)


def request():
    """One whole request on a fresh connection: (status, seconds from connect to the answer)."""
    start = time.monotonic()
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(head + body)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0
        length = 0
        for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v)
        rest = data.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in data else b""
        while len(rest) < length:
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
    return status, time.monotonic() - start


times = []
statuses = set()
for _ in range(20):
    status, secs = request()
    statuses.add(status)
    times.append(secs)
check(statuses == {200} and max(times) < 0.1,
      f"with {n} idle or half-sent connections open, 20 requests answered {sorted(statuses)} in "
      f"at most {max(times) * 1000:.1f} ms (median {sorted(times)[10] * 1000:.1f} ms; goal < 100 ms)")


def closed(s):
    """True when the server has closed this connection (EOF or reset)."""
    try:
        r, _, _ = select.select([s], [], [], 0)
        if not r:
            return False
        return s.recv(65536) == b""
    except (ConnectionResetError, OSError):
        return True


# Before the timeout, nothing is closed: looked at halfway to it as counted from the first
# connection opened (or at once, when opening them took longer than that).
time.sleep(max(0.0, t0 + idle / 2 - time.monotonic()))
age = time.monotonic() - t0
early = sum(1 for s, _ in held if closed(s))
check(age < idle and early == 0,
      f"{age:.1f} s after the first was opened, before the idle timeout of {idle:g} s: {early} closed")

# Past the timeout: every waiting connection has been closed by the server.
deadline = t0 + opened + idle + 3.0
remaining = list(held)
while remaining and time.monotonic() < deadline:
    remaining = [(s, k) for s, k in remaining if not closed(s)]
    time.sleep(0.1)
check(not remaining,
      f"{idle:g} s + 3 s after they were opened, the server had closed {n - len(remaining)} of {n}"
      + ("" if not remaining else " (still open: " + ", ".join(
          f"{sum(1 for _, k in remaining if k == j)} {kinds[j]}" for j in range(3)) + ")"))
for s, _ in held:
    s.close()
status, secs = request()
check(status == 200, f"a request after they are gone: {status} in {secs * 1000:.1f} ms")
sys.exit(1 if failures else 0)
