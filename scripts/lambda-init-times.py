#!/usr/bin/env python3
"""Measures each Lambda function's cold-start init time: from process start
to its first `next` request on a Lambda Runtime API (served here by a stub
that never answers), the median of several runs. Also reports zip sizes.

Usage: lambda-init-times.py LAMBDA_DIR [RUNS]
  LAMBDA_DIR holds <function>/bootstrap.zip (scripts/build-lambdas --x86-64),
  or is a cargo release dir holding the function binaries themselves
  (cargo build --release -p chat-lambdas); they must run on this machine.
"""
import http.server
import os
import socketserver
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile

lambda_dir = sys.argv[1]
runs = int(sys.argv[2]) if len(sys.argv) > 2 else 7


class Stub(http.server.BaseHTTPRequestHandler):
    first_next = None
    event = threading.Event()

    def log_message(self, *a):
        pass

    def do_GET(self):
        if self.path.endswith("/runtime/invocation/next") and Stub.first_next is None:
            Stub.first_next = time.perf_counter()
            Stub.event.set()
        time.sleep(5)  # never hand out an invocation


def measure(binary):
    Stub.first_next = None
    Stub.event.clear()
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Stub)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = dict(os.environ)
    env.update({
        "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{server.server_address[1]}",
        "AWS_LAMBDA_FUNCTION_NAME": os.path.basename(os.path.dirname(binary)),
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_STREAM_NAME": "local",
        "AWS_LAMBDA_LOG_GROUP_NAME": "local",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "CHAT_TABLE_PREFIX": "chat-",
        "CHAT_JWT_SECRET": "init-time-measurement",
    })
    t0 = time.perf_counter()
    p = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ok = Stub.event.wait(10)
    p.kill()
    p.wait()
    server.shutdown()
    server.server_close()
    if not ok:
        raise SystemExit(f"{binary} never asked for an invocation")
    return (Stub.first_next - t0) * 1000


FUNCTIONS = {"authorizer", "connect", "disconnect", "send", "ack", "sync", "history",
             "conversations", "groups", "fanout", "default"}

rows = []
with tempfile.TemporaryDirectory() as tmp:
    for name in sorted(os.listdir(lambda_dir)):
        z = os.path.join(lambda_dir, name, "bootstrap.zip")
        if os.path.isfile(z):
            out = os.path.join(tmp, name)
            zipfile.ZipFile(z).extractall(out)
            binary = os.path.join(out, "bootstrap")
            os.chmod(binary, 0o755)
        elif name in FUNCTIONS and os.access(os.path.join(lambda_dir, name), os.X_OK):
            binary = os.path.join(lambda_dir, name)
            out = os.path.join(tmp, name)
            os.makedirs(out)
            z = os.path.join(out, "bootstrap.zip")
            with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
                zf.write(binary, "bootstrap")
        else:
            continue
        times = [measure(binary) for _ in range(runs)]
        rows.append((name, os.path.getsize(z), statistics.median(times), min(times), max(times)))

print(f"| function | zip | init, median of {runs} | min | max |")
print("|---|---:|---:|---:|---:|")
for name, size, med, lo, hi in rows:
    print(f"| {name} | {size / 1024 / 1024:.2f} MB | {med:.1f} ms | {lo:.1f} ms | {hi:.1f} ms |")
