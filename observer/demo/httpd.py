"""A minimal hand-written HTTP/1.1 server and client on asyncio streams (no third-party code)."""

from __future__ import annotations

import asyncio
import contextlib
import http
import itertools
import json
import logging
import socket
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

log = logging.getLogger("observer.demo")

MAX_HEADERS = 100
MAX_BODY = 1 << 20
IDLE_TIMEOUT = 15.0

T = TypeVar("T")


async def within(seconds: float, awaitable: Awaitable[T]) -> T:
    """Await with a deadline, without wrapping it in an extra unnamed task where possible.

    ``asyncio.wait_for`` runs a coroutine in a new "Task-N" before 3.12, which would
    clutter the observer's task list; ``asyncio.timeout`` (3.11+) does not.
    """
    timeout = getattr(asyncio, "timeout", None)
    if timeout is None:
        return await asyncio.wait_for(awaitable, seconds)
    async with timeout(seconds):
        return await awaitable


class BadRequest(Exception):
    """The client sent something we will not parse; answer ``status`` and close."""

    def __init__(self, status: int, reason: str) -> None:
        """Keep the status to answer with."""
        super().__init__(reason)
        self.status = status


@dataclass
class Request:
    """One parsed HTTP request."""

    method: str
    target: str
    version: str
    headers: dict[str, str]
    path: str = ""
    query: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def keep_alive(self) -> bool:
        """Tell whether the connection may serve another request after this one."""
        connection = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return connection == "keep-alive"
        return connection != "close"


@dataclass
class Response:
    """One HTTP response: status, body and content type."""

    status: int
    body: bytes
    content_type: str = "application/json"

    @classmethod
    def json(cls, payload: Any, status: int = 200) -> Response:
        """Build a JSON response."""
        return cls(status, json.dumps(payload).encode())

    @classmethod
    def text(cls, text: str, status: int = 200) -> Response:
        """Build a plain-text response."""
        return cls(status, text.encode(), "text/plain; charset=utf-8")


Handler = Callable[[Request], Awaitable[Response]]


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """Parse one request from ``reader``; None on a clean EOF between requests."""
    try:
        line = await reader.readline()
    except ValueError as exc:  # line longer than the stream limit
        raise BadRequest(400, "request line too long") from exc
    if not line:
        return None
    parts = line.decode("latin-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest(400, "malformed request line")
    method, target, version = parts
    headers: dict[str, str] = {}
    while True:
        try:
            raw = await reader.readline()
        except ValueError as exc:
            raise BadRequest(400, "header line too long") from exc
        if not raw:
            raise BadRequest(400, "connection closed inside the headers")
        if raw in (b"\r\n", b"\n"):
            break
        if len(headers) >= MAX_HEADERS:
            raise BadRequest(431, "too many headers")
        name, sep, value = raw.decode("latin-1").partition(":")
        if not sep:
            raise BadRequest(400, "malformed header")
        headers[name.strip().lower()] = value.strip()
    if "transfer-encoding" in headers:
        raise BadRequest(501, "transfer-encoding is not supported")
    body = b""
    if "content-length" in headers:
        try:
            length = int(headers["content-length"])
        except ValueError as exc:
            raise BadRequest(400, "bad content-length") from exc
        if length < 0 or length > MAX_BODY:
            raise BadRequest(413, "body too large")
        body = await reader.readexactly(length)
    split = urllib.parse.urlsplit(target)
    query = dict(urllib.parse.parse_qsl(split.query))
    return Request(method, target, version, headers, split.path or "/", query, body)


def encode_response(response: Response, keep_alive: bool) -> bytes:
    """Serialise a response with the headers every reply carries."""
    try:
        phrase = http.HTTPStatus(response.status).phrase
    except ValueError:
        phrase = "Unknown"
    head = (
        f"HTTP/1.1 {response.status} {phrase}\r\n"
        f"Content-Type: {response.content_type}\r\n"
        f"Content-Length: {len(response.body)}\r\n"
        f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n"
        "Server: runtime-observer-demo\r\n"
        "\r\n"
    )
    return head.encode("latin-1") + response.body


class HttpServer:
    """An asyncio HTTP/1.1 server whose connections run in tasks named ``http-conn-<n>``."""

    def __init__(
        self, host: str, port: int, handler: Handler, sock: socket.socket | None = None
    ) -> None:
        """Remember where to listen (or the listening socket to accept on, shared by a
        pool's workers) and which coroutine answers requests."""
        self.host = host
        self.port = port
        self._handler = handler
        self._sock = sock
        self._server: asyncio.Server | None = None
        self._conn_ids = itertools.count(1)
        self._connections: set[asyncio.Task[Any]] = set()
        self.requests = 0

    @property
    def address(self) -> str:
        """Return the bound ``host:port`` (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    async def bind(self) -> None:
        """Listen now, learning the real port when asked for port 0."""
        if self._sock is not None:
            self._server = await asyncio.start_server(self._connection, sock=self._sock)
        else:
            self._server = await asyncio.start_server(self._connection, self.host, self.port)
        sockname = self._server.sockets[0].getsockname()
        self.port = sockname[1]

    async def serve(self) -> None:
        """Accept connections until cancelled (the ``http-server`` task); rebinds on restart."""
        if self._server is None:
            await self.bind()
        server = self._server
        assert server is not None
        try:
            await server.serve_forever()
        finally:
            self._server = None
            server.close()
            for task in list(self._connections):
                task.cancel()
            if self._connections:
                await asyncio.wait(set(self._connections), timeout=5.0)
            with contextlib.suppress(Exception):
                await within(5.0, server.wait_closed())

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve requests on one connection until it closes, idles out or asks to close."""
        task = asyncio.current_task()
        assert task is not None
        task.set_name(f"http-conn-{next(self._conn_ids)}")
        self._connections.add(task)
        try:
            while True:
                keep_alive = False
                try:
                    request = await within(IDLE_TIMEOUT, read_request(reader))
                    if request is None:
                        break
                    keep_alive = request.keep_alive
                    response = await self._answer(request)
                except BadRequest as exc:
                    response = Response.text(f"{exc}\n", exc.status)
                self.requests += 1
                writer.write(encode_response(response, keep_alive))
                await writer.drain()
                if not keep_alive:
                    break
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        except asyncio.CancelledError:
            # A cancelled connection is simply closed. Letting CancelledError out of a
            # start_server callback makes Python 3.11's streams log a bogus traceback.
            pass
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, request: Request) -> Response:
        """Run the handler, turning its crashes into a 500."""
        try:
            return await self._handler(request)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("error handling %s %s", request.method, request.target)
            return Response.json({"error": "internal error"}, 500)


async def http_get(host: str, port: int, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
    """Make one GET request on a fresh connection; return (status, body)."""
    reader, writer = await within(timeout, asyncio.open_connection(host, port))
    try:
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "User-Agent: demo-load-generator\r\nConnection: close\r\n\r\n".encode("latin-1")
        )
        await writer.drain()
        raw = await within(timeout, reader.read())
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split()
    if len(status_line) < 2 or not status_line[1].isdigit():
        raise ConnectionError(f"bad response from {host}:{port}: {head[:80]!r}")
    return int(status_line[1]), body
