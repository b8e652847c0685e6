#!/usr/bin/env python3
"""A loopback TCP proxy that adds latency and caps bandwidth (bench/bench_remote.py).

Every byte read on one side is written to the other ``--delay-ms`` later (each direction,
so a request/response round trip costs twice that on top of the server's own time), and
the bytes flowing server -> client share one link of ``--mbps`` MB/s (all connections
together; 0 = unlimited). Requests (client -> server) are small and only delayed.

Usage: python bench/latency_proxy.py --target HOST:PORT [--target HOST:PORT ...]
           --delay-ms 5 --mbps 100
Prints one JSON line ``{"HOST:PORT": "http://127.0.0.1:P", ...}`` (the proxy address of
each target) once listening, then runs until its standard input closes. Each line read on
standard input makes it print (and reset) its request counters as one JSON line:
``requests`` (HTTP requests seen: client chunks that start with a method), ``connections``,
``bytes_down`` (server -> client), ``max_in_flight`` and ``mean_in_flight`` (requests the
client sent and has no response byte of yet, the mean over the time from the first
request to the last response byte), ``seconds`` (that time).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time


METHODS = (b"GET ", b"HEAD ", b"PUT ", b"POST ", b"DELETE ")


class Counters:
    """Requests, connections and requests in flight (time-weighted) since the last report."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests = self.connections = self.bytes_down = 0
        self.in_flight = self.max_in_flight = 0
        self.area = 0.0  # in-flight requests x seconds
        self.first = self.last = None

    def _tick(self) -> None:
        now = time.monotonic()
        if self.last is not None:
            self.area += self.in_flight * (now - self.last)
        if self.first is None:
            self.first = now
        self.last = now

    def sent(self) -> None:
        self._tick()
        self.requests += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def answered(self) -> None:
        self._tick()
        self.in_flight = max(0, self.in_flight - 1)

    def report(self) -> dict:
        self._tick()
        span = (self.last - self.first) if self.first is not None else 0.0
        out = {"requests": self.requests, "connections": self.connections, "bytes_down": self.bytes_down,
               "max_in_flight": self.max_in_flight, "mean_in_flight": self.area / span if span > 0 else 0.0, "seconds": span}
        pending = self.in_flight
        self.reset()
        self.in_flight = pending
        return out


COUNTERS = Counters()
LOG = None  # --log: a file that gets each request's first line and Range header


def log_request(data: bytes) -> None:
    head = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    rng = next((h.split(b":", 1)[1].strip() for h in head[1:] if h.lower().startswith(b"range:")), b"-")
    LOG.write(f"{time.monotonic():.4f} {head[0].decode('latin-1')} {rng.decode('latin-1')}\n")


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


async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float, link: Link | None,
               waiting: list[int] | None = None, upstream: bool = False) -> None:
    """Copies reader -> writer, each chunk `delay` s after it arrived (order kept), through
    `link` when given. `waiting` (one counter shared by a connection's two pumps): requests
    of this connection sent by the client (`upstream`: the client -> server pump) and not
    answered yet (no response byte passed on to the client)."""
    queue: asyncio.Queue = asyncio.Queue()

    async def read_side() -> None:
        try:
            while data := await reader.read(1 << 16):
                if waiting is not None and upstream and data.startswith(METHODS):
                    waiting[0] += 1
                    COUNTERS.sent()
                    if LOG is not None:
                        log_request(data)
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
                if waiting is not None and not upstream:
                    COUNTERS.bytes_down += len(data)
                    if waiting[0] > 0:
                        waiting[0] -= 1
                        COUNTERS.answered()
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
            COUNTERS.connections += 1
            waiting = [0]
            try:
                await asyncio.gather(pump(cr, sw, delay, None, waiting, True), pump(sr, cw, delay, link if rate > 0 else None, waiting))
            except asyncio.CancelledError:  # shutting down
                pass

        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
        servers.append(server)
        out[target] = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    print(json.dumps(out), flush=True)
    loop = asyncio.get_running_loop()
    while await loop.run_in_executor(None, sys.stdin.readline):  # until the parent closes it
        print(json.dumps(COUNTERS.report()), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", action="append", required=True)
    ap.add_argument("--delay-ms", type=float, default=0.0)
    ap.add_argument("--mbps", type=float, default=0.0, help="MB/s (1e6 bytes) server->client, 0 = unlimited")
    ap.add_argument("--log", default=None, help="append each request's first line and Range header to this file")
    args = ap.parse_args()
    global LOG
    if args.log:
        LOG = open(args.log, "a", buffering=1)  # noqa: SIM115 - open until exit
    try:
        asyncio.run(serve(args.target, args.delay_ms / 1000.0, args.mbps * 1e6))
    finally:
        sys.stdout.flush()
        os._exit(0)  # open connections need no orderly close


if __name__ == "__main__":
    main()
