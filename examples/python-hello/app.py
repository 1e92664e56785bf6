"""Smallest Flask function for initless: initialise, listen, then say ready (see examples/README.md)."""
import os
import sys

from flask import Flask
from werkzeug.serving import make_server

READY = "python-hello: ready"

app = Flask(__name__)


@app.get("/")
def hello():
    return "hello from python (flask)\n", 200, {"Content-Type": "text/plain; charset=utf-8"}


def main():
    port = int(os.environ.get("PORT", "9000"))
    # make_server instead of app.run: the socket must be listening before the ready phrase is
    # printed, and app.run only returns when the server stops. threaded=False keeps one thread
    # and HTTP/1.0, so no keep-alive connection is left open when a snapshot is taken.
    server = make_server("0.0.0.0", port, app, threaded=False)
    print(READY, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
