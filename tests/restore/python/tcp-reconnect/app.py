"""Keeps a connection to a line-protocol server (standing for a database) opened at init.

GET / sends "ping" on it and answers "db: <reply>; reconnects: <n>". A query that finds the connection
broken (reset, closed, end of stream) reconnects once and asks again, as database clients do.
"""
import http.server
import socket

DB = ("127.0.0.1", 9432)


class Db:
    def __init__(self):
        self.reconnects = 0
        self.sock = socket.create_connection(DB, timeout=5)

    def _ask(self, line):
        self.sock.sendall(line.encode() + b"\n")
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = self.sock.recv(256)
            if not chunk:
                raise ConnectionResetError("the server ended the connection")
            reply += chunk
        return reply.decode().strip()

    def query(self, line):
        try:
            return self._ask(line)
        except (ConnectionError, OSError):
            self.sock.close()
            self.reconnects += 1
            self.sock = socket.create_connection(DB, timeout=5)
            return self._ask(line)


db = Db()
db.query("hello")  # the connection is established and used before the snapshot


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"db: {db.query('ping')}; reconnects: {db.reconnects}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = http.server.HTTPServer(("0.0.0.0", 9000), Handler)
print("py-tcp-reconnect: ready", flush=True)
server.serve_forever()
