"""A bounded HTTP/1.1 load generator for bench/overhead.py when wrk is not installed.

    python bench/loadgen.py URL [--connections 32] [--duration 10]

``--connections`` kept-alive connections each send ``GET`` after ``GET`` for
``--duration`` seconds (and at most ``--max-requests`` in all); prints one JSON line:
requests, errors, seconds, rps and latency percentiles in seconds. Written on asyncio
streams, it tops out far below wrk: its figures say what this client reached, which may
be less than what the server could do.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from urllib.parse import urlsplit


class Budget:
    """Requests left to send and when to stop sending."""

    def __init__(self, deadline: float, requests: int) -> None:
        self.deadline = deadline
        self.left = requests

    def take(self) -> bool:
        if self.left <= 0 or time.perf_counter() >= self.deadline:
            return False
        self.left -= 1
        return True


async def read_response(reader: asyncio.StreamReader) -> int:
    """Read one response (Content-Length bodies only, as aiohttp sends); its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    if length:
        await reader.readexactly(length)
    return status


async def connection(
    host: str, port: int, path: str, budget: Budget, latencies: list[float], errors: list[int]
) -> None:
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        errors.append(1)
        return
    try:
        while budget.take():
            started = time.perf_counter()
            writer.write(request)
            status = await read_response(reader)
            latencies.append(time.perf_counter() - started)
            if status >= 400:
                errors.append(1)
    except (OSError, asyncio.IncompleteReadError, ValueError):
        errors.append(1)
    finally:
        writer.close()


async def run(url: str, connections: int, duration: float, max_requests: int) -> dict:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    latencies: list[float] = []
    errors: list[int] = []
    started = time.perf_counter()
    budget = Budget(started + duration, max_requests)
    await asyncio.gather(
        *(
            connection(host, port, parts.path or "/", budget, latencies, errors)
            for _ in range(connections)
        )
    )
    seconds = time.perf_counter() - started
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) >= 2 else [0.0] * 99
    return {
        "requests": len(latencies),
        "errors": len(errors),
        "seconds": seconds,
        "rps": len(latencies) / seconds if seconds > 0 else 0.0,
        "p50": cuts[49],
        "p99": cuts[98],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--max-requests", type=int, default=2_000_000)
    args = parser.parse_args()
    result = asyncio.run(run(args.url, args.connections, args.duration, args.max_requests))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
