"""One worker of a master opened as a node of its own, Qt-free: its health and identity.

A ``WorkerHealth`` stands where a node's ``observer.link.Link`` stands under a
``NodeLink``: every call runs through the master's Link (its one session, its lock, its
reconnects) on the worker's ``WorkerNode`` (observer.gui.workers.worker_of), so every tab
works on a worker as on a node, with the master's role.

A worker that exits stays dead: its entry keeps the last data it showed (the charts and
census of a worker that died are why someone opened it) and names the worker that took
its place, which the user opens with one click instead of having it swapped in under the
old charts. Nothing is asked of a dead worker again; its master is asked which worker
replaced it (at most once a second) until one did.
"""

from __future__ import annotations

import contextlib
import fnmatch
import threading
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import replace
from typing import TypeVar

from agent.relay import CALL_TIMEOUT, CONNECT_TIMEOUT
from agent.schema import ChildInfo, Hello, WorkerExit
from observer.client import Node, parse_pid
from observer.errors import BadRequest, NotFound, ObserverError, RemoteError
from observer.format import ended_text
from observer.gui.workers import worker_of
from observer.link import Link, NotConnected, Status, same_process

T = TypeVar("T")

# a relayed call answers within the master's own bounds on its link to the worker (a
# frozen worker costs an error from the master, not a timeout of the master's session)
RELAY_WAIT = CONNECT_TIMEOUT + CALL_TIMEOUT + 1.0
LOOK_EVERY = 1.0  # seconds between asking the master for a dead worker's replacement


def worker_label(name: str, pid: int) -> str:
    """A worker's entry: its role label and pid (``gunicorn worker (age 3) pid 1234``)."""
    return f"{name} pid {pid}" if name else f"worker pid {pid}"


def live_workers(children: Iterable[ChildInfo]) -> list[ChildInfo]:
    """A master's children that run an agent and have not exited, oldest first."""
    alive = [c for c in children if c.agent and c.status != "zombie"]
    return sorted(alive, key=lambda c: (c.create_time, c.pid))


def pick_worker(children: Iterable[ChildInfo], which: str) -> ChildInfo:
    """The worker ``which`` names: its pid (``1234``, ``pid-1234``), else its place among
    the live workers oldest first (``1`` is the oldest), else a glob on its role label
    (``http-worker-2``, ``'ForkPoolWorker-*'``: the oldest that matches)."""
    workers = live_workers(children)
    text = which.strip()
    if not workers:
        raise NotFound("not-found", "the node has no live worker running an agent")
    try:
        number = parse_pid(text)
    except BadRequest:
        number = None
    if number is not None:
        for child in workers:
            if child.pid == number:
                return child
        if not text.startswith("pid-") and 1 <= number <= len(workers):
            return workers[number - 1]
        raise NotFound(
            "not-found",
            f"no worker {text}: the node's workers are pids "
            f"{', '.join(str(c.pid) for c in workers)} (or 1-{len(workers)}, oldest first)",
        )
    for child in workers:
        if fnmatch.fnmatchcase(child.name, text):
            return child
    raise NotFound(
        "not-found",
        f"no worker named {text!r}: the node's workers are "
        + ", ".join(worker_label(c.name, c.pid) for c in workers),
    )


def _kind(name: str) -> str:
    """A role label without its numbers: the kind of worker (``ForkPoolWorker-``)."""
    return "".join(ch for ch in name if not ch.isdigit())


def replacement(
    name: str,
    started: float,
    pid: int,
    children: Iterable[ChildInfo],
    taken: Collection[int] = (),
) -> ChildInfo | None:
    """The worker that took the place of the dead ``pid`` (role label ``name``, started at
    ``started``): a live worker started after it, not ``taken`` (opened already), with the
    same label first (a slot: ``http-worker-2``), else the same kind of label
    (``ForkPoolWorker-5`` for ``ForkPoolWorker-3``), else any; the oldest such."""
    newer = [
        c
        for c in live_workers(children)
        if c.pid != pid and c.create_time >= started and c.pid not in taken
    ]
    for same in (
        lambda c: c.name == name,
        lambda c: _kind(c.name) == _kind(name),
        lambda c: True,
    ):
        found = [c for c in newer if same(c)]
        if found:
            return found[0]
    return None


class WorkerHealth:
    """A worker's status, identity and calls, reached through its master's ``Link``.

    Offers what a ``NodeLink`` reads of a ``Link`` (status, error, label, role, pid, rtt,
    ``call``), so a worker is shown and refreshed like any node. ``taken()`` names the pids
    already opened in the window (a replacement is looked for among the others)."""

    def __init__(
        self,
        master: Link,
        pid: int,
        name: str,
        started: float = 0.0,
        on_change: Callable[[], None] | None = None,
        taken: Callable[[], set[int]] = set,
    ) -> None:
        self.master = master
        self.worker_pid = pid
        self.role_name = name
        self.started = started  # the process's start time (0: learnt from its hello)
        self.on_change = on_change
        self.taken = taken
        self.spec = replace(master.spec, name=worker_label(name, pid))
        self.status = Status.CONNECTING
        self.error = ""
        self.hello: Hello | None = None
        self.rtt: float | None = None
        self.last_ok = 0.0
        self.restarted = ""
        self.restarts = 0
        self.cert_warning = ""
        self.exited_at = 0.0  # time.time() its death was noticed (0: alive)
        self.replaced_by: ChildInfo | None = None
        self.gone: WorkerExit | None = None  # its end as the master's agent recorded it
        self._session: Node | None = None  # the master session the hello was read on
        self._looked = 0.0
        self._closed = False
        self._lock = threading.Lock()

    # ------------------------------------------------------------ what NodeLink reads

    @property
    def label(self) -> str:
        return self.spec.name

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pid(self) -> int:
        return self.worker_pid

    @property
    def address(self) -> str:
        return self.master.spec.address

    @property
    def role(self) -> str:
        return self.master.role

    @property
    def agent_version(self) -> str:
        return self.master.agent_version

    @property
    def can_control(self) -> bool:
        return self.master.can_control

    @property
    def exited(self) -> bool:
        return self.exited_at > 0

    def exit_text(self) -> str:
        """``exited`` and, once known, who took its place."""
        if not self.exited:
            return ""
        stamp = time.strftime("%H:%M:%S", time.localtime(self.exited_at))
        text = f"{self.label} {ended_text(self.gone)} (noticed {stamp})"
        if self.replaced_by is not None:
            new = self.replaced_by
            text += f"; replaced by {worker_label(new.name, new.pid)}"
            text += ": open it from this entry's menu in the node list"
        return text

    def reconnect_now(self) -> None:
        self.master.reconnect_now()

    def close(self) -> None:
        """Stop using the master's session (never closes it: the master stays shown)."""
        self._closed = True

    # ------------------------------------------------------------ calls

    def call(self, fn: Callable[[Node], T], timeout: float | None = None) -> T:
        """``fn(worker)`` through the master's session. A worker found gone turns dead;
        a master that cannot be reached makes the worker down, saying so."""
        if self._closed:
            raise NotConnected("closed")
        if self.exited:
            self._look_for_replacement()
            raise NotConnected(self.exit_text())
        # never under the relay's own bounds: a short liveness timeout on a relayed call
        # would time out the master's session and drop it for every view
        wait = max(timeout or self.master.spec.timeout, RELAY_WAIT)
        try:
            value = self.master.call(lambda node: self._run(node, fn), wait)
        except _Exited as exc:
            self._died(exc.children, exc.exits)
            raise NotConnected(self.exit_text()) from None
        except RemoteError as exc:
            if exc.kind in ("not-found", "unreachable") and self._gone():
                raise NotConnected(self.exit_text()) from exc
            if exc.kind == "unreachable":
                self._set(Status.DOWN, str(exc))
            raise
        except ObserverError as exc:  # the master's session: not connected, lost, timed out
            self._set(Status.DOWN, f"master {self.master.label}: {exc}")
            raise
        self.rtt = self.master.rtt
        self.last_ok = time.time()
        self._set(Status.UP, "")
        return value

    def _run(self, node: Node, fn: Callable[[Node], T]) -> T:
        """In the master's session: make sure the pid is still the worker first seen (a
        new session, or a reused pid, would reach another process), then ``fn``."""
        worker = worker_of(node, self.worker_pid)
        if node is not self._session or self.hello is None:
            hello = worker.hello()
            if self.hello is not None and not same_process(self.hello, hello):
                raise _Exited(*_workers_of(node))
            if self.started and abs(hello.started - self.started) > 1.0:
                raise _Exited(*_workers_of(node))
            self.hello, self._session = hello, node
            self.started = self.started or hello.started
        value = fn(worker)
        if isinstance(value, Hello) and not same_process(self.hello, value):
            raise _Exited(*_workers_of(node))  # a ping answered by another process
        return value

    def _gone(self) -> bool:
        """Whether the worker exited (its master no longer lists it live); marks it dead."""
        try:
            children, exits = self.master.call(_workers_of, RELAY_WAIT)
        except ObserverError:
            return False
        if any(
            c.pid == self.worker_pid
            and c.status != "zombie"
            and (not self.started or abs(c.create_time - self.started) <= 1.0)
            for c in children
        ):
            return False
        self._died(children, exits)
        return True

    def _died(self, children: Iterable[ChildInfo], exits: Iterable[WorkerExit]) -> None:
        with self._lock:
            if not self.exited:
                self.exited_at = time.time()
            self._find_replacement(children, exits)
        self._set(Status.DEAD, self.exit_text())

    def _look_for_replacement(self) -> None:
        """Ask the master (at most once a second) which worker took this one's place."""
        if self.replaced_by is not None or time.monotonic() - self._looked < LOOK_EVERY:
            return
        self._looked = time.monotonic()
        try:
            children, exits = self.master.call(_workers_of, RELAY_WAIT)
        except ObserverError:
            return
        with self._lock:
            self._find_replacement(children, exits)
        self._set(Status.DEAD, self.exit_text())

    def _find_replacement(self, children: Iterable[ChildInfo], exits: Iterable[WorkerExit]) -> None:
        """How it ended and who took its place, as the master's agent saw it (its exit
        watch: the status, the worker now in its slot); else guessed from the workers."""
        children = tuple(children)
        gone = next((e for e in exits if e.pid == self.worker_pid), None)
        if gone is not None:
            self.gone = gone
        if self.replaced_by is not None:
            return
        if self.gone is not None and self.gone.replaced_by:
            live = {c.pid: c for c in live_workers(children)}
            self.replaced_by = live.get(self.gone.replaced_by)
        if self.replaced_by is None:
            self.replaced_by = replacement(
                self.role_name, self.started, self.worker_pid, children, self.taken()
            )

    def _set(self, status: Status, error: str) -> None:
        changed = status is not self.status or error != self.error
        self.status, self.error = status, error
        if changed and self.on_change is not None:
            with contextlib.suppress(Exception):  # a view's hook must not fail a call
                self.on_change()


def _workers_of(node: Node) -> tuple[tuple[ChildInfo, ...], tuple[WorkerExit, ...]]:
    """A master's children and how its recent workers ended (one round trip); an agent
    without the workers' fan-out gives its children and no exits."""
    try:
        found = node.worker_set()
    except ObserverError:
        return node.children(), ()
    return found.workers, found.exits


class _Exited(ObserverError):
    """The pid now answers as another process: the worker first seen exited."""

    def __init__(self, children: Iterable[ChildInfo], exits: Iterable[WorkerExit]) -> None:
        super().__init__("exited")
        self.children = tuple(children)
        self.exits = tuple(exits)
