"""A one-file Django project for initless: settings, URLs and views here, served by wsgiref.

The request counter is a row in an in-memory SQLite database opened through Django's database layer at
init, so a restored copy continues counting from the snapshot's row (an in-memory database is plain
process memory; Django keeps such a connection open across requests).
"""
import os
import sys
from wsgiref.simple_server import WSGIRequestHandler, make_server

import django
from django.conf import settings
from django.core.wsgi import get_wsgi_application
from django.db import connection, transaction
from django.http import HttpResponse, JsonResponse
from django.urls import path

READY = "django-hello: ready"

settings.configure(
    DEBUG=False,
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    SECRET_KEY="initless-example-not-secret",
    MIDDLEWARE=["django.middleware.common.CommonMiddleware"],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    INSTALLED_APPS=[],
    USE_TZ=True,
)
django.setup()


def count_request():
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute("UPDATE hits SET n = n + 1 WHERE id = 1")
        cur.execute("SELECT n FROM hits WHERE id = 1")
        return cur.fetchone()[0]


def hello(request):
    n = count_request()
    return HttpResponse(f"hello from django {django.get_version()} requests={n}\n",
                        content_type="text/plain; charset=utf-8")


def item(request, item_id):
    return JsonResponse({"item_id": item_id, "q": request.GET.get("q", "")})


urlpatterns = [path("", hello), path("items/<int:item_id>", item)]


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # no access log on stderr
        pass


def main():
    with connection.cursor() as cur:
        cur.execute("CREATE TABLE hits (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)")
        cur.execute("INSERT INTO hits (id, n) VALUES (1, 0)")
    port = int(os.environ.get("PORT", "9000"))
    # wsgiref answers HTTP/1.0 and closes each connection: none is open at the snapshot.
    server = make_server("0.0.0.0", port, get_wsgi_application(), handler_class=QuietHandler)
    print(READY, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
