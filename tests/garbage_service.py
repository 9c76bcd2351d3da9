"""A stand-in for a role's service that answers what a broken proxy would: not our JSON.

``python -m tests.garbage_service PORT`` serves until killed. ``GET /health`` is an HTML
error page with 503, ``/stats`` a 200 that is not JSON, ``/backup/info`` JSON of the wrong
shape, ``/readyz`` 200; ``GET /hits`` says how many ``/health`` calls it answered.
"""

from __future__ import annotations

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ANSWERS = {
    "/health": (503, "text/html", b"<html><body><h1>503 Service Unavailable</h1></body></html>"),
    "/stats": (200, "application/json", b"upstream connect error or disconnect/reset"),
    "/backup/info": (200, "application/json", b'{"host": 5432, "port": "db"}'),
    "/readyz": (200, "application/json", b'{"status": "ready"}'),
}


class Garbage(BaseHTTPRequestHandler):
    hits = 0
    lock = threading.Lock()

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path == "/health":
            with Garbage.lock:
                Garbage.hits += 1
        if path == "/hits":
            answer = (200, "text/plain", str(Garbage.hits).encode())
        else:
            answer = ANSWERS.get(path, (404, "text/plain", b"not found"))
        status, content_type, body = answer
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test reads answers, not access lines."""


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Garbage).serve_forever()
