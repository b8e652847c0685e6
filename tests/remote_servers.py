"""Loopback servers for the object store tests (rust/tests/remote.rs, tests/test_remote.py).

Not a mock of damacy: two real servers speaking the protocols damacy's object stores speak.

- S3: moto's server (``moto.server.ThreadedMotoServer``) on 127.0.0.1; every file under
  ``--root`` is uploaded to bucket ``--bucket`` under the same key.
- HTTP: a small file server over ``--root`` with what object_store's HTTP store uses: GET
  and HEAD, single ``Range: bytes=a-b`` (or ``a-``, ``-n``) requests (206 + Content-Range), ETag (size and
  mtime) with ``If-Match`` (412). Paths starting with a fault name misbehave, then serve the
  rest of the path as usual:
    /forbidden/...  403 for every request
    /flaky/...      500 for the first request of each (method, path, range), then normal
    /stall/...      answers nothing for 60 s (a hung server)
    /truncate/...   sends the headers of the full answer, half the body, then closes

Usage: python tests/remote_servers.py --root DIR [--bucket NAME]. Prints one JSON line
``{"s3": "http://127.0.0.1:P", "http": "http://127.0.0.1:Q", "bucket": NAME}`` once both
serve, and runs until its standard input closes (so it never outlives the test process).
"""

from __future__ import annotations

import argparse
import email.utils
import hashlib
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULTS = ("forbidden", "flaky", "stall", "truncate")


class RangedHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    root = "."
    seen: set = set()
    lock = threading.Lock()

    def log_message(self, *args) -> None:  # quiet
        pass

    def _fault_and_path(self) -> tuple[str | None, str]:
        path = self.path.split("?", 1)[0]
        parts = path.lstrip("/").split("/", 1)
        if parts[0] in FAULTS:
            return parts[0], "/" + (parts[1] if len(parts) > 1 else "")
        return None, path

    def _plain(self, code: int, text: str = "") -> None:
        body = text.encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self._serve()

    def do_GET(self) -> None:
        self._serve()

    def _serve(self) -> None:
        fault, path = self._fault_and_path()
        if fault == "forbidden":
            return self._plain(403, "Forbidden")
        if fault == "stall":
            time.sleep(60)
            return
        if fault == "flaky":
            key = (self.command, path, self.headers.get("Range"))
            with self.lock:
                first = key not in self.seen
                self.seen.add(key)
            if first:
                return self._plain(500, "injected failure")
        from urllib.parse import unquote

        local = os.path.realpath(os.path.join(self.root, unquote(path).lstrip("/")))
        if not local.startswith(os.path.realpath(self.root)) or not os.path.isfile(local):
            return self._plain(404, "Not Found")
        st = os.stat(local)
        etag = '"' + hashlib.sha1(f"{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest() + '"'
        if_match = self.headers.get("If-Match")
        if if_match and if_match.strip() not in ("*", etag):
            return self._plain(412, "Precondition Failed")
        size = st.st_size
        start, end = 0, size  # [start, end)
        rng = self.headers.get("Range")
        if rng:
            unit, _, spec = rng.partition("=")
            a, _, b = spec.partition("-")
            if unit.strip() != "bytes" or "," in spec or not (a or b):
                return self._plain(416, "unsupported range")
            if a:
                start = int(a)
                end = min(size, int(b) + 1) if b else size
            else:  # suffix range: the last b bytes
                start, end = max(0, size - int(b)), size
            if start >= size or start >= end:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        self.send_response(206 if rng else 200)
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.send_header("Content-Length", str(end - start))
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", email.utils.formatdate(st.st_mtime, usegmt=True))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        if fault == "truncate":
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command == "HEAD":
            return
        with open(local, "rb") as f:
            f.seek(start)
            data = f.read(end - start)
        if fault == "truncate":
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(data)


def start_http(root: str) -> ThreadingHTTPServer:
    handler = type("Handler", (RangedHandler,), {"root": root, "seen": set()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def start_s3(root: str, bucket: str):
    from moto.server import ThreadedMotoServer
    import boto3

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
    s3.create_bucket(Bucket=bucket)
    for dirpath, _, files in os.walk(root):
        for name in files:
            local = os.path.join(dirpath, name)
            key = os.path.relpath(local, root).replace(os.sep, "/")
            s3.upload_file(local, bucket, key)
    return server, endpoint


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--bucket", default="damacy")
    args = ap.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
    http = start_http(args.root)
    _, s3 = start_s3(args.root, args.bucket)
    print(json.dumps({"s3": s3, "http": f"http://127.0.0.1:{http.server_address[1]}", "bucket": args.bucket}), flush=True)
    sys.stdin.read()  # until the parent closes it (or dies)
    os._exit(0)


if __name__ == "__main__":
    main()
