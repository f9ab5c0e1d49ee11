#!/usr/bin/env python3
"""A tool server for the telemetry suite: answers every request with JSON and appends the
request's `traceparent` (and Crane's run/step headers) to a log, one JSON object per line.
The first request of each (run, step) it sees when started with --fail-first gets a 503, so
the step is retried and two attempts show in the trace.

    trace_echo.py --listen 0.0.0.0:0 --log FILE [--fail-first]   # prints "listening on HOST:PORT"
"""
import argparse
import http.server
import json
import sys
import threading

seen = set()
lock = threading.Lock()


def handler(log_path, fail_first):
    class Handler(http.server.BaseHTTPRequestHandler):
        def _serve(self):
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            key = (self.headers.get("X-Crane-Run"), self.headers.get("X-Crane-Step"))
            with lock:
                first = key not in seen
                seen.add(key)
                with open(log_path, "a") as log:
                    log.write(json.dumps({
                        "traceparent": self.headers.get("traceparent"),
                        "run": key[0], "step": key[1],
                        "status": 503 if fail_first and first else 200,
                    }) + "\n")
            if fail_first and first:
                self.send_response(503)
                self.end_headers()
                return
            body = json.dumps({"echo": True}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _serve

        def log_message(self, *args):
            pass

    return Handler


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--fail-first", action="store_true")
    args = parser.parse_args()
    host, port = args.listen.rsplit(":", 1)
    server = http.server.ThreadingHTTPServer((host, int(port)), handler(args.log, args.fail_first))
    print(f"listening on {host}:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
