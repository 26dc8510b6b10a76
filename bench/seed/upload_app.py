"""Reads the request body from wsgi.input in 64 KiB pieces and answers with its size and
CRC-32 (`size=N crc32=XXXXXXXX`), as examples/upload.rs does: for benchmarks of uploads.
With `?crc=0` it only reads (the CRC-32 is then reported as 0): the bridge's own cost, without
zlib's checksum (slower than the raw handler's SIMD one)."""

import zlib


def app(environ, start_response):
    body = environ["wsgi.input"]
    checksum = "crc=0" not in environ.get("QUERY_STRING", "")
    size, crc = 0, 0
    while True:
        piece = body.read(65536)
        if not piece:
            break
        size += len(piece)
        if checksum:
            crc = zlib.crc32(piece, crc)
    out = ("size=%d crc32=%08x" % (size, crc & 0xFFFFFFFF)).encode()  # signed on Python 2
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(out)))])
    return [out]
