"""The smallest WSGI application: `m2wsgi hello_app:application tcp://127.0.0.1:9999`."""

BODY = b"Hello, world!\n"


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))])
    return [BODY]
