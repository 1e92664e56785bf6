# GET / maps work over the pool made at init and answers
#   "<request count> <sum of squares 0..9> <ok|fail: why>"
# ok when the answers came from the pool's own worker processes (pids recorded at init).
import http.server
import multiprocessing as mp
import os


def square(x):
    return (x * x, os.getpid())


pool = mp.get_context("fork").Pool(2)
workers = sorted(p.pid for p in pool._pool)
pool.map(square, range(4))
count = 0


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        global count
        count += 1
        res = pool.map(square, range(10), chunksize=1)
        seen = sorted(set(pid for _, pid in res))
        verdict = "ok" if set(seen) <= set(workers) else f"fail: answers from {seen}, pool {workers}"
        body = f"{count} {sum(v for v, _ in res)} {verdict}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = http.server.HTTPServer(("0.0.0.0", 9000), Handler)
print("py-mp-pool: ready", flush=True)
server.serve_forever()
