"""A WSGI application that probes the server, one case per first PATH_INFO segment.

Used by tests/wsgi_bridge.rs (in-process) and tests/wsgi_e2e.rs (through Mongrel2, also wrapped
in wsgiref.validate.validator by validated.py). Cases that record something (close() calls,
disconnects) key it by the `token` query parameter, since tests run in parallel.
"""

import hashlib
import io
import sys
import threading
import time
from urllib.parse import parse_qs

# token -> number of close() calls / flags seen by long-running cases
CLOSED = {}
SEEN = {}
_lock = threading.Lock()


def _q(environ):
    return {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True).items()}


def _text(start_response, body, status="200 OK", extra=()):
    if isinstance(body, str):
        body = body.encode("utf-8")
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))] + list(extra))
    return [body]


def _record(store, token, value=1):
    if token:
        with _lock:
            store[token] = store.get(token, 0) + value


class Closing:
    """An iterable with close() that counts its calls under a token."""

    def __init__(self, it, token):
        self.it = iter(it)
        self.token = token

    def __iter__(self):
        return self

    def __next__(self):
        return next(self.it)

    def close(self):
        _record(CLOSED, self.token)


# ---------------------------------------------------------------------------------------------
# environ and input

def environ_case(environ, start_response):
    lines = []
    for k in sorted(environ):
        v = environ[k]
        if k in ("wsgi.input", "wsgi.errors", "wsgi.file_wrapper", "m2wsgi.is_disconnected"):
            lines.append("%s=<%s>" % (k, type(v).__name__))
        else:
            lines.append("%s=%s" % (k, ascii(v)))
    return _text(start_response, "\n".join(lines) + "\n")


def input_case(environ, start_response):
    q = _q(environ)
    inp = environ["wsgi.input"]
    op = q.get("op", "read")
    out = []
    if op == "read":
        out.append(inp.read())
        out.append(inp.read())  # past the end: b''
    elif op == "read_neg":
        out.append(inp.read(-1))
    elif op == "readn":
        n = int(q.get("n", "3"))
        while True:
            b = inp.read(n)
            out.append(b)
            if not b:
                break
    elif op == "readline":
        size = int(q["size"]) if "size" in q else None
        while True:
            line = inp.readline() if size is None else inp.readline(size)
            out.append(line)
            if not line:
                break
    elif op == "readlines":
        hint = int(q["hint"]) if "hint" in q else None
        out.append(inp.readlines() if hint is None else inp.readlines(hint))
        out.append(inp.readlines())
    elif op == "iter":
        for line in inp:
            out.append(line)
        out.append(inp.read(10))
    elif op == "readinto":
        buf = bytearray(4)
        while True:
            n = inp.readinto(buf)
            out.append(bytes(buf[:n]))
            if not n:
                break
    elif op == "buffered":
        # io.BufferedReader over wsgi.input (needs readinto).
        out.append(io.BufferedReader(inp).read())
    elif op == "hash":
        h = hashlib.sha256()
        total = 0
        while True:
            b = inp.read(65536)
            if not b:
                break
            h.update(b)
            total += len(b)
        out.append(("%d %s" % (total, h.hexdigest())).encode())
    return _text(start_response, "\n".join(ascii(x) for x in out) + "\n")


def errors_case(environ, start_response):
    token = _q(environ).get("token", "")
    err = environ["wsgi.errors"]
    err.write("errors-line-%s\npartial-%s" % (token, token))
    err.writelines(["-more\n"])
    err.flush()
    return _text(start_response, "ok")


# ---------------------------------------------------------------------------------------------
# start_response

def status_case(environ, start_response):
    status = _q(environ).get("s", "200 OK")
    start_response(status, [("Content-Type", "text/plain")])
    return [b"status " + status.encode("latin-1")]


def headers_case(environ, start_response):
    start_response("200 OK", [
        ("Content-Type", "text/plain"),
        ("X-Latin", "caf\u00e9"),
        ("Set-Cookie", "a=1; Path=/"),
        ("Set-Cookie", "b=2; Path=/"),
        ("X-Empty", ""),
    ])
    return [b"headers"]


def late_case(environ, start_response):
    # start_response inside the first iteration: the status must still be the app's.
    def gen():
        start_response("201 Created", [("Content-Type", "text/plain"), ("X-Late", "yes")])
        yield b"created"
    return gen()


def write_case(environ, start_response):
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"one,")
    write(b"")
    write(b"two,")
    return [b"three"]


def exc_replace_case(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    try:
        raise ValueError("boom")
    except ValueError:
        start_response("503 Oops Replaced", [("Content-Type", "text/plain"), ("X-Replaced", "1")], sys.exc_info())
    return [b"replaced"]


def exc_after_send_case(environ, start_response):
    token = _q(environ).get("token", "")

    def gen():
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"first"
        try:
            raise KeyError("late")
        except KeyError:
            try:
                start_response("500 Error", [("Content-Type", "text/plain")], sys.exc_info())
            except KeyError:
                _record(SEEN, token)  # re-raised: the original exception
                raise
        yield b"never"
    return Closing(gen(), token)


def second_call_case(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    try:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
    except AssertionError as e:
        return [("second call raised AssertionError: %s" % e).encode()]
    return [b"second call accepted"]


BAD_HEADERS = {
    "crlf": [("X-Bad", "a\r\nInjected: yes")],
    "lf": [("X-Bad", "a\nb")],
    "nul": [("X-Bad", "a\x00b")],
    "name": [("Bad Name", "x")],
    "colon": [("Bad:Name", "x")],
    "hop": [("Connection", "close")],
    "te": [("Transfer-Encoding", "chunked")],
    "keepalive": [("Keep-Alive", "timeout=5")],
    "upgrade": [("Upgrade", "h2c")],
    "proxy": [("Proxy-Authenticate", "Basic")],
    "nonlatin": [("X-Bad", "\u20ac")],
    "nonstr": [("X-Bad", 5)],
    "bytes": [(b"X-Bad", b"x")],
    "triple": [("X-Bad", "x", "y")],
    "notlist": "X-Bad: x",
    "clen": [("Content-Length", "abc")],
}

BAD_STATUS = {
    "nospace": "200OK",
    "short": "20",
    "letters": "abc OK",
    "crlf": "200 OK\r\nX-Injected: 1",
    "bytes": b"200 OK",
    "low": "099 Low",
}


def badheader_case(environ, start_response):
    q = _q(environ)
    kind = q.get("kind", "crlf")
    headers = BAD_HEADERS[kind]
    if q.get("catch"):
        try:
            start_response("200 OK", headers)
        except Exception as e:
            return _text(start_response, "%s: %s" % (type(e).__name__, e))
        return _text(start_response, "accepted")
    start_response("200 OK", headers)
    return [b"should not be sent"]


def badstatus_case(environ, start_response):
    kind = _q(environ).get("kind", "nospace")
    start_response(BAD_STATUS[kind], [("Content-Type", "text/plain")])
    return [b"should not be sent"]


# ---------------------------------------------------------------------------------------------
# response bodies

def list_case(environ, start_response):
    n = int(_q(environ).get("n", "3"))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"part%d;" % i for i in range(n)] + [b""]


def gen_case(environ, start_response):
    q = _q(environ)
    n, size = int(q.get("n", "3")), int(q.get("size", "5"))
    token = q.get("token", "")
    headers = [("Content-Type", "application/octet-stream")]
    if q.get("cl"):
        headers.append(("Content-Length", str(n * size)))
    start_response("200 OK", headers)

    def gen():
        for i in range(n):
            yield bytes([97 + i % 26]) * size
    return Closing(gen(), token)


def empty_case(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return Closing(iter([b"", b""]), _q(environ).get("token", ""))


def slow_case(environ, start_response):
    token = _q(environ).get("token", "")
    delay = float(_q(environ).get("delay", "0.6"))
    start_response("200 OK", [("Content-Type", "text/plain")])

    def gen():
        yield b"tick1;"
        time.sleep(delay)
        yield b"tick2;"
    return Closing(gen(), token)


def clen_case(environ, start_response):
    q = _q(environ)
    declared, actual = int(q.get("declared", "10")), int(q.get("actual", "5"))
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(declared))])
    return Closing(iter([b"x" * actual]), q.get("token", ""))


def nobody_case(environ, start_response):
    status = _q(environ).get("s", "204 No Content")
    start_response(status, [("X-Status", status)])
    return [b"this body must not be sent"]


def file_case(environ, start_response):
    q = _q(environ)
    size = int(q.get("size", "1000"))
    data = bytes(i % 251 for i in range(size))
    f = io.BytesIO(data)
    headers = [("Content-Type", "application/octet-stream")]
    if q.get("cl"):
        headers.append(("Content-Length", str(size)))
    start_response("200 OK", headers)
    wrapper = environ["wsgi.file_wrapper"](f, 4096)
    if q.get("middleware"):
        # A middleware that iterates the wrapper: the server sees a plain generator.
        def passthrough():
            try:
                for block in wrapper:
                    yield block
            finally:
                wrapper.close()
        return passthrough()
    return wrapper


# ---------------------------------------------------------------------------------------------
# errors

def raise_case(environ, start_response):
    raise RuntimeError("probe: the application failed on purpose")


def raise_after_case(environ, start_response):
    token = _q(environ).get("token", "")

    def gen():
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"x" * 10
        raise RuntimeError("probe: failed while streaming")
    return Closing(gen(), token)


def raise_in_close_case(environ, start_response):
    class Bad:
        def __iter__(self):
            return iter([b"body"])

        def close(self):
            raise RuntimeError("probe: close() failed")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return Bad()


def str_chunk_case(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return Closing(iter(["a str, not bytes"]), _q(environ).get("token", ""))


def non_iterable_case(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return 42


def no_start_case(environ, start_response):
    return [b"no start_response"]


# ---------------------------------------------------------------------------------------------
# threads, disconnects, bookkeeping

def sleep_case(environ, start_response):
    t = float(_q(environ).get("t", "0.5"))
    time.sleep(t)
    return _text(start_response, "slept %s in %s" % (t, threading.current_thread().name))


def wait_disconnect_case(environ, start_response):
    token = _q(environ).get("token", "")
    is_gone = environ["m2wsgi.is_disconnected"]
    deadline = time.time() + 5
    while time.time() < deadline and not is_gone():
        time.sleep(0.02)
    _record(SEEN, token, 1 if is_gone() else 0)
    return _text(start_response, "gone" if is_gone() else "still there")


def stream_forever_case(environ, start_response):
    token = _q(environ).get("token", "")
    start_response("200 OK", [("Content-Type", "application/octet-stream")])

    def gen():
        i = 0
        while i < 100000:
            i += 1
            _record(SEEN, token)
            time.sleep(0.005)
            yield b"." * 1024
    return Closing(gen(), token)


def big_case(environ, start_response):
    mb = int(_q(environ).get("mb", "1"))
    start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(mb << 20))])
    block = b"z" * 65536

    def gen():
        for _ in range(mb * 16):
            yield block
    return gen()


def stats_case(environ, start_response):
    token = _q(environ).get("token", "")
    with _lock:
        body = "closed=%d seen=%d" % (CLOSED.get(token, 0), SEEN.get(token, 0))
    return _text(start_response, body)


def hello_case(environ, start_response):
    return _text(start_response, "Hello, world!")


ROUTES = {
    "": hello_case,
    "hello": hello_case,
    "environ": environ_case,
    "input": input_case,
    "errors": errors_case,
    "status": status_case,
    "headers": headers_case,
    "late": late_case,
    "write": write_case,
    "exc_replace": exc_replace_case,
    "exc_after_send": exc_after_send_case,
    "second_call": second_call_case,
    "badheader": badheader_case,
    "badstatus": badstatus_case,
    "list": list_case,
    "gen": gen_case,
    "empty": empty_case,
    "slow": slow_case,
    "clen": clen_case,
    "nobody": nobody_case,
    "file": file_case,
    "raise": raise_case,
    "raise_after": raise_after_case,
    "raise_in_close": raise_in_close_case,
    "str_chunk": str_chunk_case,
    "non_iterable": non_iterable_case,
    "no_start": no_start_case,
    "sleep": sleep_case,
    "wait_disconnect": wait_disconnect_case,
    "stream_forever": stream_forever_case,
    "big": big_case,
    "stats": stats_case,
}


def application(environ, start_response):
    parts = environ.get("PATH_INFO", "/").split("/")
    case = parts[1] if len(parts) > 1 else ""
    handler = ROUTES.get(case)
    if handler is None:
        return _text(start_response, "no case %r" % case, "404 Not Found")
    return handler(environ, start_response)
