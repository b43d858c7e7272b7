#!/usr/bin/env python3
"""hello: the smallest Slipway app.

Serves GET / with "hello from slipway" on the port in the PORT environment variable
(8080 when unset) and logs one line per request to stdout. Python 3 standard library
only, so it runs anywhere `python3` does: under the agent's process runtime, in a
container, or by hand (`PORT=8080 python3 app.py`).
"""

import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GREETING = b"hello from slipway\n"


class Hello(BaseHTTPRequestHandler):
    server_version = "hello/1"

    def do_GET(self):
        if self.path.split("?", 1)[0] != "/":
            self.send_error(404, "not found")
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(GREETING)))
        self.end_headers()
        self.wfile.write(GREETING)

    def log_message(self, format, *args):
        # One line per request on stdout (the default is stderr), flushed at once so the
        # platform's log stream sees it immediately.
        print(f"{self.address_string()} {format % args}", flush=True)


def main():
    port = int(os.environ.get("PORT", "8080"))
    server = ThreadingHTTPServer(("0.0.0.0", port), Hello)
    # Stop cleanly on SIGTERM, as the runtimes ask processes to stop.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"hello listening on port {port}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
