"""moto_server, applying one request at a time.

moto checks a DynamoDB condition and then writes, in two steps, and its
server runs each request in its own thread: two requests at once can both
pass the same condition. Two conditional puts of one new item both
"succeed", the second overwriting the first. DynamoDB applies every
conditional write (and every transaction) atomically, and the adapters
rely on it: message ids are allocated with `attribute_not_exists`, sends
are made idempotent with a conditional claim. Serialising the requests
gives the emulator that atomicity back. moto does its work holding
Python's GIL anyway, so requests barely overlapped before.

Usage: the same arguments as moto_server (localstack/start.sh runs it).
"""

import threading

import moto.server as server

_one_at_a_time = threading.Lock()
_dispatcher = server.DomainDispatcherApplication


class Serial:
    """A WSGI app that runs the wrapped one under a lock, body included."""

    def __init__(self, app):
        self.app = app

    def __setattr__(self, name, value):
        if name == "app":
            object.__setattr__(self, name, value)
        else:
            setattr(self.app, name, value)

    def __call__(self, environ, start_response):
        with _one_at_a_time:
            return list(self.app(environ, start_response))


server.DomainDispatcherApplication = lambda *a, **k: Serial(_dispatcher(*a, **k))

if __name__ == "__main__":
    server.main()
