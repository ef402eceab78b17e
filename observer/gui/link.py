"""One node's connection, driven from its own worker thread so the GUI never blocks on I/O.

The GUI posts jobs (``request``); the worker connects when needed, runs each job against
the ``Node`` and hands the reply back on the GUI thread through a queued signal. This is
the single chokepoint where failures become a node status (Erlang observer's try_rpc).
Jobs with the same key coalesce: on a slow link a refresh never queues behind another.
"""

from __future__ import annotations

import contextlib
import enum
import gc
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil
from PyQt6.QtCore import QObject, pyqtSignal

from agent.security import is_loopback_host
from agent.wire import split_host_port
from observer.client import Node, connect
from observer.errors import (
    AuthenticationError,
    CertificateError,
    ConnectError,
    NodeDown,
    NodeTimeout,
    ObserverError,
    VersionMismatch,
)
from observer.gcpause import gc_paused
from observer.nodesfile import NodeSpec

log = logging.getLogger(__name__)

BACKOFF_START = 0.5
BACKOFF_MAX = 15.0


class Status(enum.Enum):
    """What the status light shows."""

    CONNECTING = "connecting"
    UP = "up"
    AUTH_FAILED = "auth failed"
    DOWN = "down"
    DEAD = "dead"


@dataclass
class Reply:
    """The outcome of one job, delivered on the GUI thread."""

    key: str
    value: Any = None
    error: str = ""
    error_type: type[BaseException] | None = None
    rtt: float | None = None
    seconds: float = 0.0  # wall time of the job in the worker, connecting included
    finished: float = 0.0  # time.time() when it finished
    source: Any = None  # the NodeLink that ran it, so a view can ignore a node it left

    @property
    def ok(self) -> bool:
        return not self.error


Callback = Callable[[Reply], None]


class NotConnected(ObserverError):
    """No connection right now (connect failed, or waiting out the backoff); status is set."""


@dataclass
class _Job:
    key: str
    fn: Callable[[Node], Any]
    callbacks: list[Callback]


class NodeLink(QObject):
    """A node as the GUI sees it: status, identity, last round trip, and a job queue."""

    changed = pyqtSignal()  # status, name, role or rtt changed; always on the GUI thread
    _delivered = pyqtSignal(object, object)  # (callbacks, Reply), crosses to the GUI thread
    _status_set = pyqtSignal()  # emitted by the worker, re-emitted as ``changed`` (queued)

    def __init__(self, spec: NodeSpec, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.spec = spec
        self.status = Status.CONNECTING
        self.error = ""
        self.name = spec.name
        self.pid: int | None = None
        self.role = ""
        self.rtt: float | None = None
        self.restarted = ""  # "pid 10 -> 12" after the agent came back as a new process
        self.busy = 0  # jobs queued or running
        self._node: Node | None = None
        self._pending: OrderedDict[str, _Job] = OrderedDict()
        self._cond = threading.Condition()
        self._closed = False
        self._next_attempt = 0.0
        self._backoff = BACKOFF_START
        self._delivered.connect(self._deliver)
        self._status_set.connect(self.changed)
        self._thread = threading.Thread(
            target=self._run, name=f"observer-link-{spec.address}", daemon=True
        )
        self._thread.start()

    # ------------------------------------------------------------ GUI-thread API

    @property
    def label(self) -> str:
        return self.name or self.spec.label

    @property
    def can_control(self) -> bool:
        """True when this connection's role may cancel, raise and signal."""
        return self.role in ("operator", "admin")

    def request(self, key: str, fn: Callable[[Node], Any], callback: Callback | None) -> None:
        """Run ``fn(node)`` in the worker; ``callback(reply)`` runs later on the GUI thread.

        A job still waiting under the same key is replaced (its callbacks kept), so a slow
        node never builds a backlog of refreshes.
        """
        with self._cond:
            if self._closed:
                return
            job = self._pending.get(key)
            if job is None:
                self._pending[key] = _Job(key, fn, [callback] if callback else [])
                self.busy += 1
            else:
                job.fn = fn
                if callback and callback not in job.callbacks:
                    job.callbacks.append(callback)
            self._cond.notify()
        if job is None and self.busy == 1:
            self.changed.emit()  # now waiting: the window may show a spinner

    def reconnect_now(self) -> None:
        """Forget the backoff so the next job connects at once (Ctrl-R on a down node)."""
        with self._cond:
            self._next_attempt = 0.0
            self._backoff = BACKOFF_START

    def close(self) -> None:
        """Stop the worker and close the connection (idempotent)."""
        with self._cond:
            self._closed = True
            self._pending.clear()
            self._cond.notify()
        node, self._node = self._node, None
        if node is not None:
            node.close()

    def _deliver(self, callbacks: list[Callback], reply: Reply) -> None:
        self.busy = max(0, self.busy - 1)
        reply.source = self
        self.changed.emit()
        for cb in callbacks:
            try:
                cb(reply)
            except Exception:  # one broken view must not take the others down
                log.exception("GUI callback for %s failed", reply.key)

    # ------------------------------------------------------------ worker thread

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                _key, job = self._pending.popitem(last=False)
            reply = self._execute(job)
            if self._closed:
                return
            with contextlib.suppress(RuntimeError):  # the QObject is gone at exit
                self._delivered.emit(job.callbacks, reply)

    def _execute(self, job: _Job) -> Reply:
        started = time.perf_counter()
        reply = Reply(job.key)
        try:
            node = self._ensure_connected()
            with gc_paused():  # decoding and row building make ~1M objects: no GC passes
                reply.value = job.fn(node)
                gc.freeze()  # and none later over them: they are freed by refcount
            reply.rtt = node.last_rtt
            self.rtt = node.last_rtt
        except (NodeDown, NodeTimeout) as exc:  # the connection broke under this job
            self._lost(exc)
            reply.error, reply.error_type = str(exc), type(exc)
        except ObserverError as exc:  # not connected, or the node refused this request
            reply.error, reply.error_type = str(exc), type(exc)
        except Exception as exc:  # a bug in a job: report it, keep the worker alive
            log.exception("job %s on %s failed", job.key, self.spec.address)
            reply.error, reply.error_type = f"internal error: {exc!r}", type(exc)
        reply.seconds = time.perf_counter() - started
        reply.finished = time.time()
        return reply

    def _ensure_connected(self) -> Node:
        node = self._node
        if node is not None and not node.closed:
            return node
        wait = self._next_attempt - time.monotonic()
        if wait > 0:
            raise NotConnected(f"{self.error or 'node is down'} (retrying in {math.ceil(wait)}s)")
        self._set(Status.CONNECTING, "")
        try:
            node = connect(self.spec.address, **self.spec.connect_kwargs())
            hello = node.hello()
        except (AuthenticationError, CertificateError, VersionMismatch) as exc:
            self._schedule_retry(longer=True)
            self._set(Status.AUTH_FAILED, str(exc))
            raise NotConnected(str(exc)) from exc
        except ObserverError as exc:
            self._schedule_retry()
            self._set(self._down_or_dead(exc), str(exc))
            raise NotConnected(str(exc)) from exc
        if self.pid is not None and hello.pid != self.pid:
            self.restarted = f"restarted: pid {self.pid} -> {hello.pid}"
        self.pid = hello.pid
        self.name = self.spec.name or hello.node
        self.role = node.role
        self._node = node
        self._backoff = BACKOFF_START
        self._next_attempt = 0.0
        self._set(Status.UP, "")
        return node

    def _lost(self, exc: Exception) -> None:
        node, self._node = self._node, None
        if node is not None:
            node.close()
        self._schedule_retry()
        self._set(Status.DOWN, str(exc))

    def _down_or_dead(self, exc: Exception) -> Status:
        """Dead when we know the process is gone: a loopback node whose pid no longer exists."""
        if isinstance(exc, ConnectError) and self.pid is not None:
            parts = split_host_port(self.spec.address)
            if parts is not None and is_loopback_host(parts[0]) and not psutil.pid_exists(self.pid):
                return Status.DEAD
        return Status.DOWN

    def _schedule_retry(self, longer: bool = False) -> None:
        self._next_attempt = time.monotonic() + (BACKOFF_MAX if longer else self._backoff)
        self._backoff = min(self._backoff * 2, BACKOFF_MAX)

    def _set(self, status: Status, error: str) -> None:
        changed = status is not self.status or error != self.error
        self.status, self.error = status, error
        if changed:
            with contextlib.suppress(RuntimeError):  # the QObject is gone at exit
                self._status_set.emit()
