"""A Flint function in Python: a small HTTP server the watchdog proxies to (mode=http).

It listens on $PORT (local mode gives every replica its own; in a container the default 5000
is fine) and answers every request with a greeting and what it was sent.
"""
import http.server
import json
import os


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_any(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length).decode(errors="replace")
        out = json.dumps({
            "greeting": "Hello from Python",
            "method": self.command,
            "path": self.path,
            "body": body,
        }).encode() + b"\n"
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_DELETE = do_any

    def log_message(self, fmt, *args):
        print("request: " + fmt % args, flush=True)


port = int(os.environ.get("PORT", "5000"))
print(f"hello-python listening on {port}", flush=True)
http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
