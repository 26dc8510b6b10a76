"""A 1 MiB response (the list fast path: one bytes object), for benchmarks of large bodies."""

BODY = b"x" * (1 << 20)
HEADERS = [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(BODY)))]


def app(environ, start_response):
    start_response("200 OK", list(HEADERS))
    return [BODY]
