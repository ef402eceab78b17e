"""The observer's half of rpyc's protocol: fetch the agent's root, call it by name.

That is all the client ever asks of rpyc (observer.client: HANDLE_GETROOT once, then
HANDLE_CALLATTR with plain values, replies plain values), yet importing rpyc loads all
of it (servers, registry, classic mode, proxy classes made for 34 builtin types at
import, pickle, logging): ~17 ms of CPU, a fifth of a CLI call's fixed cost. This speaks
the same bytes (rpyc's brine values in rpyc's frames, agent.frames) with the same
limits, so the agent's stock rpyc connection cannot tell it apart (tests/test_rpc.py
holds it against rpyc's own). rpyc is imported only on the rare paths: an exception
the agent sends back (rpyc's vinegar makes the very exception objects it made before)
and a request the agent makes of us (only ping and close are answered).
"""

from __future__ import annotations

import contextlib
import itertools
import ssl
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from typing import Any

from agent.frames import (
    COMPRESSION_LEVEL,
    COMPRESSION_THRESHOLD,
    FLUSHER,
    FRAME_HEADER,
    FrameError,
    inflate,
)
from agent.tlsqueue import clear_tls_errors, note_tls_failure, recv_into

# rpyc.core.consts
MSG_REQUEST, MSG_REPLY, MSG_EXCEPTION = 1, 2, 3
LABEL_VALUE, LABEL_TUPLE, LABEL_LOCAL_REF, LABEL_REMOTE_REF = 1, 2, 3, 4
HANDLE_PING, HANDLE_CLOSE, HANDLE_GETROOT, HANDLE_CALLATTR = 1, 2, 3, 8

MAX_DEPTH = 64  # nesting of a reply's tuples (the agent's are a few deep)
IO_CHUNK = 64000  # rpyc's STREAM_CHUNK


class ProtocolError(EOFError):
    """The agent sent what rpyc's protocol, or this client, does not allow; the
    connection is closed (an EOFError, as for a peer hanging up)."""


# ---------------------------------------------------------------- brine (rpyc.core.brine)

_F8 = struct.Struct("!d")
_C16 = struct.Struct("!dd")
_I4 = struct.Struct("!L")
_IMM = {i: bytes([i + 0x50]) for i in range(-0x30, 0xA0)}  # small ints: one byte


def _dump(obj: Any, out: list[bytes]) -> None:
    kind = type(obj)
    if kind is tuple:
        n = len(obj)
        if n < 5:
            out.append(b"\x02\x10\x11\x12\x13"[n : n + 1])
        elif n < 256:
            out.append(b"\x14" + bytes([n]))
        else:
            out.append(b"\x15" + _I4.pack(n))
        for item in obj:
            _dump(item, out)
    elif kind is str:
        out.append(b"\x08")
        _dump(obj.encode("utf8"), out)
    elif kind is bytes:
        n = len(obj)
        if n < 5:
            out.append(b"\x01\x0a\x0b\x0c\x0d"[n : n + 1] + obj)
        elif n < 256:
            out.append(b"\x0e" + bytes([n]) + obj)
        else:
            out.append(b"\x0f" + _I4.pack(n) + obj)
    elif kind is bool:
        out.append(b"\x03" if obj else b"\x04")
    elif kind is int:
        if obj in _IMM:
            out.append(_IMM[obj])
        else:
            digits = str(obj).encode()
            n = len(digits)
            out.append((b"\x16" + bytes([n]) if n < 256 else b"\x17" + _I4.pack(n)) + digits)
    elif obj is None:
        out.append(b"\x00")
    elif kind is float:
        out.append(b"\x18" + _F8.pack(obj))
    elif kind is complex:
        out.append(b"\x1b" + _C16.pack(obj.real, obj.imag))
    elif kind is slice:
        out.append(b"\x19")
        _dump((obj.start, obj.stop, obj.step), out)
    elif kind is frozenset:
        out.append(b"\x1a")
        _dump(tuple(obj), out)
    elif obj is NotImplemented:
        out.append(b"\x05")
    elif obj is Ellipsis:
        out.append(b"\x06")
    else:
        raise TypeError(f"cannot send a {kind.__name__} to an agent (plain values only)")


def dump(obj: Any) -> bytes:
    """``obj`` as rpyc's brine encodes it (TypeError for what brine cannot hold)."""
    out: list[bytes] = []
    _dump(obj, out)
    return b"".join(out)


_SIMPLE = frozenset(
    {type(None), int, bool, float, bytes, str, complex, type(NotImplemented), type(Ellipsis)}
)


def dumpable(obj: Any) -> bool:
    """Whether brine holds ``obj`` (rpyc sends it by value), as rpyc's brine says."""
    kind = type(obj)
    if kind in _SIMPLE:
        return True
    if kind is tuple or kind is frozenset:
        return all(dumpable(item) for item in obj)
    if kind is slice:
        return dumpable(obj.start) and dumpable(obj.stop) and dumpable(obj.step)
    return False


class _Reader:
    """brine's loader over one frame's body, refusing what a well-formed one never holds
    (rpyc's own trusts lengths and tags)."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self.data = data
        self.pos = 0

    def take(self, count: int) -> bytes:
        start = self.pos
        end = start + count
        if end > len(self.data):
            raise ProtocolError("truncated value in a reply")
        self.pos = end
        return bytes(self.data[start:end])

    def length(self, tag: int) -> int:
        """The length after a ``_L1`` (one byte) or ``_L4`` (four) tag."""
        if tag in (0x0E, 0x14, 0x16):
            return self.take(1)[0]
        return int(_I4.unpack(self.take(4))[0])

    def load(self, depth: int = 0) -> Any:
        if depth > MAX_DEPTH:
            raise ProtocolError("reply nested too deep")
        tag = self.take(1)[0]
        if 0x20 <= tag < 0xF0:  # a small int
            return tag - 0x50
        if tag == 0x08:  # str: its UTF-8 bytes follow, as a bytes value
            raw = self.load(depth + 1)
            if type(raw) is not bytes:
                raise ProtocolError("bad string in a reply")
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ProtocolError("bad string in a reply") from None
        if tag in (0x01, 0x0A, 0x0B, 0x0C, 0x0D):
            return self.take((0x01, 0x0A, 0x0B, 0x0C, 0x0D).index(tag))
        if tag in (0x0E, 0x0F):
            return self.take(self.length(tag))
        if tag in (0x02, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15):
            short = (0x02, 0x10, 0x11, 0x12, 0x13)
            count = short.index(tag) if tag in short else self.length(tag)
            if count > len(self.data) - self.pos:  # each item takes a byte at least
                raise ProtocolError("truncated tuple in a reply")
            return tuple([self.load(depth + 1) for _ in range(count)])
        if tag in (0x16, 0x17):
            digits = self.take(self.length(tag))
            try:
                return int(digits)
            except ValueError:
                raise ProtocolError("bad int in a reply") from None
        simple = _SINGLETONS.get(tag, _Reader)
        if simple is not _Reader:
            return simple
        if tag == 0x18:
            return _F8.unpack(self.take(8))[0]
        if tag == 0x1B:
            return complex(*_C16.unpack(self.take(16)))
        if tag == 0x19:
            parts = self.load(depth + 1)
            if type(parts) is not tuple or len(parts) != 3:
                raise ProtocolError("bad slice in a reply")
            return slice(*parts)
        if tag == 0x1A:
            items = self.load(depth + 1)
            if type(items) is not tuple:
                raise ProtocolError("bad frozenset in a reply")
            try:
                return frozenset(items)
            except TypeError:
                raise ProtocolError("bad frozenset in a reply") from None
        raise ProtocolError(f"unknown value tag {tag:#x} in a reply")


_SINGLETONS: dict[int, Any] = {
    0x00: None,
    0x03: True,
    0x04: False,
    0x05: NotImplemented,
    0x06: Ellipsis,
}


def load(data: bytes | bytearray | memoryview) -> Any:
    """A brine value (ProtocolError when ``data`` is not exactly one)."""
    reader = _Reader(data)
    value = reader.load()
    if reader.pos != len(data):
        raise ProtocolError("trailing bytes after a value")
    return value


# ---------------------------------------------------------------- boxing (rpyc's _box)


def box(obj: Any) -> tuple[int, Any]:
    """An argument as rpyc boxes it: by value, or a tuple of boxed items; never by
    reference (the observer hands the agent no object: TypeError)."""
    if dumpable(obj):
        return LABEL_VALUE, obj
    if type(obj) is tuple:
        return LABEL_TUPLE, tuple(box(item) for item in obj)
    raise TypeError(f"cannot send a {type(obj).__name__} to an agent (plain values only)")


def unbox(package: Any, depth: int = 0) -> Any:
    """A reply's value; an object reference (only the root is one) is refused."""
    if type(package) is not tuple or len(package) != 2 or depth > MAX_DEPTH:
        raise ProtocolError("malformed reply")
    label, value = package
    if label == LABEL_VALUE:
        return value
    if label == LABEL_TUPLE and type(value) is tuple:
        return tuple([unbox(item, depth + 1) for item in value])
    raise ProtocolError("the agent sent an object reference where a value was due")


# ---------------------------------------------------------------- the connection


def _frame(msg: int, seq: int, args: Any) -> bytes:
    """rpyc's message (type byte, then brine of (seq, args)) in rpyc's frame."""
    body = bytes([msg]) + dump((seq, args))
    compressed = 0
    if len(body) > COMPRESSION_THRESHOLD:
        body = zlib.compress(body, COMPRESSION_LEVEL)
        compressed = 1
    return FRAME_HEADER.pack(len(body), compressed) + body + FLUSHER


class Connection:
    """One logged-in connection to an agent's rpyc service (after agent.wire's
    handshake), over ``sock``. One request at a time is waited for (observer.client
    holds its node's lock around each); ``close`` may come from another thread.

    The socket's descriptor is closed only while no thread reads or writes it (see
    _release): a descriptor closed under a reader is free for the next open() anywhere
    in the process, and OpenSSL, which keeps the number, would read the next record's
    header from that file (a GUI thread saving the nodes file lost its first 5 bytes)
    or write a request into it. Another thread's close shuts the socket down, which
    wakes the reader; the last to let go closes it.

    ``timeout`` bounds waiting for each reply to begin, and then each stretch of a reply
    without progress; replies over ``max_frame`` are refused from their header.
    """

    def __init__(self, sock: Any, *, timeout: float, max_frame: int) -> None:
        self.sock = sock
        self.timeout = timeout
        self.max_frame = max_frame
        self.closed = False
        self._seq = itertools.count()
        self._root: tuple[str, int, int] | None = None
        self._root_seq: int | None = None  # the root asked for, its reply not read yet
        self._send_lock = threading.Lock()
        self._recv_lock = threading.Lock()
        self._tls = isinstance(sock, ssl.SSLSocket)

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ requests

    def ask_root(self) -> None:
        """Send the request for the agent's root now, its reply read by ``root``: sent
        right after the login's proof, it rides in the same round trip (the agent's
        login reads its frame exactly; rpyc then finds the request waiting)."""
        if self._root is None and self._root_seq is None:
            seq = next(self._seq)
            try:  # as the login's own frames go: the socket's timeout, no drop on failure
                self.sock.sendall(_frame(MSG_REQUEST, seq, (HANDLE_GETROOT, (LABEL_VALUE, ()))))
            except OSError:
                return  # the login's reply says why (root() would ask again)
            self._root_seq = seq

    def root(self) -> tuple[str, int, int]:
        """The agent's root object's id (its HANDLE_GETROOT round trip on first use,
        unless ``ask_root`` sent it earlier)."""
        if self._root is None:
            seq = self._root_seq
            if seq is None:
                seq = next(self._seq)
                self._send(MSG_REQUEST, seq, (HANDLE_GETROOT, (LABEL_VALUE, ())))
                self._root_seq = seq
            try:
                label, value = self._reply(seq, refs=True)
            except Exception:
                self._root_seq = None  # ask again next time (a late reply is skipped)
                raise
            if (
                label != LABEL_REMOTE_REF
                or type(value) is not tuple
                or len(value) != 3
                or not all(type(v) is int for v in value[1:])
            ):
                self._drop()
                raise ProtocolError("the agent's root is not an object reference")
            self._root = (str(value[0]), value[1], value[2])
        return self._root

    def call(self, method: str, args: tuple[Any, ...]) -> Any:
        """``root.<method>(*args)`` in one round trip (HANDLE_CALLATTR); the reply's value,
        or the exception the agent raised, raised here."""
        root = self.root()
        seq = next(self._seq)
        kwargs = (LABEL_VALUE, ())
        boxed = (LABEL_TUPLE, ((LABEL_LOCAL_REF, root), (LABEL_VALUE, method), box(args), kwargs))
        self._send(MSG_REQUEST, seq, (HANDLE_CALLATTR, boxed))
        return self._reply(seq)

    def _send(self, msg: int, seq: int, args: Any) -> None:
        """One message in one frame (``_frame``), sent whole or the connection dropped.
        Each request starts with this thread's OpenSSL error queue empty
        (agent.tlsqueue): what its timed reads meet is then about this link alone."""
        frame = _frame(msg, seq, args)
        if self._tls:
            clear_tls_errors()
        with self._using(self._send_lock):
            if self.closed:
                raise EOFError("connection closed")
            try:
                self.sock.settimeout(self.timeout)
                self.sock.sendall(frame)
            except OSError as exc:  # a timeout too: part of a frame may be out
                self._drop()
                raise EOFError(f"connection lost: {exc}") from None

    def _reply(self, seq: int, refs: bool = False) -> Any:
        """Frames until the reply to ``seq`` (a late reply to an earlier request that
        timed out is skipped; a request from the agent is answered)."""
        deadline = time.monotonic() + self.timeout
        with self._using(self._recv_lock):
            while True:
                body = self._recv_frame(deadline)
                if not body:
                    self._protocol("empty message")
                msg = body[0]
                try:
                    got, args = load(memoryview(body)[1:])
                except ProtocolError:
                    self._drop()
                    raise
                except (TypeError, ValueError):  # not a (seq, args) pair
                    self._protocol("malformed message")
                if msg == MSG_REQUEST:
                    self._answer(got, args)
                    continue
                if got != seq:
                    continue  # a late reply to an earlier request that timed out
                if msg == MSG_REPLY:
                    if refs:
                        if type(args) is not tuple or len(args) != 2:
                            self._protocol("malformed reply")
                        return args
                    try:
                        return unbox(args)
                    except ProtocolError:
                        self._drop()
                        raise
                if msg == MSG_EXCEPTION:
                    raise _exception(args)
                self._protocol(f"unknown message type {msg}")

    def _protocol(self, detail: str) -> None:
        self._drop()
        raise ProtocolError(detail)

    def _answer(self, seq: Any, args: Any) -> None:
        """A request from the agent: ping is echoed, close closes; anything else gets
        the error rpyc's VoidService would give (the observer serves no object)."""
        handler = args[0] if type(args) is tuple and len(args) == 2 else None
        if handler == HANDLE_CLOSE:
            self._drop()
            raise EOFError("connection closed by the agent")
        if handler == HANDLE_PING:
            try:
                self._send(MSG_REPLY, seq, (LABEL_VALUE, unbox(args[1])[0]))
                return
            except (ProtocolError, IndexError, TypeError):
                pass
        error = (
            ("builtins", "AttributeError"),
            ("the observer serves no objects",),
            (("_remote_version", "<version denied>"),),
            "<traceback denied>",
        )
        self._send(MSG_EXCEPTION, seq, error)

    def _recv_frame(self, deadline: float) -> bytearray:
        """One frame's body: its header awaited until ``deadline`` (TimeoutError, the
        connection still usable), the rest with ``timeout`` for each stretch."""
        header = bytearray(FRAME_HEADER.size)
        self._read_into(memoryview(header), deadline)
        length, compressed = FRAME_HEADER.unpack(header)
        if length > self.max_frame:
            self._protocol(f"frame of {length} bytes declared, limit {self.max_frame}")
        body = bytearray(length + len(FLUSHER))
        self._read_into(memoryview(body), None)
        if body[-1:] != FLUSHER:
            self._protocol("frame does not end as rpyc frames do")
        del body[-len(FLUSHER) :]
        if compressed:
            try:
                return bytearray(inflate(body, self.max_frame))
            except FrameError as exc:
                self._protocol(str(exc))
        return body

    def _read_into(self, view: memoryview, deadline: float | None) -> None:
        """Fill ``view``; before its first byte, wait until ``deadline`` (None: the
        timeout); after it, ``timeout`` at most between bytes."""
        done = 0
        try:
            while done < len(view):
                if self.closed:
                    raise EOFError("connection closed")
                if done == 0 and deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError("no reply within the timeout")
                    self.sock.settimeout(left)
                else:
                    self.sock.settimeout(self.timeout)
                count = recv_into(self.sock, view[done:], min(IO_CHUNK, len(view) - done))
                if not count:
                    self._drop()
                    raise EOFError("connection closed by the agent")
                done += count
        except TimeoutError:
            if done or deadline is None:  # the stream is mid-frame now: unusable
                self._drop()
            raise
        except OSError as exc:
            self._drop()
            raise EOFError(f"connection lost: {exc}") from None

    # ------------------------------------------------------------ closing

    def close(self, goodbye: bool = True) -> None:
        """Close (idempotent). With ``goodbye``, rpyc's close request first, and its
        answer (the agent hanging up) awaited unless another thread is reading."""
        if self.closed:
            return
        if goodbye:
            try:
                seq = next(self._seq)
                self._send(MSG_REQUEST, seq, (HANDLE_CLOSE, (LABEL_VALUE, ())))
                if self._recv_lock.acquire(blocking=False):
                    try:
                        self._recv_frame(time.monotonic() + self.timeout)
                    finally:
                        self._recv_lock.release()
            except (EOFError, TimeoutError, OSError):
                pass
        self._drop()

    @contextlib.contextmanager
    def _using(self, lock: threading.Lock) -> Iterator[None]:
        """Hold ``lock`` (reading or writing the socket); on letting go of a dropped
        connection, close its descriptor if no other thread uses it (_release)."""
        try:
            with lock:
                yield
        finally:
            if self.closed:
                self._release()

    def _drop(self) -> None:
        """Close the socket (rpyc's SocketStream.close: shut down both ways first). Every
        failure drops the connection: over TLS its error may be left in this thread's
        OpenSSL queue, emptied before this thread's next request (agent.tlsqueue)."""
        if self._tls:
            note_tls_failure()
        self.closed = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(2)  # socket.SHUT_RDWR: wakes a reader, the number stays ours
        self._release()

    def _release(self) -> None:
        """Close the descriptor of a dropped connection unless another thread reads or
        writes it: that thread closes it as it lets go (``_using``), since ``closed``
        was set before this looked. A thread that drops while holding a lock itself
        leaves it to its own letting go too. Closing twice is harmless."""
        if not self._send_lock.acquire(blocking=False):
            return
        try:
            if self._recv_lock.acquire(blocking=False):
                self._recv_lock.release()  # nobody reads, and nobody can start: closed
                with contextlib.suppress(OSError):
                    self.sock.close()
        finally:
            self._send_lock.release()


def _exception(raw: Any) -> BaseException:
    """The exception the agent sent, as rpyc's own connection makes it (rpyc's
    vinegar, with rpyc's defaults: builtin exceptions only, no imports)."""
    from rpyc.core import vinegar

    try:
        exc = vinegar.load(
            raw,
            import_custom_exceptions=False,
            instantiate_custom_exceptions=False,
            instantiate_oldstyle_exceptions=False,
        )
    except Exception:  # not the shape vinegar makes
        return ProtocolError("malformed exception in a reply")
    if isinstance(exc, type) and issubclass(exc, BaseException):
        return exc()  # StopIteration, sent as a constant
    if isinstance(exc, BaseException):
        return exc
    return ProtocolError("malformed exception in a reply")
