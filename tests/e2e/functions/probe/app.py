# A function that reports what it sees from inside its sandbox (stdlib only, one thread).
#   /              "ok"
#   /pid           its own pid
#   /procs         the numeric entries of /proc, comma separated
#   /status        /proc/self/status lines: Cap*, NoNewPrivs
#   /hostname      its hostname
#   /write?NAME    writes /NAME (in its root) with "written by PID", answers the path (500 and the error if
#                  it cannot)
#   /exists?PATH   "yes" or "no"
#   /connect?PORT  tries TCP to 127.0.0.1:PORT (or ?HOST:PORT), answers "connected <first bytes>" or the error
#   /hog           allocates and touches memory until the kernel kills it
#   /crash         exits with status 3 in the middle of the request
import os
import socket
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, text, status=200):
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path, _, arg = self.path.partition("?")
        if path == "/":
            self.answer("ok")
        elif path == "/pid":
            self.answer(str(os.getpid()))
        elif path == "/procs":
            self.answer(",".join(sorted((e for e in os.listdir("/proc") if e.isdigit()), key=int)))
        elif path == "/status":
            with open("/proc/self/status") as f:
                lines = [l for l in f if l.startswith(("Cap", "NoNewPrivs"))]
            self.answer("".join(lines))
        elif path == "/hostname":
            self.answer(socket.gethostname())
        elif path == "/write":
            target = "/" + arg
            try:
                with open(target, "w") as f:
                    f.write(f"written by {os.getpid()}")
                self.answer(target)
            except OSError as e:
                self.answer(str(e), 500)
        elif path == "/exists":
            self.answer("yes" if os.path.exists(arg) else "no")
        elif path == "/connect":
            host, _, port = arg.rpartition(":")
            try:
                c = socket.create_connection((host or "127.0.0.1", int(port)), timeout=2)
                c.settimeout(0.5)
                try:
                    got = c.recv(64).decode(errors="replace")
                except OSError:
                    got = ""
                c.close()
                self.answer(f"connected {got}".rstrip())
            except OSError as e:
                self.answer(f"refused: {e}")
        elif path == "/hog":
            chunks = []
            while True:
                chunks.append(b"x" * (4 << 20))
        elif path == "/crash":
            os._exit(3)
        else:
            self.answer("not found", 404)


server = HTTPServer(("127.0.0.1", int(os.environ.get("PORT", "9000"))), Handler)
print("probe: ready", flush=True)
server.serve_forever()
