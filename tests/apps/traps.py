"""For tests/wsgi_traps.rs: shows which interpreter and packages the embedded Python sees, and
prints without a newline at import (lost at exit unless m2wsgi flushes sys.stdout)."""

import atexit
import signal  # noqa: F401  (must not replace the SIGINT/SIGTERM handlers m2wsgi installed)
import sys
import time

import flask  # from the venv: fails if the embedded interpreter ignored VIRTUAL_ENV

print("traps-imported-without-newline", end="")
# Run by m2wsgi at a clean exit (it never finalises the interpreter, but runs these).
atexit.register(lambda: print(";atexit-ran", end=""))


def application(environ, start_response):
    if environ["PATH_INFO"] == "/sleep":
        time.sleep(1.5)
    body = ("prefix=%s\nflask=%s\nexecutable=%s\n" % (
        sys.prefix, flask.__file__, sys.executable)).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
