"""An EC2 instance metadata endpoint (IMDSv2) for one test host: the parts tern's spot poller reads.

    python tests/net/spot_metadata.py --host 169.254.169.254 --port 80 --trigger FILE

PUT /latest/api/token answers a token (the X-aws-ec2-metadata-token-ttl-seconds header is
required, as on EC2); GET /latest/meta-data/spot/instance-action, with that token, answers 404
until FILE exists, then 200 with {"action": "terminate", "time": "<now + 2 min>"}, as EC2 does
once it has scheduled the interruption. Anything else is 404; a wrong or missing token is 401.
"""

import argparse
import datetime
import http.server
import json
import os
import secrets

TOKEN = secrets.token_hex(16)


class Handler(http.server.BaseHTTPRequestHandler):
    trigger = ""

    def log_message(self, *args):
        pass

    def reply(self, status, body=b"", ctype="text/plain"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self):
        if self.path != "/latest/api/token":
            return self.reply(404)
        if not self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
            return self.reply(400, b"missing X-aws-ec2-metadata-token-ttl-seconds")
        self.reply(200, TOKEN.encode())

    def do_GET(self):
        if self.headers.get("X-aws-ec2-metadata-token") != TOKEN:
            return self.reply(401)
        if self.path != "/latest/meta-data/spot/instance-action" or not os.path.exists(self.trigger):
            return self.reply(404)
        when = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=2)
        body = {"action": "terminate", "time": when.strftime("%Y-%m-%dT%H:%M:%SZ")}
        self.reply(200, json.dumps(body).encode(), "application/json")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="169.254.169.254")
    parser.add_argument("--port", type=int, default=80)
    parser.add_argument("--trigger", required=True, help="the notice is given once this file exists")
    args = parser.parse_args()
    Handler.trigger = args.trigger
    http.server.ThreadingHTTPServer((args.host, args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
