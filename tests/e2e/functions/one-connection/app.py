# e2e test function for `initless serve`: a single-threaded HTTP/1.1 server (Python's HTTPServer with
# keep-alive), which serves one connection at a time: it reads a kept-alive connection until its
# client closes it. GET / answers the count of requests it has served.
import os
from http.server import BaseHTTPRequestHandler, HTTPServer

count = 0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        global count
        count += 1
        body = f"count {count}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = HTTPServer(("127.0.0.1", int(os.environ.get("PORT", "9000"))), Handler)
print("one-connection: ready", flush=True)
server.serve_forever()
