#!/usr/bin/env python3
"""What the Pritunl probe meets at a Pritunl web server, for the gateway's tests.

Pritunl (a MongoDB-backed server, not packaged for Debian or PyPI) serves its console over HTTPS
with a self-signed certificate and answers `GET /ping` (and `/check`) without authentication:
200 with an empty body while its host is current, 504 when it is behind. This server does the same
on 127.0.0.1, with a certificate made for the run by openssl, and answers 404 to anything else.
`--ping-status` makes `/ping` answer another status (a server that is not Pritunl answers 404).
Prints {"event": "ready", "port": N} once it listens.
"""
import argparse
import http.server
import json
import os
import ssl
import subprocess
import sys
import tempfile


class Handler(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):  # noqa: N802 - the stdlib's name
        code = self.status if self.path in ("/ping", "/check") else 404
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, fmt, *args):
        sys.stderr.write("pritunl-ping: " + (fmt % args) + "\n")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ping-status", type=int, default=200)
    parser.add_argument("--plain", action="store_true", help="HTTP instead of HTTPS")
    args = parser.parse_args()
    Handler.status = args.ping_status
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if not args.plain:
        d = tempfile.mkdtemp(prefix="pritunl-ping-")
        cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=pritunl.test",
                        "-keyout", key, "-out", cert], check=True, capture_output=True)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print(json.dumps({"event": "ready", "port": server.server_address[1]}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
