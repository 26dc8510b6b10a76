"""m2wsgi: serve Python WSGI applications behind Mongrel2.

The server is written in Rust (the ``m2wsgi`` crate); this package holds it as an extension
module, so that it runs in your own interpreter, with your virtualenv's packages. It installs
the ``m2wsgi`` command (also ``python -m m2wsgi``), the same command as the Rust binary::

    m2wsgi --num-threads 4 myapp:app tcp://127.0.0.1:9999 tcp://127.0.0.1:9998

and :func:`serve`, to start a server from code::

    import m2wsgi
    from myapp import app

    m2wsgi.serve(app, "tcp://127.0.0.1:9999", threads=4)
"""

import os
import sys

from ._m2wsgi import __version__, _main, serve

__all__ = ["__version__", "main", "serve"]


def main(argv=None):
    """Runs the ``m2wsgi`` command with ``argv`` (default: ``sys.argv[1:]``) and exits with its
    status. Worker processes (``--workers``) are started as ``python -m m2wsgi``."""
    if argv is None:
        argv = sys.argv[1:]
    status = _main(["m2wsgi", *argv], [sys.executable, "-m", "m2wsgi"])
    # As the Rust binary: the interpreter is not finalised (that would wait for threads the
    # application may have left running); the command has already run the atexit handlers.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a closed or broken stream: nothing more to write anyway
            pass
    os._exit(status)
