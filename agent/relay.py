"""The master relays an observer's call to one of its workers' agents (agent.workers).

One port per host: an observer logged in to the master asks ``worker(pid, method, args)``;
the master finds the worker (a descendant of this process whose agent noted its loopback
address in the 0700 runtime directory, agent.registry), logs in to it with the token of
the caller's own role (so the worker grants exactly that role), pins the worker's
certificate to the master's own, calls the method and hands back the worker's reply
bytes untouched. Each observer session has its own links (a worker's chunked listings
and tracemalloc sessions follow that observer), at most MAX_LINKS, closed with it.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import secrets
import socket
import ssl
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any

import psutil
import rpyc
from rpyc.core import consts

from agent import registry
from agent.errors import AgentError, BadRequest, NotFound
from agent.forksafe import handshake, openssl
from agent.gate import hang_up
from agent.tlsqueue import note_tls_failure, prepare_thread
from agent.version import AGENT_VERSION, PROTOCOL_VERSION
from agent.wire import (
    MAGIC,
    NONCE_BYTES,
    HandshakeError,
    agent_proof,
    cert_digest,
    client_proof,
    decode_nonce,
    recv_frame,
    send_frame,
    split_host_port,
)

log = logging.getLogger("agent")

# what an observer may ask of a worker through its master (never "worker" itself)
RELAYED = frozenset(
    {
        "hello",
        "process",
        "system",  # process, children, threads, exits: a worker's System tab, one call
        "threads",
        "tasks",
        "snapshot",
        "task_chunk",
        "children",
        "stack",
        "locals",
        "exposed",
        "history",
        "overview",
        "audit",
        "memory",
        "census",
        "trace_stats",
        "trace_baseline",
        "source",
        "cancel",
        "raise_in",
        "signal",
        "tracemalloc_start",
        "tracemalloc_stop",
        "profile_start",  # audited by the worker, whose profiler it is
        "profile_read",
        "profile_stop",
        "stalls",  # a worker's own loop stalls (its Stalls tab, its lag chart's marks)
        "metric_families",  # read-only: the master's own scrape asks it (agent.metrics)
        "task_cpu",
        "task_cpu_start",  # audited by the worker and, as an action on it, by the master
        "task_cpu_stop",
    }
)
# the ones the master audits as actions on the worker
CONTROL = frozenset(
    {
        "cancel",
        "raise_in",
        "signal",
        "tracemalloc_start",
        "tracemalloc_stop",
        "trace_baseline",
        "task_cpu_start",
        "task_cpu_stop",
    }
)
MAX_LINKS = 32  # workers one observer session holds links to
MAX_ARGS = 8
# under the observer's own call timeout (10 s by default): a frozen worker costs the
# caller an error from the master, not a timeout of the master's whole session. 4 s for
# the login, still leaving the call 2 s of CALL_TIMEOUT (logins that never ended, once
# taken for slow ones, were workers forked while the master was inside OpenSSL:
# agent.forksafe)
CONNECT_TIMEOUT = 4.0
CALL_TIMEOUT = 6.0


class WorkerUnreachable(AgentError):
    """The worker exists but its agent did not answer (frozen, overloaded, exiting)."""

    kind = "unreachable"


_links: weakref.WeakSet[socket.socket] = weakref.WeakSet()  # every open link's socket
_context: ssl.SSLContext | None = None
_context_lock = threading.Lock()


def _client_context() -> ssl.SSLContext:
    """The one TLS client context of the master's links (made once: making one is the
    costliest OpenSSL work of a link). The worker's certificate is pinned after the
    handshake to the master's own, so nothing is verified here."""
    global _context
    with _context_lock:
        if _context is None:
            with openssl():
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            _context = ctx
        return _context


def forget_links(_inherited: Any = None) -> None:
    """In a forked child (agent.forking): close the child's copies of the master's links
    to workers, never with shutdown(); a copy would keep a worker's session open after
    the master let go of it."""
    for sock in list(_links):
        with contextlib.suppress(OSError):
            sock.close()
    _links.clear()


@dataclass(frozen=True)
class RelayKeys:
    """What the master logs in to its workers with: its tokens and its certificate."""

    tokens: dict[str, str]
    cert_der: bytes | None


def check_args(args: Any) -> tuple[Any, ...]:
    """The relayed arguments: a short tuple of exact builtins (and tuples of str)."""
    if type(args) is not tuple or len(args) > MAX_ARGS:
        raise BadRequest(f"args must be a tuple of at most {MAX_ARGS} values")
    for value in args:
        if type(value) is tuple:
            if len(value) > 64 or any(type(v) is not str or len(v) > 1000 for v in value):
                raise BadRequest("a tuple argument must hold at most 64 short strings")
        elif type(value) not in (str, int, float, bool) or (
            type(value) is str and len(value) > 10_000
        ):
            raise BadRequest("arguments must be str, int, float, bool or tuples of str")
    return args


def worker_address(pid: int) -> str:
    """The loopback address of the agent in ``pid``, a descendant of this process."""
    try:
        proc = psutil.Process(pid)
        mine = psutil.Process()
        if pid == mine.pid or mine.pid not in {p.pid for p in proc.parents()}:
            raise NotFound(f"process {pid} is not a worker of this process")
        created = proc.create_time()
    except psutil.Error:
        raise NotFound(f"no process {pid}") from None
    address = registry.agent_address_of(pid, created)
    if address is None:
        raise NotFound(f"process {pid} runs no worker agent")
    return address


def _connect(
    address: str, token: str | None, cert_der: bytes | None, timeout: float = CONNECT_TIMEOUT
) -> rpyc.Connection:
    """Log in to a worker's agent as an observer would (agent.wire's handshake), within
    ``timeout`` seconds per step (CONNECT_TIMEOUT at most)."""
    timeout = max(0.01, min(timeout, CONNECT_TIMEOUT))
    from agent.channel import MAX_REPLY_FRAME, BoundedChannel, DeadlineStream

    parts = split_host_port(address)
    if parts is None:
        raise NotFound(f"worker agent address {address!r} is not host:port")
    raw = socket.create_connection(parts, timeout=timeout)
    sock: socket.socket = raw
    try:
        binding = b""
        if cert_der is not None:
            with openssl():
                sock = _client_context().wrap_socket(
                    raw, server_hostname=parts[0], do_handshake_on_connect=False
                )
            handshake(sock, timeout)
            prepare_thread()  # the reads and writes below wait for the worker, unguarded
            sock.settimeout(timeout)
            der = sock.getpeercert(binary_form=True)
            if der is None or not hmac.compare_digest(cert_digest(der), cert_digest(cert_der)):
                raise HandshakeError("the worker's certificate is not the master's")
            binding = cert_digest(der)
        hello = recv_frame(sock)
        if hello.get("proto") != MAGIC or hello.get("version") != PROTOCOL_VERSION:
            raise HandshakeError("the worker's agent speaks another protocol")
        server_nonce = decode_nonce(hello.get("nonce"))
        client_nonce = secrets.token_bytes(NONCE_BYTES)
        frame: dict[str, Any] = {
            "version": PROTOCOL_VERSION,
            "observer": AGENT_VERSION,
            "nonce": client_nonce.hex(),
        }
        if hello.get("auth") == "token":
            if not token:
                raise HandshakeError("the worker's agent asks for a token the master lacks")
            frame["mac"] = client_proof(token, server_nonce, client_nonce, binding)
        send_frame(sock, frame)
        reply = recv_frame(sock)
        if not reply.get("ok"):
            raise HandshakeError(f"the worker's agent refused the master: {reply.get('error')}")
        if token and not hmac.compare_digest(
            agent_proof(token, server_nonce, client_nonce, binding), str(reply.get("proof", ""))
        ):
            raise HandshakeError("the worker's agent could not prove it knows the token")
        sock.settimeout(None)
        _links.add(sock)
        conn = rpyc.connect_channel(
            BoundedChannel(DeadlineStream(sock), max_frame=MAX_REPLY_FRAME),
            service=rpyc.VoidService,
            config={
                "allow_pickle": False,
                "allow_public_attrs": False,
                "sync_request_timeout": timeout,
                "include_local_traceback": False,
            },
        )
        try:
            conn.root  # noqa: B018 (fetched once, within the connect timeout)
        except BaseException:
            _close_link(conn)
            raise
        conn._config["sync_request_timeout"] = CALL_TIMEOUT
        return conn
    except BaseException:
        if cert_der is not None:  # TLS: its error may be left in the thread's OpenSSL queue
            note_tls_failure()
        with contextlib.suppress(OSError):
            sock.close()
        raise


def _close_link(conn: rpyc.Connection) -> None:
    """Close a link without rpyc's goodbye round trip (a frozen worker would hold it)."""
    with contextlib.suppress(Exception):
        conn._channel.close()
    with contextlib.suppress(Exception):
        conn.close()


class _Link:
    """One worker's link of a session; its lock makes calls on it one at a time."""

    __slots__ = ("address", "conn", "lock")

    def __init__(self) -> None:
        self.address = ""
        self.conn: rpyc.Connection | None = None
        self.lock = threading.Lock()

    def drop(self) -> None:
        """Close the link (by the thread holding its lock, or when no call uses it)."""
        conn, self.conn = self.conn, None
        if conn is not None:
            _close_link(conn)

    def hang_up(self) -> None:
        """End the link under a call that holds its lock: the call wakes to an end of
        stream and drops the link itself (gate.hang_up)."""
        conn = self.conn
        if conn is not None:
            with contextlib.suppress(Exception):
                hang_up(conn._channel.stream.sock)


class Relay:
    """One observer session's links to workers, logged in with that session's role.

    Calls to different workers may run at once (agent.fanout); calls to one worker run
    one at a time on its link. A call waits at most its timeout for the link (a caller
    still waiting there for a frozen worker) and as long again for the reply."""

    def __init__(self, keys: RelayKeys, role: str) -> None:
        self._keys = keys
        self._role = role
        self._lock = threading.Lock()  # guards _links (the dict), not the calls
        self._links: dict[int, _Link] = {}
        self._closed = False

    def call(
        self, pid: int, method: str, args: tuple[Any, ...], timeout: float = CALL_TIMEOUT
    ) -> bytes:
        """The worker's reply to ``method(*args)``: its encoded envelope, untouched.
        ``timeout``: seconds (CALL_TIMEOUT at most) before the worker counts as frozen."""
        if method not in RELAYED:
            raise BadRequest(f"{method!r} cannot be relayed to a worker")
        check_args(args)
        deadline = time.monotonic() + max(0.01, min(timeout, CALL_TIMEOUT))
        link = self._slot(pid)
        if not link.lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise WorkerUnreachable(f"worker {pid} is still busy with an earlier call")
        try:
            if self._links.get(pid) is not link or self._closed:
                raise WorkerUnreachable(f"the link to worker {pid} was closed meanwhile")
            reused = link.conn is not None and not link.conn.closed
            try:
                payload = self._ask(link, pid, method, args, deadline)
            except EOFError:
                if not reused:
                    raise WorkerUnreachable(f"worker {pid} closed its link") from None
                # an old link to a worker that ended (or stopped its agent): check it again
                payload = self._ask(link, pid, method, args, deadline)
        finally:
            if self._closed:  # closed meanwhile: this call's link is closed by this call
                link.drop()
            link.lock.release()
        if type(payload) is not bytes:
            raise BadRequest(f"worker {pid} sent a non-bytes reply")
        return payload

    def _ask(
        self, link: _Link, pid: int, method: str, args: tuple[Any, ...], deadline: float
    ) -> Any:
        """One round trip on the link (its lock held); EOFError when the link was closed
        under it (the link is dropped), WorkerUnreachable on any other failure."""
        if self._closed:  # a call woken by the close's hang-up logs in no more
            raise WorkerUnreachable(f"the link to worker {pid} was closed meanwhile")
        conn = self._connected(link, pid, deadline)
        if self._closed:  # closed while this link logged in (call() drops the link)
            raise WorkerUnreachable(f"the link to worker {pid} was closed meanwhile")
        config = conn._config
        config["sync_request_timeout"] = max(0.01, deadline - time.monotonic())
        try:  # one round trip: rpyc's call-attribute request on the worker's root
            return conn.sync_request(consts.HANDLE_CALLATTR, conn.root, method, args, ())
        except (EOFError, OSError, TimeoutError) as exc:  # rpyc's timeout: TimeoutError
            link.drop()
            if isinstance(exc, (EOFError, BrokenPipeError, ConnectionResetError)):
                raise EOFError(str(exc)) from None
            why = str(exc) or type(exc).__name__
            raise WorkerUnreachable(f"worker {pid} did not answer: {why}") from None
        finally:
            config["sync_request_timeout"] = CALL_TIMEOUT

    def _slot(self, pid: int) -> _Link:
        """The link entry of ``pid``, made (one idle link let go when MAX_LINKS are held)."""
        with self._lock:
            link = self._links.get(pid)
            if link is not None:
                return link
            if len(self._links) >= MAX_LINKS:
                idle = next((p for p, k in self._links.items() if k.lock.acquire(False)), None)
                if idle is None:
                    raise WorkerUnreachable(f"all {MAX_LINKS} links of this session are busy")
                old = self._links.pop(idle)
                old.drop()
                old.lock.release()
            link = self._links[pid] = _Link()
            return link

    def _connected(self, link: _Link, pid: int, deadline: float) -> rpyc.Connection:
        """The link's connection (its lock held), logged in again when it was lost. The
        worker is checked (a descendant whose agent noted this address) when logging
        in only: while its link is open the worker lives, so its pid is still its own
        (a process that ends closes the link, and the next call checks again)."""
        if link.conn is not None and not link.conn.closed:
            return link.conn
        link.drop()
        address = worker_address(pid)
        token = self._keys.tokens.get(self._role)
        if self._keys.tokens and not token:
            raise NotFound(f"the master holds no {self._role} token to reach worker {pid}")
        try:
            conn = _connect(address, token, self._keys.cert_der, deadline - time.monotonic())
        except (OSError, HandshakeError, EOFError) as exc:  # OSError includes timeouts
            raise WorkerUnreachable(f"cannot reach the agent of worker {pid}: {exc}") from None
        link.address, link.conn = address, conn
        return conn

    def close(self) -> None:
        """Close every link; one a call is waiting on is hung up (that call ends at once
        and closes it: never under its read)."""
        with self._lock:
            self._closed = True
            links, self._links = list(self._links.values()), {}
        for link in links:
            if link.lock.acquire(blocking=False):
                try:
                    link.drop()
                finally:
                    link.lock.release()
            else:
                link.hang_up()
