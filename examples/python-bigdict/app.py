"""The seed paper's Flask dict benchmark: a large in-memory dict built at init.

BIGDICT_N int pairs (10_000_000 is about the paper's 1.3 GB). Every value is a fixed function of its key,
so the checksum of a correct restore is known in advance:
    checksum = sum(k * value(k) for k in range(N)) mod (2**61 - 1)
GET /          looks up a random key
GET /checksum  {"n", "checksum", "requests"} computed over the dict as it is in memory
"""
import os
import random
import signal
import sys

from flask import Flask, jsonify
from werkzeug.serving import make_server

READY = "python-bigdict: ready"
MOD = (1 << 61) - 1
MULT = 0x9E3779B97F4A7C15  # golden-ratio multiplier: values spread over [0, MOD), and are not small ints


def value_of(key):
    return (key * MULT) % MOD


def build(n):
    return {k: value_of(k) for k in range(n)}


def checksum(d):
    total = 0
    for k, v in d.items():
        total = (total + k * v) % MOD
    return total


app = Flask(__name__)
DATA = {}
requests = 0


@app.before_request
def count():
    global requests
    requests += 1


@app.get("/")
def lookup():
    if not DATA:
        return "empty dict\n", 200, {"Content-Type": "text/plain; charset=utf-8"}
    key = random.randrange(len(DATA))
    return f"dict[{key}] = {DATA[key]}\n", 200, {"Content-Type": "text/plain; charset=utf-8"}


@app.get("/checksum")
def sum_route():
    return jsonify(n=len(DATA), checksum=checksum(DATA), requests=requests)


def reseed(_signum, _frame):
    # Sent by initless once this process is restored (function.toml restore_signal): every instance
    # restored from one snapshot would otherwise draw the same "random" keys.
    random.seed()


def main():
    signal.signal(signal.SIGUSR2, reseed)
    n = int(os.environ.get("BIGDICT_N", "100000"))
    port = int(os.environ.get("PORT", "9000"))
    DATA.update(build(n))
    # Listen first, then announce: the snapshot is taken when the phrase appears.
    server = make_server("0.0.0.0", port, app, threaded=False)
    print(f"{READY} (n={n})", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
