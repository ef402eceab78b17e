"""One node's jobs, run on a shared bounded pool so the GUI never blocks on I/O.

The GUI posts jobs (``request``); a pool worker runs them in order against the node's
``observer.link.Link`` (which connects when needed and turns failures into a status)
and hands each reply back on the GUI thread through a queued signal. Jobs with the same
key coalesce: on a slow link a refresh never queues behind another. The pool is shared
by every node and bounded, so a hundred nodes do not make a hundred threads, and a node
runs at most one job at a time, so one slow node holds at most one worker.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from PyQt6.QtCore import QObject, pyqtSignal

from observer.client import Node
from observer.errors import ObserverError
from observer.gcpause import gc_paused
from observer.link import Link, NotConnected, Status
from observer.nodesfile import NodeSpec

__all__ = ["NodeLink", "NotConnected", "Reply", "Status"]

log = logging.getLogger(__name__)

POOL_SIZE = 16
# A worker decoding 100k rows holds the GIL until the interpreter asks it to let go: by
# default after 5 ms, and the GUI thread needs the GIL again for every Python call Qt
# makes into it (each data() of a paint), so it waited 5 ms many times over. 1 ms keeps
# the GUI responsive while a worker runs, at a small cost to the worker.
SWITCH_INTERVAL = 0.001
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def shared_pool() -> ThreadPoolExecutor:
    """The bounded pool every node's jobs run on (created on first use)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
            _pool = ThreadPoolExecutor(POOL_SIZE, thread_name_prefix="observer-link")
        return _pool


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


@dataclass
class _Job:
    key: str
    fn: Callable[[Node], Any]
    callbacks: list[Callback]
    timeout: float | None


class NodeLink(QObject):
    """A node as the GUI sees it: status, identity, last round trip, and a job queue."""

    changed = pyqtSignal()  # status, name, role or rtt changed; always on the GUI thread
    _delivered = pyqtSignal(object, object)  # (callbacks, Reply), crosses to the GUI thread
    _status_set = pyqtSignal()  # emitted by a worker, re-emitted as ``changed`` (queued)

    def __init__(self, spec: NodeSpec, parent: QObject | None = None, health: Any = None) -> None:
        """``health``: what runs the jobs, a ``Link`` of ``spec`` unless given (a worker's
        ``observer.gui.workerlink.WorkerHealth``, which calls through its master's)."""
        super().__init__(parent)
        if health is None:
            health = Link(spec)
        health.on_change = self._health_changed
        self.health = health
        self.busy = 0  # jobs queued or running
        self.gone_since = 0.0  # time.time() its address left DNS (0: it has not)
        self.origin = ""  # the DNS name (host:port) this address came from ("": none)
        self._pending: OrderedDict[str, _Job] = OrderedDict()
        self._lock = threading.Lock()
        self._draining = False
        self._current = ""  # the key of the job running now
        self._closed = False
        self._delivered.connect(self._deliver)
        self._status_set.connect(self.changed)

    # ------------------------------------------------------------ what the views read

    spec = property(lambda self: self.health.spec)
    status = property(lambda self: self.health.status)
    error = property(lambda self: self.health.error)
    name = property(lambda self: self.health.name)
    pid = property(lambda self: self.health.pid)
    role = property(lambda self: self.health.role)
    rtt = property(lambda self: self.health.rtt)
    restarted = property(lambda self: self.health.restarted)
    cert_warning = property(lambda self: self.health.cert_warning)
    last_ok = property(lambda self: self.health.last_ok)
    label = property(lambda self: self.health.label)
    can_control = property(lambda self: self.health.can_control)

    # ------------------------------------------------------------ GUI-thread API

    def request(
        self,
        key: str,
        fn: Callable[[Node], Any],
        callback: Callback | None,
        timeout: float | None = None,
    ) -> None:
        """Run ``fn(node)`` on the pool; ``callback(reply)`` runs later on the GUI thread.

        A job still waiting under the same key is replaced (its callbacks kept), so a slow
        node never builds a backlog of refreshes. ``timeout`` bounds this job's calls
        (default: the node's): liveness probes fail fast, big snapshots take their time.
        """
        with self._lock:
            if self._closed:
                return
            job = self._pending.get(key)
            if job is None:
                self._pending[key] = _Job(key, fn, [callback] if callback else [], timeout)
                self.busy += 1
            else:
                job.fn, job.timeout = fn, timeout
                if callback and callback not in job.callbacks:
                    job.callbacks.append(callback)
            start = not self._draining
            self._draining = True
        if start:
            shared_pool().submit(self._drain)
        if job is None and self.busy == 1:
            self.changed.emit()  # now waiting: the window may show a spinner

    def running(self, key: str) -> bool:
        """True while a job under ``key`` waits or runs (a refresh need not be asked again)."""
        with self._lock:
            return key in self._pending or self._current == key

    def reconnect_now(self) -> None:
        """Forget the backoff so the next job connects at once (Ctrl-R on a down node)."""
        self.health.reconnect_now()

    def close(self) -> None:
        """Drop waiting jobs and close the connection (idempotent)."""
        with self._lock:
            self._closed = True
            self._pending.clear()
        self.health.close()

    def _deliver(self, callbacks: list[Callback], reply: Reply) -> None:
        self.busy = max(0, self.busy - 1)
        reply.source = self
        self.changed.emit()
        for cb in callbacks:
            try:
                cb(reply)
            except Exception:  # one broken view must not take the others down
                log.exception("GUI callback for %s failed", reply.key)

    def _health_changed(self) -> None:
        with contextlib.suppress(RuntimeError):  # the QObject is gone at exit
            self._status_set.emit()

    # ------------------------------------------------------------ pool worker

    def _drain(self) -> None:
        """Run this node's jobs in order until none wait (one pool worker at a time)."""
        while True:
            with self._lock:
                if self._closed or not self._pending:
                    self._draining = False
                    self._current = ""
                    return
                _key, job = self._pending.popitem(last=False)
                self._current = job.key
            reply = self._execute(job)
            if self._closed:
                continue
            try:
                self._delivered.emit(job.callbacks, reply)
            except RuntimeError:  # the QObject is gone at exit
                return

    def _execute(self, job: _Job) -> Reply:
        started = time.perf_counter()
        reply = Reply(job.key)

        def run(node: Node) -> Any:
            with gc_paused():  # decoding and row building make ~1M objects: no GC passes
                value = job.fn(node)
                gc.freeze()  # and none later over them: they are freed by refcount
            return value

        try:
            reply.value = self.health.call(run, job.timeout)
            reply.rtt = self.health.rtt
        except ObserverError as exc:  # not connected, lost, or the node refused this request
            reply.error, reply.error_type = str(exc), type(exc)
        except Exception as exc:  # a bug in a job: report it, keep the worker alive
            log.exception("job %s on %s failed", job.key, self.spec.address)
            reply.error, reply.error_type = f"internal error: {exc!r}", type(exc)
        reply.seconds = time.perf_counter() - started
        reply.finished = time.time()
        return reply
