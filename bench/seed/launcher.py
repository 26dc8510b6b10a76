#!/usr/bin/env python2
"""Launch the old m2wsgi 0.5.2 (Python 2) under a modern pyzmq.

m2wsgi does `import zmq.core.poll` and calls `zmq.core.poll.select(...)`;
pyzmq 13+ removed the `zmq.core` package. We register a stand-in `zmq.core`
package whose `poll` attribute is pyzmq's own poll module, then run m2wsgi's
command-line entry point with sys.argv unchanged, e.g.

    .bench/seed/venv/bin/python bench/seed/launcher.py --num-threads=4 \
        hello.app tcp://127.0.0.1:6801 tcp://127.0.0.1:6802

This script's directory is sys.path[0], so `hello.app` (bench/seed/hello.py)
can be named as the app.
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

import m2wsgi

if __name__ == "__main__":
    m2wsgi.main()
    sys.exit(0)
