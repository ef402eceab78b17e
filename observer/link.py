"""One node's connection and health, Qt-free: the single place where failures become a status.

A ``Link`` connects when asked to run something, turns every failure into one of the
statuses the contract names (up, down, dead, auth-failed, connecting), waits out a
growing backoff before reconnecting, and notices when the agent came back as a new
process. The CLI's fleet view, the chaos runner and the GUI's per-node worker all use it
(Erlang observer's ``try_rpc``).
"""

from __future__ import annotations

import contextlib
import enum
import math
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import psutil

from agent.schema import Hello
from agent.security import is_loopback_host
from agent.wire import split_host_port
from observer.client import Node, check_settings, connect
from observer.errors import (
    AuthenticationError,
    BadSetting,
    CertificateError,
    ConnectionRefused,
    NodeDown,
    NodeTimeout,
    ObserverError,
    VersionMismatch,
)
from observer.nodesfile import NodeSpec

T = TypeVar("T")
BACKOFF_START = 0.5
BACKOFF_MAX = 15.0


class Status(enum.Enum):
    """What the status light shows; the values are the contract's words."""

    CONNECTING = "connecting"
    UP = "up"
    AUTH_FAILED = "auth-failed"
    DOWN = "down"
    DEAD = "dead"


def same_process(before: Hello, now: Hello) -> bool:
    """Whether two hellos come from one process: same pid and start time (a pid alone
    is not enough: pid 1 in a container is every restart's pid)."""
    return now.pid == before.pid and abs(now.started - before.started) <= 1.0


def _failed(exc: ObserverError) -> Status:
    """AUTH_FAILED when the agent or our settings for verifying it refused the link (a
    retry soon would not help), else DOWN."""
    if isinstance(exc, (AuthenticationError, CertificateError, VersionMismatch)):
        return Status.AUTH_FAILED
    return Status.DOWN


class NotConnected(ObserverError):
    """No connection right now (connect failed, or waiting out the backoff); status is set."""


class Link:
    """A node's connection, status, identity and restart history.

    Calls are serialised (one at a time per node); any thread may call. ``on_change``
    runs in the calling thread after the status, error or identity changed.
    """

    def __init__(self, spec: NodeSpec, on_change: Callable[[], None] | None = None) -> None:
        self.spec = spec
        self.on_change = on_change
        self.status = Status.CONNECTING
        self.error = ""
        self.name = spec.name
        self.hello: Hello | None = None  # what the agent said when it last came up
        self.role = ""
        self.agent_version = ""
        self.rtt: float | None = None
        self.restarted = ""  # "restarted 12:00:01: pid 10 -> 12" once the agent came back anew
        self.restarts = 0
        self.last_ok = 0.0  # time.time() of the last answered call
        self.cert_warning = ""  # "agent certificate expired on ..." when it last came up
        self._node: Node | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._next_attempt = 0.0
        self._backoff = BACKOFF_START
        self._invalid = ""  # a malformed setting: no connection is ever tried
        try:
            check_settings(spec.address, spec.fingerprint or None, spec.timeout)
        except BadSetting as exc:  # shown at once, instead of 'connecting' forever
            self._invalid = self.error = str(exc)
            self.status = _failed(exc)

    @property
    def label(self) -> str:
        return self.name or self.spec.label

    @property
    def pid(self) -> int | None:
        return self.hello.pid if self.hello else None

    @property
    def address(self) -> str:
        return self.spec.address

    @property
    def can_control(self) -> bool:
        """True when this connection's role may cancel, raise and signal."""
        return self.role in ("operator", "admin")

    def call(self, fn: Callable[[Node], T], timeout: float | None = None) -> T:
        """Run ``fn(node)``, connecting first if needed; ``timeout`` bounds connecting and
        each call inside (default: the spec's). Raises ObserverError with the status set."""
        with self._lock:
            if self._closed:
                raise NotConnected("closed")
            try:
                node = self._ensure_connected(timeout)
                with node.deadline(timeout):
                    value = fn(node)
                self.rtt = node.last_rtt
                self.last_ok = time.time()
                return value
            except (NodeDown, NodeTimeout) as exc:  # the connection broke under this call
                self._lost(exc)
                raise

    def reconnect_now(self) -> None:
        """Forget the backoff so the next call connects at once."""
        self._next_attempt = 0.0
        self._backoff = BACKOFF_START

    def close(self) -> None:
        """Close the connection; later calls fail (idempotent, any thread, no network
        wait: the GUI closes links on its own thread, frozen nodes included)."""
        self._closed = True
        node, self._node = self._node, None
        if node is not None:
            node.close(goodbye=False)

    # ------------------------------------------------------------ internals

    def _ensure_connected(self, timeout: float | None) -> Node:
        node = self._node
        if node is not None and not node.closed:
            return node
        if self._invalid:
            raise NotConnected(self._invalid)
        wait = self._next_attempt - time.monotonic()
        if wait > 0:
            raise NotConnected(f"{self.error or 'node is down'} (retrying in {math.ceil(wait)}s)")
        if self.status is Status.UP:  # closed under us; a retry of a down node stays down
            self._set(Status.CONNECTING, "")
        kwargs = self.spec.connect_kwargs()
        try:
            node = connect(self.spec.address, connect_timeout=timeout, **kwargs)
            with node.deadline(timeout):
                hello = node.hello()
        except ObserverError as exc:
            refused = _failed(exc) is Status.AUTH_FAILED
            self._schedule_retry(longer=refused)
            self._set(Status.AUTH_FAILED if refused else self._down_or_dead(exc), str(exc))
            raise NotConnected(str(exc)) from exc
        self._came_up(node, hello)
        return node

    def _came_up(self, node: Node, hello: Hello) -> None:
        if self.hello is not None and not same_process(self.hello, hello):
            stamp = time.strftime("%H:%M:%S")
            self.restarted = f"restarted {stamp}: pid {self.hello.pid} -> {hello.pid}"
            self.restarts += 1
        self.hello = hello
        self.name = self.spec.name or hello.node
        self.role = node.role
        self.agent_version = node.agent_version
        self.cert_warning = node.cert_warning
        self.rtt = node.last_rtt
        self.last_ok = time.time()
        self._node = node
        self._backoff = BACKOFF_START
        self._next_attempt = 0.0
        if self._closed:  # closed while connecting: do not leak the connection
            node.close()
            self._node = None
        self._set(Status.UP, "")

    def _lost(self, exc: Exception) -> None:
        node, self._node = self._node, None
        if node is not None:
            node.close(goodbye=False)  # it did not answer: it would not answer goodbye either
        self._schedule_retry()
        self._set(Status.DOWN, str(exc))

    def _down_or_dead(self, exc: Exception) -> Status:
        """Dead when the process is known to be gone: a loopback node whose pid no longer
        exists, or a node seen up before whose port now refuses (nothing listens there:
        its process exited). Anything else, a timeout above all, is down."""
        if not isinstance(exc, ConnectionRefused) or self.pid is None:
            return Status.DOWN
        parts = split_host_port(self.spec.address)
        if parts is not None and is_loopback_host(parts[0]):
            return Status.DOWN if psutil.pid_exists(self.pid) else Status.DEAD
        return Status.DEAD

    def _schedule_retry(self, longer: bool = False) -> None:
        self._next_attempt = time.monotonic() + (BACKOFF_MAX if longer else self._backoff)
        self._backoff = min(self._backoff * 2, BACKOFF_MAX)

    def _set(self, status: Status, error: str) -> None:
        changed = status is not self.status or error != self.error
        self.status, self.error = status, error
        if changed and self.on_change is not None:
            with contextlib.suppress(Exception):
                self.on_change()
