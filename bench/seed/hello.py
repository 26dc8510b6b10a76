"""Hello-world WSGI app for benchmarks (Python 2 and 3): 13-byte text/plain body."""

BODY = b"Hello, world!"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]


def app(environ, start_response):
    start_response("200 OK", list(HEADERS))
    return [BODY]


application = app
