"""rpyc framing with limits: a capped, bounded-inflate Channel over a stream with deadlines.

rpyc's own Channel believes a frame header's length (up to 4 GiB) and inflates any
compressed frame without bound, and its SocketStream blocks forever on a peer that
stops reading. After login the agent speaks rpyc through these classes instead:

- an inbound frame longer than ``max_frame`` is refused from its header, before a byte
  of its body is read; a compressed one may inflate to ``max_frame`` bytes at most;
- a frame, once begun, must be sent (or received) within ``timeout`` seconds in all;
- on either, the stream is closed and the reason kept in ``Channel.dropped`` for the
  caller to audit (the exception rpyc sees is an EOFError: it ends the connection the
  way a peer hanging up does, without a traceback and without waiting for a reply).

The wire format is rpyc's own (``!LB`` length and compression flag, body, ``\\n``), so a
stock rpyc peer talks to this channel unchanged.
"""

from __future__ import annotations

import contextlib
import time
import zlib
from dataclasses import dataclass
from typing import Any

from rpyc.core.channel import Channel
from rpyc.core.stream import SocketStream

from agent.collect.pacing import request_begins, request_ends
from agent.frames import (  # noqa: F401  (the limits are imported from here too)
    FLUSHER,
    FRAME_HEADER,
    MAX_REPLY_FRAME,
    MAX_REQUEST_FRAME,
    FrameError,
    inflate,
)
from agent.tlsqueue import clear_tls_errors, note_tls_failure


class ChannelDropped(EOFError):
    """The channel closed its stream on purpose (rpyc treats it as the peer hanging up)."""


class ProtocolViolation(ChannelDropped):
    """The peer sent a frame the channel refuses (too large, bad compression, bad end)."""


class FrameTimeout(ChannelDropped):
    """A frame was not taken (or not delivered) by the peer within the deadline."""


@dataclass(frozen=True)
class Drop:
    """Why a channel dropped its peer: plain data, so no traceback (and no reply) is kept."""

    kind: str  # "protocol violation", "send timeout" or "receive timeout"
    detail: str


class TLSSocketStream(SocketStream):
    """rpyc stream that also sees bytes already decrypted and buffered in the SSL object.

    Without this, select() on the raw socket can miss a message TLS already read.
    """

    def poll(self, timeout: float | None) -> bool:  # type: ignore[override]
        pending = getattr(self.sock, "pending", None)
        if pending is not None and pending() > 0:
            return True
        return super().poll(timeout)


class DeadlineStream(TLSSocketStream):
    """A socket stream whose reads and writes honour a deadline while one is armed.

    With no deadline armed it behaves as rpyc's SocketStream (blocking). Writes go
    out through a memoryview, so a reply of many MB is never re-copied per chunk.
    """

    def __init__(self, sock: Any) -> None:
        super().__init__(sock)
        self._tls = hasattr(sock, "pending")  # an SSLSocket (its reads are TLS records)
        self._deadline: float | None = None
        self._seconds = 0.0
        self._what = ""

    def arm(self, seconds: float | None, what: str) -> None:
        """Start a deadline of ``seconds`` (None: none) for the frame being sent or read."""
        self._deadline = None if seconds is None else time.monotonic() + seconds
        self._seconds = seconds or 0.0
        self._what = what

    def disarm(self) -> None:
        """Back to blocking I/O (an idle connection may wait for its next request forever)."""
        self._deadline = None
        if not self.closed:
            try:
                self.sock.settimeout(None)
            except OSError:
                self.close()

    def _remaining(self) -> float | None:
        """Seconds left before the deadline, set as the socket's timeout; raise when none."""
        if self._deadline is None:
            return None
        left = self._deadline - time.monotonic()
        if left <= 0:
            self._expired()
        self.sock.settimeout(left)
        return left

    def _expired(self) -> None:
        self.close()
        raise FrameTimeout(f"{self._what}: not completed within {self._seconds:g}s")

    def read(self, count: int) -> bytes:
        if self._deadline is None:
            try:
                return super().read(count)
            except EOFError:
                self._failed()
                raise
        if self._tls:  # a timed TLS read: see agent.tlsqueue
            clear_tls_errors()
        chunks: list[bytes] = []
        try:
            while count > 0:
                self._remaining()
                buf = self.sock.recv(min(self.MAX_IO_CHUNK, count))
                if not buf:
                    self.close()
                    raise EOFError("connection closed by peer")
                chunks.append(buf)
                count -= len(buf)
        except TimeoutError:
            self._expired()
        except OSError as exc:
            self._failed()
            self.close()
            raise EOFError(exc) from None
        return b"".join(chunks)

    def write(self, data: bytes | memoryview) -> None:
        if self._tls and self._deadline is not None:  # a timed TLS write: agent.tlsqueue
            clear_tls_errors()
        view = memoryview(data)
        try:
            while view:
                self._remaining()
                count = self.sock.send(view[: self.MAX_IO_CHUNK])
                view = view[count:]
        except TimeoutError:
            self._expired()
        except OSError as exc:
            self._failed()
            self.close()
            raise EOFError(exc) from None

    def _failed(self) -> None:
        """A read or write of this stream failed: over TLS, its error may be left in the
        thread's OpenSSL queue (agent.tlsqueue)."""
        if self._tls:
            note_tls_failure()


class BoundedChannel(Channel):
    """rpyc Channel refusing inbound frames over ``max_frame`` and slow frames both ways.

    ``timeout`` bounds one whole frame (all its writes, or the reads after its first
    byte arrived); None leaves I/O blocking, as rpyc's Channel does.
    """

    __slots__ = ("dropped", "max_frame", "timeout")

    def __init__(
        self,
        stream: DeadlineStream,
        *,
        max_frame: int,
        timeout: float | None = None,
        compress: bool = True,
    ) -> None:
        super().__init__(stream, compress)
        self.max_frame = max_frame
        self.timeout = timeout
        self.dropped: Drop | None = None

    def recv(self) -> bytes:
        """The next frame's body; rpyc calls this only once data is waiting to be read.
        The thread's work on it begins here (agent.collect.pacing: a run and a slice)."""
        request_begins()
        stream: DeadlineStream = self.stream
        stream.arm(self.timeout, "receiving a frame")
        try:
            length, compressed = FRAME_HEADER.unpack(stream.read(FRAME_HEADER.size))
            if length > self.max_frame:
                self._violation(f"frame of {length} bytes declared, limit {self.max_frame}")
            data = stream.read(length + len(FLUSHER))
            if not data.endswith(FLUSHER):
                self._violation("frame does not end as rpyc frames do")
            data = data[: -len(FLUSHER)]
            return self._inflate(data) if compressed else data
        except FrameTimeout as exc:
            self.dropped = Drop("receive timeout", str(exc))
            raise
        finally:
            stream.disarm()

    def _inflate(self, data: bytes) -> bytes:
        """Decompress at most ``max_frame`` bytes; a frame that holds more is refused."""
        try:
            return inflate(data, self.max_frame)
        except FrameError as exc:
            self._violation(str(exc))
            raise  # not reached: _violation raises

    def _violation(self, detail: str) -> None:
        self.dropped = Drop("protocol violation", detail)
        self.stream.close()
        raise ProtocolViolation(detail)

    def send(self, data: bytes) -> None:
        """Send one frame, all of it within ``timeout`` seconds, or drop the peer."""
        compressed = 0
        if self.compress and len(data) > self.COMPRESSION_THRESHOLD:
            data = zlib.compress(data, self.COMPRESSION_LEVEL)
            compressed = 1
        stream: DeadlineStream = self.stream
        header = FRAME_HEADER.pack(len(data), compressed)
        stream.arm(self.timeout, f"sending a frame of {len(data)} bytes")
        try:
            if len(header) + len(data) + len(FLUSHER) <= stream.MAX_IO_CHUNK:
                stream.write(header + data + FLUSHER)
            else:  # as rpyc does, but the body's tail goes out as a view, never copied
                first = stream.MAX_IO_CHUNK - len(header)
                stream.write(header + data[:first])
                stream.write(memoryview(data)[first:])
                stream.write(FLUSHER)
        except FrameTimeout as exc:
            self.dropped = Drop("send timeout", str(exc))
            raise
        finally:
            stream.disarm()
            request_ends()  # what follows is a wait for the peer: no GIL held, no run


def serve_bounded(
    service: Any, sock: Any, config: dict[str, Any], audit: Any, send_timeout: float | None
) -> None:
    """Serve one logged-in peer with rpyc over a BoundedChannel until it leaves or is
    dropped; a drop is written to ``audit`` under the peer and role in
    ``config["credentials"]``. Requests are capped at MAX_REQUEST_FRAME; replies are not
    (they are the agent's own and can be tens of MB), but each must go within send_timeout.
    """
    channel = BoundedChannel(
        DeadlineStream(sock), max_frame=MAX_REQUEST_FRAME, timeout=send_timeout
    )
    conn = service._connect(channel, config)
    try:
        conn.serve_all()
    finally:
        with contextlib.suppress(Exception):
            conn.close()
        if channel.dropped is not None:
            credentials = config.get("credentials")
            with contextlib.suppress(Exception):  # the audit never raises into the serve loop
                audit.record(
                    peer=getattr(credentials, "peer", "?"),
                    role=getattr(credentials, "role", "?"),
                    action=channel.dropped.kind,
                    target="connection",
                    result="dropped",
                    detail=channel.dropped.detail,
                )
