# gunicorn settings for initless (gunicorn reads this file with -c).
import os

bind = "0.0.0.0:" + os.environ.get("PORT", "9000")
workers = int(os.environ.get("GUNICORN_WORKERS", "3"))
# Load the app in the master before forking, so the workers share its memory (and the counter).
preload_app = True
# The sync worker with its heartbeat in shared memory (app.Worker): gunicorn's own heartbeat is an
# unlinked file open for writing, which a snapshot refuses.
worker_class = "app.Worker"
# Seconds a worker may go without a heartbeat before the arbiter kills it (gunicorn's default: 30).
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
# Logs to stderr; no access log (it would only repeat each request).
loglevel = "warning"


def post_worker_init(worker):
    import app

    app.worker_ready()
