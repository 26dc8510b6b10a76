"""The WSGI application of the reliability soak (tests/soak.rs).

It gives byte for byte the answers of the raw Rust handlers the soak compares it with
(examples/streaming.rs for GET, examples/upload.rs for POST), so that one client checks both:

- GET ?bytes=N: N bytes with a Content-Length; byte k is b"a" + (k % 65536) % 26. Up to 64 KiB
  they go out as a list of one bytes object, above that as a generator of 64 KiB blocks.
- GET ?chunks=N&size=B&delay_ms=D: a generator (chunked on the wire) of N chunks of B bytes,
  chunk i being b"chunk %06d\\n" cut or padded with b"." to B bytes, its last byte b"\\n"; it
  sleeps D ms after each chunk (a client that leaves stops it: the server closes it).
- POST (any path): reads wsgi.input 64 KiB at a time and answers b"size=N crc32=XXXXXXXX\\n".

The path is not looked at: the soak puts a request number in it so that Mongrel2's access log
names every request.
"""

import time
import zlib
from urllib.parse import parse_qs

BLOCK = bytes(97 + i % 26 for i in range(65536))


def _param(q, name, default):
    v = q.get(name)
    return int(v[-1]) if v else default


def _chunk(i, size):
    line = b"chunk %06d\n" % i
    c = (line + b"." * size)[: max(size, 1)]
    return c[:-1] + b"\n"


def application(environ, start_response):
    if environ["REQUEST_METHOD"] == "POST":
        inp = environ["wsgi.input"]
        size, crc = 0, 0
        while True:
            b = inp.read(65536)
            if not b:
                break
            size += len(b)
            crc = zlib.crc32(b, crc)
        body = b"size=%d crc32=%08x\n" % (size, crc)
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    q = parse_qs(environ.get("QUERY_STRING", ""))
    headers = [("Content-Type", "application/octet-stream")]
    total = _param(q, "bytes", 0)
    if total > 0:
        start_response("200 OK", headers + [("Content-Length", str(total))])
        if total <= len(BLOCK):
            return [BLOCK[:total]]

        def blocks():
            left = total
            while left > 0:
                n = min(left, len(BLOCK))
                yield BLOCK[:n]
                left -= n

        return blocks()

    chunks, size = _param(q, "chunks", 10), _param(q, "size", 16)
    delay = _param(q, "delay_ms", 100) / 1000.0
    start_response("200 OK", headers)

    def stream():
        for i in range(chunks):
            yield _chunk(i, size)
            if delay:
                time.sleep(delay)

    return stream()
