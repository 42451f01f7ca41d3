#!/usr/bin/env python3
"""A fault-injecting proxy for DynamoDB tests: forwards requests to the
emulator, but answers a share of them with ThrottlingException (HTTP 400)
or an internal error (HTTP 500), as DynamoDB does under load; and on
`GET /stall?secs=N` it black-holes every request for N seconds: each is
held, never forwarded, and its connection closed unanswered when the stall
ends (the client has given up by then), as when the store is cut off.

Usage: throttle-proxy.py UPSTREAM_URL FAULT_RATE [SEED]
Prints "listening PORT" on stdout once ready (it binds 127.0.0.1:0).
`GET /` answers the counts so far.
"""
import http.client
import json
import random
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

upstream = urlparse(sys.argv[1])
rate = float(sys.argv[2])
rng = random.Random(int(sys.argv[3]) if len(sys.argv) > 3 else 7)
lock = threading.Lock()
stats = {"forwarded": 0, "throttled": 0, "failed": 0, "stalled": 0}
stall_until = 0.0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if time.time() < stall_until:
            with lock:
                stats["stalled"] += 1
            while time.time() < stall_until:
                time.sleep(0.05)
            self.close_connection = True
            return
        with lock:
            roll = rng.random()
        if roll < rate * 0.8:
            with lock:
                stats["throttled"] += 1
            return self.reply(400, {"__type": "com.amazonaws.dynamodb.v20120810#ThrottlingException", "message": "Rate of requests exceeds the allowed throughput."})
        if roll < rate:
            with lock:
                stats["failed"] += 1
            return self.reply(500, {"__type": "com.amazonaws.dynamodb.v20120810#InternalServerError", "message": "Internal server error"})
        conn = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        conn.request("POST", self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        with lock:
            stats["forwarded"] += 1
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("content-length", "connection", "transfer-encoding", "server", "date"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        conn.close()

    def do_GET(self):
        global stall_until
        if self.path.startswith("/stall"):
            secs = float(self.path.split("secs=", 1)[1]) if "secs=" in self.path else 20.0
            stall_until = time.time() + secs
            return self.reply(200, {"stall_until": stall_until})
        self.reply(200, stats)

    def reply(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.0")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print("listening", server.server_address[1], flush=True)
server.serve_forever()
