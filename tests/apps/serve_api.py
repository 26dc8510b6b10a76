"""m2wsgi.serve() from code (the Python package's API): serves probe.app.

Usage: python serve_api.py SEND_SPEC RECV_SPEC SEND_IDENT
"""

import sys

import m2wsgi
from probe import application as app

send_spec, recv_spec, ident = sys.argv[1:4]
print("serve_api: starting", flush=True)
m2wsgi.serve(app, send_spec, recv_spec, threads=2, send_ident=ident, shutdown_timeout=5)
print("serve_api: returned", flush=True)
