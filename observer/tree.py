"""Build the process tree from a snapshot: process -> threads -> loops -> tasks, children.

Qt-free, so the CLI prints it and the GUI's model adapts it. A task is nested under
the task that awaits it (the first one, if several do); cycles are broken.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.schema import Snapshot, TaskInfo, WorkerExit
from observer.format import exit_text, task_finished, task_label, task_state_text


@dataclass
class TreeNode:
    """One row of the tree."""

    kind: str  # process / thread / loop / task / child
    id: str
    name: str
    state: str = ""
    cpu: str = ""
    age: float | None = None
    function: str = ""
    location: str = ""
    cpu_value: float = -1.0  # what ``cpu`` shows, as a number to sort by (-1: none)
    age_exact: bool = True  # False: ``age`` is a lower bound (see TaskInfo.age_exact)
    real_name: str = ""  # a task's own name when ``name`` shows its coroutine instead
    coroutine: str = ""  # what a task runs; ``function`` at ``location`` is where it is
    finished: bool = False  # a task that has ended: not a live row
    children: list[TreeNode] = field(default_factory=list)

    def walk(self) -> Iterator[tuple[int, TreeNode]]:
        """Yield (depth, node) depth-first, parents before children (no recursion: await
        chains can be deeper than Python's recursion limit)."""
        stack = [(0, self)]
        while stack:
            depth, node = stack.pop()
            yield depth, node
            stack.extend((depth + 1, child) for child in reversed(node.children))


def child_label(name: str, cmdline: tuple[str, ...] | list[str]) -> str:
    """A child process's name that says what it runs: 'python' -> 'python -m pkg.worker 3'."""
    if not name.lower().startswith("python") or len(cmdline) < 2:
        return name
    args = list(cmdline[1:])
    while args and args[0].startswith("-") and args[0] not in ("-m", "-c"):
        args.pop(0)  # interpreter flags such as -u or -X dev
    if not args:
        return name
    if args[0] in ("-m", "-c") and len(args) > 1:
        what = f"{args[0]} {args[1] if args[0] == '-m' else '…'}"
        rest = args[2:]
    else:
        what, rest = args[0].rsplit("/", 1)[-1], args[1:]
    return " ".join([name, what, *rest])[:80]


def _loc(file: str, line: int) -> str:
    return f"{file}:{line}" if file else ""


def task_node(t: TaskInfo) -> TreeNode:
    """A task's row (without the rows under it)."""
    return TreeNode(
        "task",
        t.id,
        task_label(t.name, t.coroutine),
        task_state_text(t.state, t.error),
        "",
        t.age,
        t.function if t.file else "",
        _loc(t.file, t.line),
        age_exact=t.age_exact,
        real_name=t.name,
        coroutine=t.coroutine,
        finished=task_finished(t.state),
    )


def build_tree(snap: Snapshot, task_cpu: Mapping[str, float] | None = None) -> TreeNode:
    """The tree for one node's snapshot; every thread, loop, task and child appears once.
    ``task_cpu``: each task's % of a core over CPU per task's window (its CPU cell)."""
    proc = snap.process
    root = TreeNode(
        "process",
        f"pid-{proc.pid}",
        proc.name or proc.node,
        "running",
        f"{proc.cpu_percent:.1f}%",
        proc.uptime,
        cpu_value=proc.cpu_percent,
    )
    threads: dict[int, TreeNode] = {}
    for t in snap.threads:
        node = TreeNode(
            "thread",
            t.id,
            t.name + (" [agent]" if t.is_agent else ""),
            t.state,
            f"{t.cpu_time:.2f}s" if t.cpu_time is not None else "",
            None,
            t.function,
            _loc(t.file, t.line),
            t.cpu_time if t.cpu_time is not None else -1.0,
        )
        threads[t.ident] = node
        root.children.append(node)
    loops: dict[str, TreeNode] = {}
    for lp in snap.loops:
        lag = f"lag {lp.lag * 1000:.1f}ms" if lp.lag is not None else ""
        node = TreeNode(
            "loop",
            lp.id,
            lp.type.rsplit(".", 1)[-1],
            "running" if lp.running else ("closed" if lp.closed else "stopped"),
            lag,
        )
        loops[lp.id] = node
        parent = threads.get(lp.thread_ident) if lp.thread_ident is not None else None
        (parent or root).children.append(node)
    tasks = {t.id: t for t in snap.tasks}
    parent_of: dict[str, str] = {}
    for t in snap.tasks:
        for child_id in t.awaiting:
            if child_id in tasks and child_id not in parent_of and child_id != t.id:
                parent_of[child_id] = t.id
    _break_cycles(parent_of)
    nodes = {t.id: task_node(t) for t in snap.tasks}
    for task_id, percent in (task_cpu or {}).items():
        node = nodes.get(task_id)
        if node is not None:
            node.cpu, node.cpu_value = f"{percent:.1f}%", percent
    for t in snap.tasks:
        node = nodes[t.id]
        parent_id = parent_of.get(t.id)
        if parent_id is not None:
            nodes[parent_id].children.append(node)
        elif t.loop in loops:
            loops[t.loop].children.append(node)
        else:
            root.children.append(node)
    pids = {c.pid: c for c in snap.children}
    child_nodes = {
        c.pid: TreeNode(
            "child",
            c.id,
            child_label(c.name, c.cmdline) + (f" [agent {c.agent}]" if c.agent else ""),
            c.status,
            f"{c.cpu_percent:.1f}%" if c.cpu_percent is not None else "",
            None,
            " ".join(c.cmdline)[:120],
            "",
            c.cpu_percent if c.cpu_percent is not None else -1.0,
        )
        for c in snap.children
    }
    child_parent = {c.pid: c.ppid for c in snap.children if c.ppid in pids and c.ppid != c.pid}
    _break_cycles(child_parent)
    for c in snap.children:
        parent = child_nodes.get(child_parent[c.pid]) if c.pid in child_parent else None
        (parent or root).children.append(child_nodes[c.pid])
    return root


def graft_workers(
    root: TreeNode, workers: Mapping[int, Snapshot | str], exits: Iterable[WorkerExit] = ()
) -> TreeNode:
    """Hang each worker's own tree (its threads, loops, tasks, children) under its row in
    the master's tree: host -> master -> workers -> threads -> loops -> tasks. Ids inside
    a worker become ``pid-N/ID`` (what stack and kill take); a worker whose snapshot
    failed (a str: why) shows that as its state. Workers that exited lately (``exits``,
    the master's WorkerSet) are listed under the master with how they ended."""
    rows = {node.id: node for _depth, node in root.walk() if node.kind == "child"}
    for gone in exits:
        if f"pid-{gone.pid}" not in rows:
            root.children.append(
                TreeNode("child", f"pid-{gone.pid}", gone.name, exit_text(gone), finished=True)
            )
    for pid, snap in workers.items():
        row = rows.get(f"pid-{pid}")
        if row is None:
            continue
        if isinstance(snap, str):
            row.state = snap
            continue
        worker = build_tree(snap)
        for _depth, node in worker.walk():
            if node.kind not in ("process", "child"):
                node.id = f"pid-{pid}/{node.id}"
        row.children.extend(worker.children)
    return root


def _break_cycles(parent_of: dict[Any, Any]) -> None:
    """Detach entries whose parent chain loops back, so every node stays reachable."""
    for key in list(parent_of):
        seen = {key}
        cur = parent_of.get(key)
        while cur is not None:
            if cur in seen:
                parent_of.pop(key, None)
                break
            seen.add(cur)
            cur = parent_of.get(cur)
