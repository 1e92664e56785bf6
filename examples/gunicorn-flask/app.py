"""Flask behind gunicorn with 3 prefork workers, for initless (see examples/README.md, "Frameworks").

The app is loaded once in the gunicorn master (preload_app) and the workers are forked from it, so the
request counter lives in memory the master maps before forking: an anonymous shared mapping guarded by a
multiprocessing lock (a POSIX semaphore). Every worker counts into it, so the count continues across a
restore whichever worker answers.
"""
import mmap
import multiprocessing
import os
import struct
import time

from flask import Flask, request
from gunicorn.workers.sync import SyncWorker

READY = "gunicorn-flask: ready"
WORKERS = int(os.environ.get("GUNICORN_WORKERS", "3"))

# Slot 0: requests answered; slot 1: workers that finished their init (see post_worker_init).
_shared = mmap.mmap(-1, 16)  # MAP_SHARED | MAP_ANONYMOUS: forked workers see one copy
_lock = multiprocessing.Lock()


def _add(slot, n=1):
    with _lock:
        (value,) = struct.unpack_from("q", _shared, slot * 8)
        value += n
        struct.pack_into("q", _shared, slot * 8, value)
        return value


app = Flask(__name__)


@app.get("/")
def hello():
    n = _add(0)
    # ?sleep_ms=N: a slow request. The restore suite uses it to give gunicorn's arbiter time to kill workers
    # it takes for hung (a heartbeat older than `timeout`); it would start new ones, which workers_started
    # counts.
    time.sleep(int(request.args.get("sleep_ms", "0")) / 1000)
    body = (f"hello from gunicorn (flask) worker pid={os.getpid()} requests={n} "
            f"workers_started={_add(1, 0)}\n")
    return body, 200, {"Content-Type": "text/plain; charset=utf-8"}


def worker_ready():
    """Called by each worker once it is initialised; the last of them prints the ready phrase."""
    if _add(1) == WORKERS:
        print(READY, flush=True)


class SharedMemoryHeartbeat:
    """Stands in for gunicorn's WorkerTmp, whose heartbeat is an unlinked temp file open for writing
    (initless cannot snapshot that: rule "no files open for writing when ready").

    The worker stores CLOCK_MONOTONIC at each notify() in memory shared with the master; last_update()
    turns its age back into wall-clock time, which is what the arbiter compares with time.time(). The
    age is measured in monotonic time, which does not advance while the process is an image, so a
    worker restored an hour after its snapshot is not taken for a hung one and killed.
    """

    def __init__(self):
        self._mem = mmap.mmap(-1, 8)
        self.notify()
        # gunicorn marks the heartbeat fd close-on-exec in the worker; /dev/null stands in for it.
        self._fd = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)

    def notify(self):
        struct.pack_into("d", self._mem, 0, time.monotonic())

    def last_update(self):
        (beat,) = struct.unpack_from("d", self._mem, 0)
        return time.time() - (time.monotonic() - beat)

    def fileno(self):
        return self._fd

    def close(self):
        self._mem.close()
        os.close(self._fd)


class Worker(SyncWorker):
    """gunicorn's sync worker with the heartbeat in shared memory instead of an unlinked file."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.tmp.close()  # the temp file WorkerTmp made (already unlinked)
        self.tmp = SharedMemoryHeartbeat()
