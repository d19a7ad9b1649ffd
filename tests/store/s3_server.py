"""A real S3 API on loopback for the store tests: moto's server, plus what tests of a client need.

    python tests/store/s3_server.py --port-file F [--port P] [--strict] &

prints its endpoint (http://127.0.0.1:PORT) and writes the port to F once it listens (the file
appears whole: wait for it to exist). It runs until SIGTERM or SIGINT.

Outages, on the same port, objects kept (moto holds them in memory only):
    kill -USR1 PID   stop listening and cut every open connection: clients see connection errors
    kill -USR2 PID   listen again on the same port
The signals return at once; the port closes (or opens) some milliseconds later, so a test that
needs the outage under way first waits until connecting fails.
A full restart (kill, then start again with --port P) can reuse the port at once (SO_REUSEADDR),
but starts with no buckets.

Injected faults: POST http://127.0.0.1:PORT/__tern/faults with a JSON object
    {"status": 503, "code": "SlowDown", "message": "...", "count": 3, "match": "/part", "method": "PUT"}
makes the next `count` requests whose path (with "?query") contains `match` (and of that method, if given) fail
so; DELETE /__tern/faults drops them all.

--strict rejects what real S3 rejects and moto lets through: a missing x-amz-content-sha256, a
body that does not hash to it, an x-amz-* header left out of the signature; and, from tern (its
User-Agent), a payload hash that is not a real SHA-256.
"""

import argparse
import hashlib
import io
import json
import logging
import os
import re
import signal
import socket
import sys
import threading
import time

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import WSGIRequestHandler, make_server

try:  # keeps headers with underscores (S3 metadata); newer moto releases only
    from moto.moto_server.werkzeug_app import MotoRequestHandler
except ImportError:
    MotoRequestHandler = WSGIRequestHandler

HEX64 = re.compile(r"^[0-9a-f]{64}$")


def s3_error(start_response, status, code, message, head=False):
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    ).encode()
    start_response(
        f"{status} {code}",
        [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))],
    )
    return [] if head else [body]


class Faults:
    def __init__(self):
        self.lock = threading.Lock()
        self.items = []

    def add(self, spec):
        with self.lock:
            self.items.append(dict(spec, count=int(spec.get("count", 1))))

    def clear(self):
        with self.lock:
            self.items.clear()

    def take(self, method, path):
        with self.lock:
            for f in self.items:
                if f["count"] > 0 and f.get("match", "") in path and f.get("method", method) == method:
                    f["count"] -= 1
                    return f
        return None


class Front:
    """WSGI in front of moto: the control path, injected faults, the --strict checks."""

    def __init__(self, app, strict):
        self.app = app
        self.strict = strict
        self.faults = Faults()

    def __call__(self, environ, start_response):
        method = environ["REQUEST_METHOD"]
        path = environ.get("PATH_INFO", "")
        if path == "/__tern/faults":
            return self.control(environ, start_response, method)
        # Read whole first: an answer that left body bytes unread would garble the next request
        # on a kept-alive connection.
        body = None
        if environ.get("CONTENT_LENGTH"):
            body = environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"]))
            environ["wsgi.input"] = io.BytesIO(body)
        query = environ.get("QUERY_STRING", "")
        fault = self.faults.take(method, path + ("?" + query if query else ""))
        if fault:
            return s3_error(start_response, fault["status"], fault.get("code", "InternalError"),
                            fault.get("message", "injected fault"), method == "HEAD")
        if self.strict and "/s3/aws4_request" in environ.get("HTTP_AUTHORIZATION", ""):
            problem = self.check(environ, body)
            if problem:
                return s3_error(start_response, *problem, head=method == "HEAD")
        return self.app(environ, start_response)

    def control(self, environ, start_response, method):
        if method == "POST":
            size = int(environ.get("CONTENT_LENGTH") or 0)
            self.faults.add(json.loads(environ["wsgi.input"].read(size) or b"{}"))
        elif method == "DELETE":
            self.faults.clear()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
        return [b"ok\n"]

    def check(self, environ, body):
        auth = environ["HTTP_AUTHORIZATION"]
        signed = auth.partition("SignedHeaders=")[2].partition(",")[0].split(";")
        sent = [k[5:].lower().replace("_", "-") for k in environ if k.startswith("HTTP_X_AMZ_")]
        unsigned = [h for h in sent if h not in signed]
        if unsigned:
            return (403, "AccessDenied",
                    "There were headers present in the request which were not signed: "
                    + ", ".join(unsigned))
        claimed = environ.get("HTTP_X_AMZ_CONTENT_SHA256")
        if claimed is None:
            return (400, "InvalidRequest", "Missing required header for this request: x-amz-content-sha256")
        from_tern = environ.get("HTTP_USER_AGENT", "").startswith("tern/")
        if from_tern and not HEX64.match(claimed):
            return (400, "InvalidRequest", f"tern sent x-amz-content-sha256 '{claimed}', not a SHA-256")
        if HEX64.match(claimed) and hashlib.sha256(body or b"").hexdigest() != claimed:
            return (400, "XAmzContentSHA256Mismatch",
                    "The provided 'x-amz-content-sha256' header does not match what was computed.")
        return None


LIVE = set()
LIVE_LOCK = threading.Lock()


class Handler(MotoRequestHandler):
    # Keeps its connection known so that an outage can cut kept-alive ones too.
    def setup(self):
        super().setup()
        with LIVE_LOCK:
            LIVE.add(self.connection)

    def finish(self):
        with LIVE_LOCK:
            LIVE.discard(self.connection)
        super().finish()


class Server:
    def __init__(self, host, port, app):
        self.host, self.port, self.app = host, port, app
        self.httpd = None
        self.lock = threading.Lock()

    def up(self):
        with self.lock:
            if self.httpd:
                return
            self.httpd = make_server(self.host, self.port, self.app, threaded=True,
                                     request_handler=Handler)
            self.port = self.httpd.server_port
            threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def down(self):
        with self.lock:
            if not self.httpd:
                return
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None
            with LIVE_LOCK:
                for conn in list(LIVE):
                    try:
                        conn.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--port-file", help="write the port here once listening")
    parser.add_argument("--strict", action="store_true", help="check payload hashes and signed headers")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args()
    if not args.verbose:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)

    server = Server(args.host, args.port, Front(DomainDispatcherApplication(create_backend_app), args.strict))
    server.up()
    # Signal handlers run on this thread, between its sleeps; serving goes on in the others.
    signal.signal(signal.SIGUSR1, lambda *_: server.down())
    signal.signal(signal.SIGUSR2, lambda *_: server.up())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    print(f"http://{args.host}:{server.port}", flush=True)
    if args.port_file:
        tmp = f"{args.port_file}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(f"{server.port}\n")
        os.replace(tmp, args.port_file)
    while not stop.is_set():
        time.sleep(0.2)
    server.down()


if __name__ == "__main__":
    sys.exit(main())
