# e2e test function for `initless serve`: a server whose accept queue is tiny (listen backlog 1) and
# which accepts one connection every 5 ms, so that a few clients at once overflow it and its kernel
# drops their SYNs. Each accepted connection is served on a thread of its own (HTTP/1.1 keep-alive).
import os
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = b"accepted"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class SlowAccept(ThreadingHTTPServer):
    request_queue_size = 1

    def get_request(self):
        time.sleep(0.005)
        return super().get_request()


server = SlowAccept(("127.0.0.1", int(os.environ.get("PORT", "9000"))), Handler)
print("slow-accept: ready", flush=True)
server.serve_forever()
