#!/usr/bin/env python2
"""Launch the old m2wsgi 0.5.2 (Python 2) under a modern pyzmq.

m2wsgi does `import zmq.core.poll` and calls `zmq.core.poll.select(...)`;
pyzmq 13+ removed the `zmq.core` package. We register a stand-in `zmq.core`
package whose `poll` attribute is pyzmq's own poll module, then run m2wsgi's
command-line entry point with sys.argv (less this launcher's option below), e.g.

    .bench/seed/venv/bin/python bench/seed/launcher.py --num-threads=4 \
        hello.app tcp://127.0.0.1:6801 tcp://127.0.0.1:6802

This script's directory is sys.path[0], so `hello.app` (bench/seed/hello.py)
can be named as the app.

With `--upload-root=DIR` (this launcher's option, taken out of sys.argv before m2wsgi sees it)
m2wsgi's handling of Mongrel2's async uploads is fixed, for the upload benchmarks. As released,
m2wsgi answers a request with a Content-Length on its `x-mongrel2-upload-start` notice and
reads the temp file while Mongrel2 is still writing it. Its reader is a C stdio file: once a
read has met the end of the file, glibc keeps returning nothing (the end-of-file flag is sticky)
while m2wsgi's wait sees the file grow and reads again, so a 10 MiB upload spins at 100 % CPU
and never ends. And with several threads or processes the start notice and the done message
reach different ones. Fixed, it ignores the start notice and serves the request when the
`x-mongrel2-upload-done` message arrives, from the complete file, which it deletes afterwards.
DIR is Mongrel2's chroot: the upload headers name the file relative to it.
"""
import sys
import types

import zmq

try:
    import zmq.core.poll  # very old pyzmq: nothing to do
except ImportError:
    from zmq.sugar import poll as _poll
    _core = types.ModuleType("zmq.core")
    _core.__path__ = []
    _core.poll = _poll
    sys.modules["zmq.core"] = _core
    sys.modules["zmq.core.poll"] = _poll
    zmq.core = _core

import os

import m2wsgi
from m2wsgi.io.base import WSGIHandler


def fix_uploads(root):
    serve = WSGIHandler.process_request
    input_file = WSGIHandler.get_input_file

    def process_request(self, req):
        start = req.headers.get("x-mongrel2-upload-start")
        if start is None:
            return serve(self, req)
        done = req.headers.get("x-mongrel2-upload-done")
        if done is None:
            return  # the start notice: the request is served on the done message
        if done != start:
            # m2wsgi's own check answers 500, on the branch for a body without a length (with
            # one it would ignore the done message and leave the client waiting).
            req.headers.pop("content-length", None)
            return serve(self, req)
        # Served as a request without an upload, whose body is the complete file.
        del req.headers["x-mongrel2-upload-start"]
        del req.headers["x-mongrel2-upload-done"]
        req.upload_path = os.path.join(root, start.lstrip("/"))
        try:
            serve(self, req)
        finally:
            try:
                os.unlink(req.upload_path)
            except EnvironmentError:
                pass

    def get_input_file(self, req):
        path = getattr(req, "upload_path", None)
        if path is None:
            return input_file(self, req)
        return open(path, "rb")

    WSGIHandler.process_request = process_request
    WSGIHandler.get_input_file = get_input_file


for arg in list(sys.argv[1:]):
    if arg.startswith("--upload-root="):
        sys.argv.remove(arg)
        fix_uploads(arg.split("=", 1)[1])

if __name__ == "__main__":
    m2wsgi.main()
    sys.exit(0)
