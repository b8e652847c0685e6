#!/usr/bin/env python3
"""A loopback TCP proxy that adds latency and caps bandwidth (bench/bench_remote.py).

Every byte read on one side is written to the other ``--delay-ms`` later (each direction,
so a request/response round trip costs twice that on top of the server's own time), and
the bytes flowing server -> client share one link of ``--mbps`` MB/s (all connections
together; 0 = unlimited). Requests (client -> server) are small and only delayed.

Usage: python bench/latency_proxy.py --target HOST:PORT [--target HOST:PORT ...]
           --delay-ms 5 --mbps 100
Prints one JSON line ``{"HOST:PORT": "http://127.0.0.1:P", ...}`` (the proxy address of
each target) once listening, then runs until its standard input closes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time


class Link:
    """A shared downstream link of `rate` bytes/s: each chunk takes len/rate seconds of it."""

    def __init__(self, rate: float):
        self.rate = rate
        self.free_at = 0.0

    def reserve(self, n: int) -> float:
        """When a chunk of `n` bytes ready now has gone through (monotonic seconds)."""
        now = time.monotonic()
        if self.rate <= 0:
            return now
        start = max(now, self.free_at)
        self.free_at = start + n / self.rate
        return self.free_at


async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float, link: Link | None) -> None:
    """Copies reader -> writer, each chunk `delay` s after it arrived (order kept), through
    `link` when given."""
    queue: asyncio.Queue = asyncio.Queue()

    async def read_side() -> None:
        try:
            while data := await reader.read(1 << 16):
                queue.put_nowait((time.monotonic() + delay, data))
        except (ConnectionError, OSError):
            pass
        finally:
            queue.put_nowait((time.monotonic() + delay, b""))

    async def write_side() -> None:
        try:
            while True:
                due, data = await queue.get()
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    break
                if link is not None:
                    wait = link.reserve(len(data)) - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            try:
                writer.close()
            except Exception:  # noqa: BLE001 - closing a broken socket
                pass

    await asyncio.gather(read_side(), write_side())


async def serve(targets: list[str], delay: float, rate: float) -> None:
    link = Link(rate)
    out = {}
    servers = []
    for target in targets:
        host, _, port = target.rpartition(":")

        async def handle(cr, cw, host=host, port=int(port)):
            try:
                sr, sw = await asyncio.open_connection(host, port)
            except OSError:
                cw.close()
                return
            try:
                await asyncio.gather(pump(cr, sw, delay, None), pump(sr, cw, delay, link if rate > 0 else None))
            except asyncio.CancelledError:  # shutting down
                pass

        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
        servers.append(server)
        out[target] = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    print(json.dumps(out), flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes it


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", action="append", required=True)
    ap.add_argument("--delay-ms", type=float, default=0.0)
    ap.add_argument("--mbps", type=float, default=0.0, help="MB/s (1e6 bytes) server->client, 0 = unlimited")
    args = ap.parse_args()
    try:
        asyncio.run(serve(args.target, args.delay_ms / 1000.0, args.mbps * 1e6))
    finally:
        sys.stdout.flush()
        os._exit(0)  # open connections need no orderly close


if __name__ == "__main__":
    main()
