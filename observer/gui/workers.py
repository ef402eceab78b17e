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

from agent.schema import ChildInfo, Snapshot
from observer.client import Node, WorkerNode
from observer.errors import ObserverError
from observer.format import human_bytes, human_seconds
from observer.gui.delta import TASK_LIMIT, Delta, Shadow, tree_delta
from observer.gui.rows import short_ids
from observer.tree import build_tree, graft_workers

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


def worker_pids(snap: Snapshot) -> list[int]:
    """The master's children that run an agent: its workers."""
    return [c.pid for c in snap.children if c.agent]


def worker_snapshots(node: Node, snap: Snapshot) -> dict[int, Snapshot | str]:
    """Each worker's snapshot through the master; a worker that cannot answer (it just
    died, or is frozen) gives why instead of failing the whole refresh."""
    pids = worker_pids(snap)
    _forget_others(node, pids)
    out: dict[int, Snapshot | str] = {}
    for pid in pids:
        try:
            out[pid] = worker_of(node, pid).snapshot()
        except ObserverError as exc:
            out[pid] = f"unreachable: {exc}"
    return out


def process_tree_delta(
    node: Node, shadow: Shadow, task_cpu: Callable[[], dict[str, float] | None] | None = None
) -> Delta:
    """The Processes tab's refresh: master -> workers -> their threads -> loops -> tasks,
    as the rows that changed since ``shadow`` (worker thread); ``task_cpu()`` gives the
    master's tasks' CPU cells (observer.gui.taskcpu).

    Ids inside a worker are ``pid-N/ID``, so inspect and the control actions reach it."""
    snap = node.snapshot(TASK_LIMIT)
    cpu = task_cpu() if task_cpu is not None else None
    workers = worker_snapshots(node, snap)
    top = graft_workers(build_tree(snap, cpu), workers)
    short = short_ids(snap)
    agent_threads = sum(1 for t in snap.threads if t.is_agent)
    for pid, worker in workers.items():
        if isinstance(worker, Snapshot):
            # under its worker's row an id reads as in the worker (task-3, tid-N); the
            # full pid-N/ID stays in the tooltip and is what the actions send
            own = short_ids(worker)
            ids = [*(t.id for t in worker.threads), *(lp.id for lp in worker.loops)]
            ids += [t.id for t in worker.tasks]
            short.update({f"pid-{pid}/{i}": own.get(i, i) for i in ids})
            agent_threads += sum(1 for t in worker.threads if t.is_agent)
    delta = tree_delta(snap, shadow, top, short, agent_threads)
    delta.counts["worker"] = len(workers)  # the status bar says how many
    return delta


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
    note: str = ""  # why the worker's own figures are missing, or how it ended

    @property
    def exited(self) -> bool:
        return self.status == "exited"


class WorkerWatch:
    """The workers a node has had, across refreshes: those listed now, those gone (kept
    ``keep`` refreshes as "exited"), and how many exited since watching (a respawning
    master replaces each, so this counts restarts as seen from here)."""

    def __init__(self, keep: int = 3) -> None:
        self.keep = keep
        self.restarts = 0
        self._last: dict[int, WorkerRow] = {}
        self._gone: dict[int, tuple[WorkerRow, int]] = {}  # pid -> (row, refreshes left)

    def update(self, children: Iterable[ChildInfo], now: float) -> list[WorkerRow]:
        """Rows for this refresh: live workers (by pid), then recently exited ones.

        ``now`` is the agent's clock (its process start_time + uptime), which ages use."""
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
            pid: (row, left - 1)
            for pid, (row, left) in self._gone.items()
            if left > 0 and pid not in live
        }
        self._last = live
        exited = [row for row, _left in self._gone.values()]
        return [*sorted(live.values(), key=lambda r: r.pid), *exited]


WORKERS = "Workers"  # the System tab's section


def worker_set(node: Node) -> tuple[Any, tuple[ChildInfo, ...]]:
    """What the System tab shows: the process and its children (workers among them)."""
    return node.process(), node.children()


def worker_text(row: WorkerRow) -> str:
    """One worker as a line: what it is, its state, age, memory and CPU."""
    if row.exited:
        return " · ".join([row.name, *([row.note] if row.note else []), "exited"])
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
) -> tuple[tuple[ChildInfo, ...], dict[int, WorkerLoad | str]]:
    """A host's children (workers among them) and, when ``detail`` (its row is expanded),
    each worker's own tasks and loop lag: one relayed overview per worker."""
    children = node.children()
    loads: dict[int, WorkerLoad | str] = {}
    if detail:
        for child in children:
            if not child.agent:
                continue
            try:
                seen = worker_of(node, child.pid).overview(float("inf"))  # no history wanted
            except ObserverError as exc:
                loads[child.pid] = f"unreachable: {exc}"
            else:
                loads[child.pid] = WorkerLoad(seen.now.tasks, seen.now.loop_lag, seen.uptime)
    return children, loads


def with_load(row: WorkerRow, load: WorkerLoad | str | None) -> WorkerRow:
    """A worker's row with its own figures (tasks, loop lag, age), or why they are missing."""
    if row.exited or load is None:
        return row
    if isinstance(load, str):
        return replace(row, note=load)
    return replace(row, tasks=load.tasks, loop_lag=load.loop_lag, age=load.uptime)
