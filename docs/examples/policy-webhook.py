#!/usr/bin/env python3
"""A bulkhead policy webhook (config.policy.webhook) that refuses execs as root.

Python standard library only. bulkhead POSTs one JSON question per create, exec and
forward of the tenant:

    {"tenant": "a3cf", "principal": "uid:0", "action": "exec",
     "target": {"node": "a3cf-1", "mode": "foreground"},
     "request": {"cmd": "id", "args": [], "env": [], "cwd": null,
                 "uid": 0, "gid": 0, "stdin": false, "timeout_ms": null}}

and expects {"allow": true}, {"allow": false, "reason": "..."} or
{"allow": true, "request": {...}} (a narrowed request; see docs/operator-guide.md,
"Admission policy"). This one denies every exec (shell included) whose uid is 0 and
allows everything else.

    python3 policy-webhook.py --listen 127.0.0.1:9000     # url: http://127.0.0.1:9000/admit
    python3 policy-webhook.py --unix /run/policy.sock     # url: unix:///run/policy.sock
"""

import argparse
import json
import os
import socketserver
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

MAX_QUESTION = 1 << 20


def decide(question):
    """The answer to one question."""
    if question.get("action") == "exec" and question.get("request", {}).get("uid") == 0:
        return {
            "allow": False,
            "reason": "execs as root are not allowed here: run the command with a non-root uid, e.g. uid=1000",
        }
    return {"allow": True}


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        try:
            length = int(self.headers.get("Content-Length", "0"))
            if length > MAX_QUESTION:
                raise ValueError("question too large")
            question = json.loads(self.rfile.read(length))
            answer = decide(question)
        except (ValueError, json.JSONDecodeError) as e:
            self.send_error(400, str(e))
            return
        body = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        print(
            f"{question.get('tenant')} {question.get('principal')} {question.get('action')}: "
            f"{'allow' if answer['allow'] else 'deny'}",
            file=sys.stderr,
            flush=True,
        )

    def address_string(self):
        # A UNIX socket's peer has no address.
        return str(self.client_address or "unix")

    def log_message(self, fmt, *args):
        pass  # one line per decision is printed above


class UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class TCPHTTPServer(socketserver.ThreadingMixIn, HTTPServer):
    daemon_threads = True


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = p.add_mutually_exclusive_group()
    g.add_argument("--listen", default="127.0.0.1:9000", help="HOST:PORT (default 127.0.0.1:9000)")
    g.add_argument("--unix", help="a UNIX socket path to listen on instead")
    a = p.parse_args()
    if a.unix:
        if os.path.exists(a.unix):
            os.unlink(a.unix)
        server = UnixHTTPServer(a.unix, Handler)
        where = f"unix://{a.unix}"
    else:
        host, port = a.listen.rsplit(":", 1)
        server = TCPHTTPServer((host, int(port)), Handler)
        where = f"http://{a.listen}/admit"
    print(f"policy webhook listening on {where}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
