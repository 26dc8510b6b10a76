"""A small WSGI application for scripts/demo.sh: a form, a file upload, a streaming response and
an environ dump, in plain WSGI (no framework needed).

    m2wsgi demo_app tcp://127.0.0.1:9999          # from this directory
"""

import hashlib
import html
import time
from urllib.parse import parse_qs

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>m2wsgi demo</title>
<style>body{{font-family:sans-serif;max-width:46em;margin:2em auto}}pre{{background:#eee;padding:1em}}</style>
</head><body>
<h1>m2wsgi demo</h1>
<p>Mongrel2 &rarr; ZeroMQ &rarr; m2wsgi (Rust) &rarr; this Python WSGI application.</p>
{body}
<hr><p><a href="{root}/">home</a> &middot; <a href="{root}/stream">streaming</a> &middot;
<a href="{root}/environ">environ</a> &middot; <a href="/hello">/hello (another handler)</a></p>
</body></html>
"""

FORMS = """
<h2>A form</h2>
<form method="post" action="{root}/form">
  <input name="name" placeholder="your name"> <button>send</button>
</form>
<h2>An upload</h2>
<p>Bodies above Mongrel2's <code>limits.content_length</code> reach the application through a
temp file, streamed by <code>wsgi.input</code>.</p>
<form method="post" action="{root}/upload" enctype="multipart/form-data">
  <input type="file" name="file"> <button>upload</button>
</form>
"""


def page(start_response, body, root, status="200 OK"):
    data = PAGE.format(body=body, root=root).encode("utf-8")
    start_response(status, [("Content-Type", "text/html; charset=utf-8"),
                            ("Content-Length", str(len(data)))])
    return [data]


def read_body(environ):
    """Reads wsgi.input in 64 KiB blocks; returns (size, sha256, first 4 KiB)."""
    inp = environ["wsgi.input"]
    h = hashlib.sha256()
    size = 0
    head = b""
    while True:
        block = inp.read(65536)
        if not block:
            break
        if len(head) < 4096:
            head += block[: 4096 - len(head)]
        h.update(block)
        size += len(block)
    return size, h.hexdigest(), head


def application(environ, start_response):
    root = environ.get("SCRIPT_NAME", "")
    path = environ.get("PATH_INFO", "/") or "/"
    method = environ["REQUEST_METHOD"]

    if path == "/" and method in ("GET", "HEAD"):
        return page(start_response, FORMS.format(root=root), root)

    if path == "/form" and method == "POST":
        size, _, head = read_body(environ)
        fields = parse_qs(head.decode("latin-1"))
        name = fields.get("name", ["stranger"])[0]
        return page(start_response, "<p>Hello, %s!</p>" % html.escape(name), root)

    if path == "/upload" and method == "POST":
        size, digest, _ = read_body(environ)
        body = "<p>Received %d bytes (multipart body), sha256 <code>%s</code>.</p>" % (size, digest)
        return page(start_response, body, root)

    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])

        def ticks():
            for i in range(1, 6):
                yield ("tick %d of 5 at %s\n" % (i, time.strftime("%H:%M:%S"))).encode()
                time.sleep(0.5)
            yield b"done: each line left the server as soon as it was yielded\n"
        return ticks()

    if path == "/environ":
        rows = "\n".join("%s = %r" % (k, environ[k]) for k in sorted(environ))
        return page(start_response, "<pre>%s</pre>" % html.escape(rows), root)

    return page(start_response, "<p>Nothing at %s</p>" % html.escape(path), root, "404 Not Found")
