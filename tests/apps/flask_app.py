"""A Flask application for tests/wsgi_e2e.rs: a form post, a multipart upload (larger than
Mongrel2's inline limit, so it arrives as an async upload), send_file, a streaming response."""

import atexit
import hashlib
import os
import tempfile

from flask import Flask, Response, jsonify, request, send_file, stream_with_context

app = Flask(__name__)

# The file send_file serves: 300000 bytes, byte i = i % 251 (the test builds the same).
FILE_SIZE = 300000
FILE_PATH = os.path.join(tempfile.gettempdir(), "m2wsgi-flask-%d.bin" % os.getpid())
atexit.register(lambda: os.path.exists(FILE_PATH) and os.remove(FILE_PATH))
with open(FILE_PATH, "wb") as f:
    f.write(bytes(i % 251 for i in range(FILE_SIZE)))


@app.route("/")
def index():
    return "flask ok"


@app.route("/form", methods=["POST"])
def form():
    return "name=%s n=%s" % (request.form["name"], ",".join(request.form.getlist("n")))


@app.route("/upload", methods=["POST"])
def upload():
    f = request.files["file"]
    h = hashlib.sha256()
    total = 0
    while True:
        block = f.stream.read(65536)
        if not block:
            break
        h.update(block)
        total += len(block)
    return "%s %d %s note=%s" % (f.filename, total, h.hexdigest(), request.form.get("note"))


@app.route("/raw", methods=["POST", "PUT"])
def raw():
    # Reads wsgi.input through Werkzeug in chunks (chunked request bodies need
    # wsgi.input_terminated).
    h = hashlib.sha256()
    total = 0
    stream = request.stream
    while True:
        block = stream.read(65536)
        if not block:
            break
        h.update(block)
        total += len(block)
    return "%d %s cl=%s" % (total, h.hexdigest(), request.environ.get("CONTENT_LENGTH"))


@app.route("/file")
def file():
    return send_file(FILE_PATH, mimetype="application/octet-stream")


@app.route("/stream")
def stream():
    def gen():
        for i in range(5):
            yield "chunk%d;" % i
    return Response(stream_with_context(gen()), mimetype="text/plain")


@app.route("/env")
def env():
    return jsonify(path=request.path, script_root=request.script_root, url=request.url,
                   input_terminated=request.environ.get("wsgi.input_terminated"))


@app.route("/fail")
def fail():
    raise RuntimeError("flask view failed on purpose")
