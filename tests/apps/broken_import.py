"""A module that exists but fails to import: m2wsgi must say so, not "module not found"."""

import m2wsgi_no_such_dependency  # noqa: F401


def application(environ, start_response):
    start_response("200 OK", [])
    return [b""]
