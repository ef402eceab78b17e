"""A master's workers in the GUI: each worker's subtree fetched through the master's own
session (in the link's pool, never on the GUI thread), targets inside a worker
(``pid-N/ID``, as the CLI takes them) routed to that worker, and the worker set a node
has had (who is there now, who exited, how many were replaced).

Qt-free: the tabs and the control actions only call these.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from agent.codec import WireError, from_wire
from agent.schema import ChildInfo, Overview, WorkerExit
from observer.client import Node, WorkerNode
from observer.errors import ObserverError, RemoteError
from observer.format import ended_text, human_bytes, human_seconds, replaced_text
from observer.gui.delta import TASK_LIMIT, Delta, Shadow
from observer.gui.follow import follow_of, tree_follow
from observer.gui.joined import joined_delta, joined_of

T = TypeVar("T")

# One WorkerNode per worker per master session: each keeps its own task cache, so a
# worker's later snapshots are incremental like the master's.
_workers: weakref.WeakKeyDictionary[Node, dict[int, WorkerNode]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def split_target(target: str) -> tuple[int | None, str]:
    """``pid-12/task-3`` -> (12, 'task-3'); an id of the master itself -> (None, id)."""
    head, sep, rest = target.partition("/")
    number = head.removeprefix("pid-")
    if sep and head.startswith("pid-") and number.isdigit() and rest:
        return int(number), rest
    return None, target


def in_process(node: Node, target: str) -> tuple[Node, str]:
    """The process a target lives in (the master, or one of its workers reached through
    the master's session) and the target's id there."""
    pid, rest = split_target(target)
    return (node, target) if pid is None else (worker_of(node, pid), rest)


def routed(target: str, call: Callable[[Node, str], T]) -> Callable[[Node], T]:
    """A link job that runs ``call(process, id)`` where the target lives."""
    return lambda node: call(*in_process(node, target))


def same_process(target: str, other: str) -> str:
    """``other``, an id read in ``target``'s process (an awaited task), as a full target."""
    pid, _rest = split_target(target)
    return other if pid is None or "/" in other else f"pid-{pid}/{other}"


def worker_of(node: Node, pid: int) -> WorkerNode:
    """The worker ``pid`` of ``node``, the same object for as long as the session lives."""
    with _lock:
        known = _workers.setdefault(node, {})
        worker = known.get(pid)
        if worker is None:
            worker = known[pid] = node.worker(pid)
        return worker


def _forget_others(node: Node, pids: Iterable[int]) -> None:
    """Drop the workers a master no longer lists (they exited): bounded memory."""
    keep = set(pids)
    with _lock:
        known = _workers.get(node, {})
        for pid in [p for p in known if p not in keep]:
            del known[pid]


def process_tree_delta(
    node: Node, shadow: Shadow, task_cpu: Callable[[], dict[str, float] | None] | None = None
) -> Delta:
    """The Processes tab's refresh: master -> workers -> their threads -> loops -> tasks,
    as the rows that changed since ``shadow`` (worker thread); ``task_cpu()`` gives the
    master's tasks' CPU cells (observer.gui.taskcpu).

    Ids inside a worker are ``pid-N/ID``, so inspect and the control actions reach it.
    Each process is followed from what changed in it (observer.gui.follow; a master's
    parts joined by observer.gui.joined): a steady refresh moves only changed rows, and
    once the workers are known it is one round trip (Node.tree_changes), the workers of
    the last refresh asked while the master lists itself; one forked since then is
    asked in a second round trip, that once."""
    joined = joined_of(shadow)
    got: dict[int, Any] = {}
    if joined is not None and joined.pids:  # the master's and its workers' changes at once
        held = [(worker_of(node, pid), joined.cursor(pid)) for pid in joined.pids]
        changes, _found, got = node.tree_changes(joined.cursor(), held, TASK_LIMIT)
    else:
        cursor = joined.cursor() if joined is not None else follow_of(shadow).cursor
        changes = node.changes(cursor, TASK_LIMIT)
    cpu = task_cpu() if task_cpu is not None else None
    pids = [c.pid for c in changes.children if c.agent]
    if not pids:
        if joined is not None:  # its workers are gone: one process again, from scratch
            shadow.follow, shadow.rows = None, {}
            follow_of(shadow).cursor = changes.cursor
        return tree_follow(changes, shadow, cpu)
    _forget_others(node, pids)
    new = [pid for pid in pids if pid not in got]  # all at first; then a worker forked since
    if new:
        held = [(worker_of(node, pid), joined.cursor(pid) if joined else (0, 0)) for pid in new]
        got.update(node.worker_changes(held, TASK_LIMIT)[1])
    workers = {
        pid: f"unreachable: {one}" if isinstance(one, ObserverError) else one
        for pid, one in ((pid, got.get(pid, ObserverError("no answer"))) for pid in pids)
    }
    return joined_delta(shadow, changes, workers, cpu)


# ------------------------------------------------------------------ the worker set


@dataclass(frozen=True)
class WorkerRow:
    """One worker as the System and Cluster tabs show it."""

    pid: int
    name: str
    status: str  # the OS status, or "exited" for one that is gone
    age: float | None  # seconds since it started (the agent's clock)
    rss: int | None
    cpu: float | None
    tasks: int | None = None  # filled where the worker itself was asked
    loop_lag: float | None = None  # likewise
    note: str = ""  # why the worker's own figures are missing, or who replaced it
    ended: str = ""  # an exited one: how, as the master saw it ("exited (signal 9)")

    @property
    def exited(self) -> bool:
        return self.status == "exited"

    @property
    def shown_status(self) -> str:
        """The status as shown: how an exited worker ended, when known."""
        return self.ended or self.status


class WorkerWatch:
    """The workers a node has had, across refreshes: those listed now, those gone (kept
    ``keep`` refreshes as "exited"), and how many exited since watching (a respawning
    master replaces each, so this counts restarts as seen from here)."""

    def __init__(self, keep: int = 3) -> None:
        self.keep = keep
        self.restarts = 0
        self._last: dict[int, WorkerRow] = {}
        self._gone: dict[int, tuple[WorkerRow, int]] = {}  # pid -> (row, refreshes left)

    def update(
        self, children: Iterable[ChildInfo], now: float, exits: Iterable[WorkerExit] = ()
    ) -> list[WorkerRow]:
        """Rows for this refresh: live workers (by pid), then recently exited ones, saying
        how they ended and who replaced them when the master saw it (``exits``, its
        WorkerSet), else guessing the replacement from the newcomers.

        ``now`` is the agent's clock (its process start_time + uptime), which ages use."""
        ended = {e.pid: e for e in exits}
        live = {
            c.pid: WorkerRow(
                c.pid,
                c.name,
                c.status,
                max(0.0, now - c.create_time) if c.create_time else None,
                c.rss,
                c.cpu_percent,
            )
            for c in children
            if c.agent
        }
        gone = [pid for pid in self._last if pid not in live]
        newcomers = sorted(pid for pid in live if pid not in self._last) if self._last else []
        for number, pid in enumerate(gone):
            self.restarts += 1
            note = f"replaced by pid {newcomers[number]}" if number < len(newcomers) else ""
            row = self._last[pid]
            self._gone[pid] = (
                WorkerRow(pid, row.name, "exited", None, None, None, note=note),
                self.keep,
            )
        self._gone = {
            pid: (_seen_ending(row, ended.get(pid)), left - 1)
            for pid, (row, left) in self._gone.items()
            if left > 0 and pid not in live
        }
        self._last = live
        exited = [row for row, _left in self._gone.values()]
        return [*sorted(live.values(), key=lambda r: r.pid), *exited]


def _seen_ending(row: WorkerRow, gone: WorkerExit | None) -> WorkerRow:
    """An exited worker's row with how the master saw it end and the worker that took
    its slot (the master's word replaces the guess from newcomers)."""
    if gone is None or gone.pid != row.pid:
        return row
    return replace(row, ended=ended_text(gone), note=replaced_text(gone))


WORKERS = "Workers"  # the System tab's section


def worker_text(row: WorkerRow) -> str:
    """One worker as a line: what it is, its state, age, memory and CPU; an exited one:
    what it was and how it ended ('exited (signal 9), replaced by pid N')."""
    if row.exited:
        return f"{row.name} · " + ", ".join(p for p in (row.shown_status, row.note) if p)
    parts = [row.name, row.status]
    if row.age is not None:
        parts.append(f"age {human_seconds(row.age)}")
    if row.rss is not None:
        parts.append(f"rss {human_bytes(row.rss)}")
    if row.cpu is not None:
        parts.append(f"cpu {row.cpu:.1f}%")
    if row.tasks is not None:
        parts.append(f"{row.tasks:,} tasks")
    return " · ".join(parts)


def worker_section(rows: list[WorkerRow], restarts: int) -> tuple[str, list[tuple[str, str]]]:
    """The System tab's Workers section: count, pids, restarts seen, one line per worker."""
    live = [r for r in rows if not r.exited]
    summary = [
        ("Count", str(len(live))),
        ("PIDs", ", ".join(str(r.pid) for r in live) or "none"),
        ("Exited since watching", str(restarts)),
    ]
    return WORKERS, [*summary, *((f"pid {r.pid}", worker_text(r)) for r in rows)]


@dataclass(frozen=True)
class WorkerLoad:
    """A worker's own figures, read from its agent through the master (Cluster tab)."""

    tasks: int
    loop_lag: float | None
    uptime: float


def cluster_workers(
    node: Node, detail: bool
) -> tuple[tuple[ChildInfo, ...], dict[int, WorkerLoad | str], tuple[WorkerExit, ...]]:
    """A host's workers, how the recent ones ended and, when ``detail`` (its row is
    expanded), each worker's own tasks and loop lag: one round trip, the master asking
    every worker's overview at once (no history wanted)."""
    try:
        found, replies = node.fan_out("overview" if detail else "", float("inf"))
    except RemoteError as exc:
        if exc.kind != "bad-request":  # not a master: no workers
            raise
        return node.children(), {}, ()
    loads: dict[int, WorkerLoad | str] = {}
    for pid, data in replies.items():
        if isinstance(data, ObserverError):
            loads[pid] = f"unreachable: {data}"
            continue
        try:
            seen = from_wire(Overview, data)
        except WireError as exc:
            loads[pid] = f"malformed overview: {exc}"
        else:
            loads[pid] = WorkerLoad(seen.now.tasks, seen.now.loop_lag, seen.uptime)
    return found.workers, loads, found.exits


def with_load(row: WorkerRow, load: WorkerLoad | str | None) -> WorkerRow:
    """A worker's row with its own figures (tasks, loop lag, age), or why they are missing."""
    if row.exited or load is None:
        return row
    if isinstance(load, str):
        return replace(row, note=load)
    return replace(row, tasks=load.tasks, loop_lag=load.loop_lag, age=load.uptime)
