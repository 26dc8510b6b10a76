"""The application of the --workers tests: hello, which process answered, and a crash."""

import os


def application(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path.endswith("/crash"):
        os._exit(3)
    if path.endswith("/sleep"):
        import time

        time.sleep(float(environ.get("QUERY_STRING", "t=1").partition("=")[2] or 1))
    if path.endswith("/pid"):
        body = str(os.getpid()).encode()
    elif "/echo/" in path:
        # The request's own path, after a pause: answers of concurrent requests cross if
        # replies go to the wrong client.
        import time

        time.sleep(0.05)
        body = path.encode("latin-1")
    else:
        body = b"Hello, world!"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
