"""Apps for a real gunicorn in tests/test_gunicorn.py: ``wsgi`` for sync workers, ``asgi``
for UvicornWorker (its lifespan starts a background task named asgi-ticker). Both answer
every request with the pid of the worker that served it."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterable
from typing import Any


def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"pid {os.getpid()}\n".encode()]


async def _tick() -> None:
    while True:
        await asyncio.sleep(0.5)


_background: set[asyncio.Task[None]] = set()


async def asgi(
    scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]
) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                _background.add(asyncio.create_task(_tick(), name="asgi-ticker"))
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                for task in _background:
                    task.cancel()
                await send({"type": "lifespan.shutdown.complete"})
                return
    elif scope["type"] == "http":
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        await send({"type": "http.response.body", "body": f"pid {os.getpid()}\n".encode()})
