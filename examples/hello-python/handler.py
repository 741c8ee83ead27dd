"""A Flint function in Python: a small HTTP server the watchdog proxies to (mode=http).

It listens on $PORT (local mode gives every replica its own; in a container the default 5000
is fine) and answers every request with a greeting and what it was sent.
"""
import http.server
import json
import os

MAX_BODY = 1 << 20


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def read_body(self):
        """The request's body, or None when it is over MAX_BODY (a caller's length is not a
        reason to allocate it). http.server does not decode a chunked body (one whose length
        the caller did not know, e.g. streamed): it is read chunk by chunk."""
        if "chunked" not in self.headers.get("transfer-encoding", "").lower():
            length = int(self.headers.get("content-length") or 0)
            return self.rfile.read(length) if length <= MAX_BODY else None
        chunks, size_so_far = [], 0
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            size_so_far += size
            if size_so_far > MAX_BODY:
                return None
            if size == 0:
                # Trailers, if any, up to the empty line.
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline()

    def do_any(self):
        body = self.read_body()
        if body is None:
            self.close_connection = True
            self.send_error(413, "request body over 1 MiB")
            return
        body = body.decode(errors="replace")
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
