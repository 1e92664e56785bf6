# e2e test function for `initless serve`: a stateful counter over HTTP/1.1 keep-alive (stdlib only).
#   /              "count N": N counts this instance's requests to / (continues on a warm instance)
#   /slow?ms=N     answers "slept N" after N ms
#   /echo          answers the request's body (any method), with its length in X-Length
#   /big?mb=N      answers N MiB of 'x'
#   /flood?mb=N    prints N MiB of 1 KiB lines to stdout (a MiB every 5 ms), then answers "flooded N"
#   /crash         exits with status 3 in the middle of the request
#   /hang          never answers
#   /hog           allocates and touches memory until the kernel kills it
#   /headers       the request's headers, one per line
#   /fds           this process's open fds, "fd -> target" per line
#   /forged        299 "Made Up" with the gateway's own fields (X-Initless-*, Server-Timing) set by the function
#   /raw?what=W    a broken response: W = garbage (not HTTP), bighead (a 300 KiB header), half (the
#                  connection closed after 9 of 100 body bytes), interim (a 103 Early Hints, then a 200 "final"),
#                  switch (a 101 Switching Protocols nobody asked for), status99 (a status under 100),
#                  endless-chunk (a chunked 200 whose first chunk-size line never ends: 64 KiB writes of
#                  '1' until the connection breaks, 30 s at most)
#   /early?close=C answers 413 "too big" without reading the request's body; C = 1: then closes the
#                  connection (as Go's server does past 256 KiB unread), 2: then reads the body (as Node
#                  does), else keeps it open and waits
#   /late?ms=N     answers "on time", then N ms later writes a whole second response ("stale!") on the
#                  same connection, as a function that answers twice would
#   /stream?n=N&ms=M&then=T  a chunked body of N lines "tick I", one every M ms, then T = end (the last
#                  chunk), crash (exits with status 5) or hang (never ends)
#   /download?mb=N N MiB of 'd' with its length declared, written a MiB at a time
#   /untilclose?kb=N  N KiB of 'u' with no length, delimited by closing the connection
#   /overshoot     declares 300 KiB, sends them and then a whole forged response ("forged") on the same
#                  connection, as if it were the answer to the next request
#   /nocontent     204, no body; HEAD of any path: 200 with a Content-Length of 5 and no body (of
#                  /raw?what=interim: a 103 first)
import os
import sys
import time
from urllib.parse import parse_qs
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

count = 0
EARLY_HINTS = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"  # an interim response, for /raw?what=interim


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, body, status=200, extra=None):
        if isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def handle_any(self):
        global count
        path, _, arg = self.path.partition("?")
        if path == "/early":
            self.answer("too big", 413)
            self.wfile.flush()
            how = arg.split("=")[-1]
            if how == "1":
                self.close_connection = True
            elif how == "2":  # reads the body after answering, as Node does
                left = int(self.headers.get("Content-Length") or 0)
                while left > 0:
                    got = self.rfile.read1(min(left, 65536))
                    if not got:
                        break
                    left -= len(got)
            else:
                time.sleep(30)  # the body stays unread; the gateway must not wait for it
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if path == "/":
            count += 1
            print(f"counter: request {count}", flush=True)
            self.answer(f"count {count}")
        elif path == "/slow":
            ms = int(arg.split("=")[-1] or 100)
            time.sleep(ms / 1000)
            self.answer(f"slept {ms}")
        elif path == "/readlater":  # reads its own code after a while: it must still be there
            ms = int(arg.split("=")[-1] or 100)
            time.sleep(ms / 1000)
            with open("/function/app.py", "rb") as f:
                self.answer(f"app.py has {len(f.read())} bytes")
        elif path == "/echo":
            self.answer(body, extra={"X-Length": str(len(body)), "X-Method": self.command})
        elif path == "/big":
            mb = int(arg.split("=")[-1] or 1)
            self.answer(b"x" * (mb << 20))
        elif path == "/flood":
            mb = int(arg.split("=")[-1] or 1)
            chunk = (("y" * 1023 + "\n") * 1024).encode()
            for _ in range(mb):
                os.write(1, chunk)
                time.sleep(0.005)
            self.answer(f"flooded {mb}")
        elif path == "/crash":
            os._exit(3)
        elif path == "/hang":
            time.sleep(100000)
        elif path == "/hog":
            chunks = []
            while True:
                chunks.append(bytearray(4 << 20))
        elif path == "/fds":
            lines = []
            for fd in sorted(os.listdir("/proc/self/fd"), key=int):
                try:
                    lines.append(f"{fd} -> {os.readlink('/proc/self/fd/' + fd)}\n")
                except OSError:
                    pass
            self.answer("".join(lines))
        elif path == "/raw":
            what = arg.split("=")[-1]
            if what == "interim":
                self.wfile.write(EARLY_HINTS)
                self.wfile.flush()
                self.answer("final")
                return
            if what == "endless-chunk":
                self.wfile.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                until = time.time() + 30
                try:
                    while time.time() < until:
                        self.wfile.write(b"1" * 65536)
                except OSError:
                    pass
                self.close_connection = True
                return
            if what == "garbage":
                self.wfile.write(b"NOT HTTP AT ALL\r\n\r\n")
            elif what == "switch":
                self.wfile.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n")
            elif what == "status99":
                self.wfile.write(b"HTTP/1.1 099 Low\r\nContent-Length: 2\r\n\r\nok")
            elif what == "bighead":
                self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (300 << 10) + b"\r\nContent-Length: 2\r\n\r\nok")
            else:
                self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return
            self.wfile.flush()
            time.sleep(0.5)  # still connected: the gateway must judge the bytes, not wait for the close
        elif path == "/late":
            self.answer("on time")
            self.wfile.flush()
            time.sleep(int(arg.split("=")[-1] or 200) / 1000)
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nstale!")
        elif path == "/forged":
            self.send_response(299, "Made Up")
            for k, v in (("X-Initless-Start", "forged"), ("Server-Timing", "fake;dur=1"),
                         ("X-Initless-Instance", "forged"), ("Content-Length", "6")):
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(b"forged")
        elif path == "/stream":
            q = {k: v[-1] for k, v in parse_qs(arg).items()}
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(int(q.get("n", "3"))):
                line = f"tick {i}\n".encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                time.sleep(int(q.get("ms", "100")) / 1000)
            then = q.get("then", "end")
            if then == "crash":
                os._exit(5)
            if then == "hang":
                time.sleep(100000)
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/download":
            mb = int(arg.split("=")[-1] or 1)
            self.send_response(200)
            self.send_header("Content-Length", str(mb << 20))
            self.end_headers()
            piece = b"d" * (1 << 20)
            for _ in range(mb):
                self.wfile.write(piece)
        elif path == "/overshoot":
            self.send_response(200)
            self.send_header("Content-Length", str(300 << 10))
            self.end_headers()
            self.wfile.write(b"o" * (300 << 10) + b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged")
        elif path == "/untilclose":
            kb = int(arg.split("=")[-1] or 1)
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"u" * (kb << 10))
            self.close_connection = True
        elif path == "/nocontent":
            self.send_response(204)
            self.end_headers()
        elif path == "/headers":
            self.answer("".join(f"{k}: {v}\n" for k, v in self.headers.items()))
        else:
            self.answer("not found", 404)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = handle_any

    def do_HEAD(self):
        if self.path == "/raw?what=interim":  # the 103 before the head, as for GET
            self.wfile.write(EARLY_HINTS)
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.send_header("X-Head", "yes")
        self.end_headers()


server = ThreadingHTTPServer(("127.0.0.1", int(os.environ.get("PORT", "9000"))), Handler)
server.daemon_threads = True
# A test may make a later boot slow to get ready (the registry's copy of the code gets this file).
if os.path.exists("/function/ready-delay"):
    time.sleep(float(open("/function/ready-delay").read()))
print("counter: ready", flush=True)
server.serve_forever()
