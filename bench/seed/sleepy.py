"""The hello-world app of hello.py after 1 ms of sleep: an app that waits with the GIL released
(as one waiting on a database does), for measuring what more threads give."""

import time

from hello import BODY, HEADERS


def app(environ, start_response):
    time.sleep(0.001)
    start_response("200 OK", list(HEADERS))
    return [BODY]
