"""A raw-socket fuzzer for tern-serve's HTTP framing and connection handling (loopback only):

    python3 tests/serve/http_fuzz.py HOST PORT SECONDS [SEED]

For SECONDS, 4 threads each open connection after connection and send byte streams built from
random parts: methods (valid, lower-case, unknown, binary), targets (paths of the server, very
long ones, percent-escapes, absolute and asterisk forms), versions, headers (many, large ones
around the 64 KiB head limit, folded, duplicated, binary), Content-Length (missing, negative,
huge, non-numeric, two that disagree, a body shorter or longer than it says), chunked bodies
(valid, with extensions and trailers, bad or huge sizes, missing the last chunk, alongside a
Content-Length), Expect: 100-continue, Connection: close / keep-alive, several requests pipelined
in one write, streams cut into random pieces with pauses, early closes and half-closes. Whatever
comes back must be a sequence of well-formed HTTP/1.1 responses (a status line with a 1xx-5xx
code, headers, a body of the Content-Length they give), exactly one per request for streams of
well-formed requests, and no 500. Every 50 connections, and at the end, a valid request must get
200 within 2 s: the server is alive and answers. The seed is printed, and taken as the fourth argument: the same seed sends the
same byte streams (their interleaving across the threads depends on timing); the failing
connection's bytes are written to http_fuzz_failure.bin. Exit 1 on the first violation, or when
the fuzzer itself fails.
"""

import json
import os
import random
import socket
import sys
import threading
import time

host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
seed = int(sys.argv[4]) if len(sys.argv) > 4 else int.from_bytes(os.urandom(4), "little")
print(f"http_fuzz: seed {seed} (replay: python3 {sys.argv[0]} HOST PORT SECONDS {seed})", flush=True)

BODY = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4],
                               "data": [0.5, 0.25, -1.0, 2.0]}]}).encode()
PATHS = ["/v2/models/m/infer", "/v2/models/m", "/v2/health/ready", "/v2/health/live", "/v2",
         "/metrics", "/v2/models/m/versions/1/infer", "/v2/models/m/config", "/v2/models/stats",
         "/v2/repository/index", "/v2/models/nope/infer", "/", "/v2/models/m/versions/x/infer"]
METHODS = ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "TRACE", "CONNECT", "get",
           "POST ", "P\x00ST", "BREW", "G" * 300, ""]
VERSIONS = ["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/0.9", "HTTP/1.10", "HTTP/9.9", "http/1.1",
            "HTTP/1", "HTTP/1.1 extra", ""]


class Violation(Exception):
    pass


class Req:
    """One generated request: its bytes; `valid` when every part was drawn from the well-formed
    choices (then a response is owed); `closes` when it asks for Connection: close."""

    def __init__(self):
        self.valid, self.closes = True, False

    def pick(self, r, good, bad, p_bad):
        if r.random() < p_bad:
            self.valid = False
            return r.choice(bad)
        return r.choice(good)


def target(r, q):
    """A request target; anything but a plain path of the server makes the request invalid
    (the server may refuse it and close)."""
    p = r.choice(PATHS)
    roll = r.random()
    if roll < 0.04:
        return p + "?a=1&b=2"
    if roll < 0.22:
        q.valid = False
    if roll < 0.08:
        return p + "?" + "a=" * r.randint(1, 20000)
    if roll < 0.14:
        return "/v2/models/%" + r.choice(["zz", "00", "2f..%2f", "", "e2%82%ac"]) + "/infer"
    if roll < 0.18:
        return r.choice(["*", "http://127.0.0.1/v2/health/ready", "v2/health/ready", "//", "/\x7f"])
    if roll < 0.22:
        return "/" + "x" * r.randint(60000, 70000)
    return p


def header_block(r, q, body_len, chunked):
    h = [("Host", "fuzz")]
    if r.random() < 0.8:
        h.append(("Content-Type", q.pick(r, ["application/json", "application/octet-stream"], ["x/\x01"], 0.05)))
    if not chunked:
        roll = r.random()
        if roll < 0.65:
            h.append(("Content-Length", str(body_len)))
        elif roll < 0.72:
            q.valid = False
            h.append(("Content-Length", r.choice(["-1", "abc", "1e3", " 5", "99999999999999999999",
                                                  "0x10", ""])))
        elif roll < 0.78:
            q.valid = False
            h += [("Content-Length", str(body_len)), ("Content-Length", str(body_len + r.randint(1, 9)))]
        elif roll < 0.84:
            q.valid = False
            h.append(("Content-Length", str(max(0, body_len + r.randint(-20, 20)))))
        else:
            q.valid = q.valid and body_len == 0  # no length: the body would be the next request
    else:
        h.append(("Transfer-Encoding", q.pick(r, ["chunked"], ["gzip, chunked", "chunked, gzip",
                                                             "Chunked", "identity"], 0.3)))
        if r.random() < 0.2:
            q.valid = False
            h.append(("Content-Length", str(body_len)))
    if r.random() < 0.15:
        h.append(("Expect", "100-continue"))
    if r.random() < 0.3:
        c = q.pick(r, ["close", "keep-alive"], ["Upgrade", "close, keep-alive"], 0.3)
        q.closes = q.closes or "close" in c
        h.append(("Connection", c))
    for _ in range(r.choice([0, 0, 1, 5, 50, 500])):
        h.append((f"X-F{r.randint(0, 1 << 30)}", "v" * r.randint(0, 200)))
    if r.random() < 0.06:  # around the 64 KiB head limit
        q.valid = False
        h.append(("X-Big", "b" * r.choice([60000, 65000, 65536, 70000, 200000])))
    if r.random() < 0.05:
        q.valid = False
        h.append(("X-Folded", "first\r\n  continued"))
    if r.random() < 0.05:
        q.valid = False
        h.append((r.choice(["Bad Name", "", ":", "X\x00Y", "X\xff"]), "v"))
    if r.random() < 0.05:
        q.valid = False
        h.append(("X-Bin", bytes(r.randrange(256) for _ in range(40)).decode("latin-1")))
    eol = "\r\n"
    if r.random() < 0.03:
        q.valid, eol = False, "\n"
    return "".join(f"{k}: {v}{eol}" for k, v in h) + eol


def chunked_body(r, q, body):
    out, i = b"", 0
    while i < len(body):
        n = min(r.randint(1, 64), len(body) - i)
        ext = r.choice(["", "", ";name=value", ";" + "e" * 2000])
        q.valid = q.valid and len(ext) < 100
        size = q.pick(r, [f"{n:x}"], ["ffffffffffffffffffff", "-1", "zz", "", "1 1"], 0.05)
        out += size.encode() + ext.encode() + b"\r\n" + body[i:i + n] + b"\r\n"
        i += n
    roll = r.random()
    if roll < 0.8:
        out += b"0\r\n" + (b"X-Trailer: t\r\n" if r.random() < 0.2 else b"") + b"\r\n"
    else:
        q.valid = False
        if roll < 0.9:
            out += b"0\r\n"  # no final empty line
    return out


def one_request(r):
    """A request, well-formed or not (Req)."""
    q = Req()
    # Any draw from METHODS counts as invalid: HEAD's answer has no body, CONNECT asks for a
    # tunnel, and the rest may be refused with the connection closed.
    method = q.pick(r, ["POST", "GET", "PUT", "DELETE", "OPTIONS"], METHODS, 0.3)
    body = BODY if r.random() < 0.6 else bytes(r.randrange(256) for _ in range(r.randint(0, 300)))
    if r.random() < 0.05:
        body = b"[" * r.randint(1000, 100000)  # deep nesting
    chunked = r.random() < 0.25
    line = f"{method} {target(r, q)} {q.pick(r, ['HTTP/1.1'], VERSIONS, 0.1)}\r\n"
    if r.random() < 0.03:
        q.valid, line = False, line.replace("\r\n", "\n")
    data = (line + header_block(r, q, len(body), chunked)).encode("latin-1")
    if len(data) > 60000:
        q.valid = False  # near the 64 KiB head limit: refused with 431, and the connection closes
    q.data = data + (chunked_body(r, q, body) if chunked else body)
    return q


def parse_responses(data):
    """The complete responses at the start of `data`, checked to be well-formed HTTP/1.1:
    (final responses, bytes used). An incomplete one at the end is left for later."""
    finals, used = 0, 0
    while used < len(data):
        end = data.find(b"\r\n\r\n", used)
        if end < 0:
            if not any(v.startswith(data[used:used + 9]) or data[used:].startswith(v) for v in (b"HTTP/1.1 ", b"HTTP/1.0 ")):
                raise Violation(f"not an HTTP/1.1 response: {data[used:used + 200]!r}")
            break
        lines = data[used:end].split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or parts[0] not in (b"HTTP/1.1", b"HTTP/1.0") or not parts[1].isdigit() or not 100 <= int(parts[1]) <= 599:
            raise Violation(f"a malformed status line: {lines[0][:200]!r}")
        status = int(parts[1])
        if status == 500:
            raise Violation(f"500 (an internal error, where a request's fault is a 4xx): {data[used:used + 300]!r}")
        length = 0
        for h in lines[1:]:
            k, sep, v = h.partition(b":")
            if not sep:
                raise Violation(f"a malformed header line: {h[:200]!r}")
            if k.strip().lower() == b"content-length":
                if not v.strip().isdigit():
                    raise Violation(f"a malformed Content-Length: {h[:200]!r}")
                length = int(v.strip())
        body_end = end + 4 + (0 if status < 200 else length)
        if len(data) < body_end:
            break
        finals += status >= 200
        used = body_end
    return finals, used


def read_responses(s, owed):
    """What the server sends until it closes, until the `owed` responses are in (when known), or
    until it has been quiet for 0.15 s; at most 2 s. The number of final (non-1xx) responses; a
    response cut short by the server is a violation."""
    data, deadline, last = b"", time.monotonic() + 2.0, time.monotonic()
    closed = False
    while time.monotonic() < deadline:
        s.settimeout(0.05)
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            if owed is None and time.monotonic() - last > 0.15:
                break
            continue
        except (ConnectionResetError, BrokenPipeError):
            closed = True
            break
        if not chunk:
            closed = True
            break
        data += chunk
        last = time.monotonic()
        finals, used = parse_responses(data)
        if owed is not None and finals >= owed and used == len(data):
            break
    finals, used = parse_responses(data)
    if used != len(data) and closed:
        raise Violation(f"the connection closed inside a response: {data[used:used + 200]!r}")
    return finals


def alive():
    """A valid request gets 200 within 2 s."""
    deadline = time.monotonic() + 2
    req = (f"POST /v2/models/m/infer HTTP/1.1\r\nHost: h\r\nContent-Length: {len(BODY)}\r\n"
           f"Connection: close\r\n\r\n").encode() + BODY
    try:
        with socket.create_connection((host, port), timeout=2) as s:
            s.sendall(req)
            data = b""
            while time.monotonic() < deadline:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError as e:
        raise Violation(f"the server stopped answering: {e}")
    if not data.startswith(b"HTTP/1.1 200"):
        raise Violation(f"a valid request got {data[:100]!r}")


stop = threading.Event()
stats = {"connections": 0, "requests": 0, "bytes": 0, "responses": 0}
lock = threading.Lock()
failure = []


def fuzz(thread):
    r = random.Random(seed * 16 + thread)
    n = 0
    while not stop.is_set():
        n += 1
        reqs = [one_request(r) for _ in range(r.choice([1, 1, 1, 2, 3, 8]))]
        stream = b"".join(q.data for q in reqs)
        roll = r.random()
        if roll < 0.1:
            stream = stream[: r.randint(0, len(stream))]  # early close
        # Responses owed: for a stream of well-formed requests, one each up to the first that
        # closes the connection; otherwise the count depends on how the server frames the rest.
        owed = None
        if roll >= 0.1 and all(q.valid for q in reqs):
            owed = next((i + 1 for i, q in enumerate(reqs) if q.closes), len(reqs))
        try:
            with socket.create_connection((host, port), timeout=5) as s:
                # Sent whole (pipelined), or in random pieces with short pauses.
                pieces = [stream] if r.random() < 0.6 else []
                if not pieces:
                    cuts = sorted(r.randint(0, len(stream)) for _ in range(r.randint(1, 6)))
                    pieces = [stream[a:b] for a, b in zip([0] + cuts, cuts + [len(stream)])]
                try:
                    for p in pieces:
                        s.sendall(p)
                        if len(pieces) > 1:
                            time.sleep(r.choice([0, 0, 0.001, 0.01]))
                    if r.random() < 0.2:
                        s.shutdown(socket.SHUT_WR)  # half-close: the answers must still come
                except OSError:
                    pass  # the server closed a connection it refused (reset, ENOTCONN): fine
                finals = 0 if roll < 0.1 and r.random() < 0.5 else read_responses(s, owed)
                if owed is not None and finals != owed:
                    raise Violation(f"{finals} responses to {len(reqs)} well-formed requests ({owed} owed)")
            with lock:
                stats["connections"] += 1
                stats["requests"] += len(reqs)
                stats["bytes"] += len(stream)
                stats["responses"] += finals
            if n % 50 == 0:
                alive()
        except Violation as v:
            failure.append(f"thread {thread}, connection {n}: {v}")
            with open("http_fuzz_failure.bin", "wb") as f:
                f.write(stream)
            stop.set()
        except OSError as e:
            failure.append(f"thread {thread}, connection {n}: cannot reach the server: {e}")
            stop.set()
        except Exception as e:  # a bug here must fail the run, not end a thread quietly
            failure.append(f"thread {thread}, connection {n}: the fuzzer failed: {e!r}")
            with open("http_fuzz_failure.bin", "wb") as f:
                f.write(stream)
            stop.set()


threads = [threading.Thread(target=fuzz, args=(i,)) for i in range(4)]
for t in threads:
    t.start()
end = time.monotonic() + seconds
while time.monotonic() < end and not stop.is_set():
    time.sleep(0.2)
stop.set()
for t in threads:
    t.join()
if not failure:
    try:
        alive()
    except Violation as v:
        failure.append(f"at the end: {v}")
print(f"http_fuzz: {stats['connections']} connections, {stats['requests']} requests "
      f"({stats['bytes'] / 1e6:.1f} MB), {stats['responses']} responses in {seconds:g} s", flush=True)
if failure:
    print("FAIL: " + failure[0] + " (bytes in http_fuzz_failure.bin)", flush=True)
    sys.exit(1)
print("ok: every answer was well-formed HTTP and the server kept answering", flush=True)
