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
import weakref
from dataclasses import dataclass
from typing import Any

import psutil
import rpyc
from rpyc.core import consts

from agent import registry
from agent.errors import AgentError, BadRequest, NotFound
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
# caller an error from the master, not a timeout of the master's whole session
CONNECT_TIMEOUT = 2.0
CALL_TIMEOUT = 6.0


class WorkerUnreachable(AgentError):
    """The worker exists but its agent did not answer (frozen, overloaded, exiting)."""

    kind = "unreachable"


_links: weakref.WeakSet[socket.socket] = weakref.WeakSet()  # every open link's socket


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


def _connect(address: str, token: str | None, cert_der: bytes | None) -> rpyc.Connection:
    """Log in to a worker's agent as an observer would (agent.wire's handshake)."""
    from agent.channel import MAX_REPLY_FRAME, BoundedChannel, DeadlineStream

    parts = split_host_port(address)
    if parts is None:
        raise NotFound(f"worker agent address {address!r} is not host:port")
    raw = socket.create_connection(parts, timeout=CONNECT_TIMEOUT)
    sock: socket.socket = raw
    try:
        binding = b""
        if cert_der is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE  # pinned below to the master's own certificate
            sock = ctx.wrap_socket(raw, server_hostname=parts[0])
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
                "sync_request_timeout": CONNECT_TIMEOUT,
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
        with contextlib.suppress(OSError):
            sock.close()
        raise


def _close_link(conn: rpyc.Connection) -> None:
    """Close a link without rpyc's goodbye round trip (a frozen worker would hold it)."""
    with contextlib.suppress(Exception):
        conn._channel.close()
    with contextlib.suppress(Exception):
        conn.close()


class Relay:
    """One observer session's links to workers, logged in with that session's role."""

    def __init__(self, keys: RelayKeys, role: str) -> None:
        self._keys = keys
        self._role = role
        self._lock = threading.Lock()
        self._links: dict[int, tuple[str, rpyc.Connection]] = {}

    def call(self, pid: int, method: str, args: tuple[Any, ...]) -> bytes:
        """The worker's reply to ``method(*args)``: its encoded envelope, untouched."""
        if method not in RELAYED:
            raise BadRequest(f"{method!r} cannot be relayed to a worker")
        check_args(args)
        address = worker_address(pid)
        with self._lock:  # one call at a time per session, as rpyc serves it anyway
            conn = self._link(pid, address)
            try:  # one round trip: rpyc's call-attribute request on the worker's root
                payload = conn.sync_request(consts.HANDLE_CALLATTR, conn.root, method, args, ())
            except (EOFError, OSError, TimeoutError) as exc:  # rpyc's timeout is a TimeoutError
                self._drop(pid)
                why = str(exc) or type(exc).__name__
                raise WorkerUnreachable(f"worker {pid} did not answer: {why}") from None
        if type(payload) is not bytes:
            raise BadRequest(f"worker {pid} sent a non-bytes reply")
        return payload

    def _link(self, pid: int, address: str) -> rpyc.Connection:
        held = self._links.get(pid)
        if held is not None and held[0] == address and not held[1].closed:
            return held[1]
        self._drop(pid)
        if len(self._links) >= MAX_LINKS:
            self._drop(next(iter(self._links)))
        token = self._keys.tokens.get(self._role)
        if self._keys.tokens and not token:
            raise NotFound(f"the master holds no {self._role} token to reach worker {pid}")
        try:
            conn = _connect(address, token, self._keys.cert_der)
        except (OSError, HandshakeError, EOFError) as exc:  # OSError includes timeouts
            raise WorkerUnreachable(f"cannot reach the agent of worker {pid}: {exc}") from None
        self._links[pid] = (address, conn)
        return conn

    def _drop(self, pid: int) -> None:
        held = self._links.pop(pid, None)
        if held is not None:
            _close_link(held[1])

    def close(self) -> None:
        with self._lock:
            for pid in list(self._links):
                self._drop(pid)
