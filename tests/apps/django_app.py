"""A single-file Django project for tests/wsgi_e2e.rs: a CSRF-protected form, FileResponse,
StreamingHttpResponse and a view echoing a non-ASCII path."""

import atexit
import os
import tempfile

from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="m2wsgi-tests-not-secret",
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=["*"],
    MIDDLEWARE=["django.middleware.csrf.CsrfViewMiddleware"],
    INSTALLED_APPS=[],
    USE_TZ=True,
    LOGGING_CONFIG=None,
)

import django  # noqa: E402

django.setup()

from django.http import FileResponse, HttpResponse, StreamingHttpResponse  # noqa: E402
from django.middleware.csrf import get_token  # noqa: E402
from django.urls import path, re_path  # noqa: E402

FILE_SIZE = 200000
FILE_PATH = os.path.join(tempfile.gettempdir(), "m2wsgi-django-%d.bin" % os.getpid())
atexit.register(lambda: os.path.exists(FILE_PATH) and os.remove(FILE_PATH))
with open(FILE_PATH, "wb") as f:
    f.write(bytes((i * 7) % 256 for i in range(FILE_SIZE)))


def form(request):
    if request.method == "POST":
        return HttpResponse("posted %s" % request.POST["name"], content_type="text/plain")
    token = get_token(request)
    return HttpResponse(
        '<form method="post"><input type="hidden" name="csrfmiddlewaretoken" value="%s">'
        '<input name="name"></form>' % token
    )


def file(request):
    return FileResponse(open(FILE_PATH, "rb"), content_type="application/octet-stream")


def stream(request):
    return StreamingHttpResponse(("part%d;" % i for i in range(5)), content_type="text/plain")


def echo_path(request, rest):
    return HttpResponse(
        "path=%s info=%s rest=%s" % (request.path, request.path_info, rest),
        content_type="text/plain; charset=utf-8",
    )


urlpatterns = [
    path("form/", form),
    path("file/", file),
    path("stream/", stream),
    re_path(r"^p/(?P<rest>.*)$", echo_path),
]

from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()
