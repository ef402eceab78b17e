"""What the ``observer`` command prints: each command's result as JSON (``--json``) or as
text for a terminal. Pure functions of the records the client returns; the pieces the GUI
shows too (tables, sizes, durations, fact lists) come from observer.format.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import TYPE_CHECKING, Any

from agent.schema import (
    AuditRecord,
    Census,
    History,
    LocalsInfo,
    MemoryInfo,
    Snapshot,
    StackInfo,
    TaskCpu,
    TraceStats,
)
from observer.format import (
    AGE_BOUND_NOTE,
    census_text,
    exit_text,
    human_bytes,
    human_seconds,
    memory_facts,
    short_path,
    signed_bytes,
    table,
    task_columns,
    to_json,
    trace_text,
    tree_task_parts,
)

if TYPE_CHECKING:
    from observer.chaos import ChaosEvent
    from observer.keygen import KeyMaterial
    from observer.tree import TreeNode


def print_json(value: Any) -> None:
    """Records become objects keyed by field name; everything else is plain JSON."""
    sys.stdout.write(to_json(value))
    sys.stdout.write("\n")


def emit(as_json: bool, value: Any, text: str) -> int:
    """``value`` as JSON with --json, else one line of ``text``; exit status 0."""
    if as_json:
        print_json(value)
    else:
        print(text)
    return 0


def sections_text(sections: list[tuple[str, list[tuple[str, str]]]]) -> str:
    """(section, [(key, value)]) as the GUI's fact trees show them, in plain text."""
    lines = []
    for section, rows in sections:
        lines.append(section)
        lines += [f"  {key:>28}  {value}" for key, value in rows]
    return "\n".join(lines)


def by_cpu(snap: Snapshot, cpu: TaskCpu | None) -> tuple[list[Any], dict[str, float]]:
    """The snapshot's tasks, busiest first when ``cpu`` (``ps --sort cpu``) is given, and
    each task's CPU seconds over its window."""
    if cpu is None:
        return list(snap.tasks), {}
    seconds = {row.task: row.cpu for row in cpu.rows}
    return sorted(snap.tasks, key=lambda t: -seconds.get(t.id, 0.0)), seconds


def ps_json(snap: Snapshot, cpu: TaskCpu | None = None) -> dict[str, Any]:
    """What ``ps --json`` prints (keys scripts rely on); with ``--sort cpu`` the tasks come
    busiest first and ``task_cpu`` holds each one's CPU seconds over ``window``."""
    tasks, seconds = by_cpu(snap, cpu)
    extra: dict[str, Any] = {}
    if cpu is not None:
        extra["task_cpu"] = {"window": cpu.covered, "cpu": seconds}
    return {
        "node": snap.process.node,
        "pid": snap.process.pid,
        "threads": snap.threads,
        "tasks": tasks,
        **extra,
        "loops": snap.loops,
        "children": snap.children,
        "tasks_total": snap.tasks_total,
        "truncated": snap.truncated,
    }


def ps_text(snap: Snapshot, cpu: TaskCpu | None = None) -> str:
    """The process line, then tables of threads, tasks (busiest first, with their CPU over
    the window, when ``cpu`` is given) and child processes."""
    p = snap.process
    tasks, seconds = by_cpu(snap, cpu)
    task_head = ["ID", "NAME", "STATE", "AGE", "COROUTINE", "SUSPENDED AT", "AWAITING"]
    task_rows = [task_columns(t) for t in tasks]
    if cpu is not None:
        task_head.insert(3, f"CPU {cpu.covered:.0f}S")
        for index, t in enumerate(tasks):
            used = seconds.get(t.id)
            text = f"{used * 1000:.1f}ms" if used is not None else ""
            task_rows[index] = (*task_rows[index][:3], text, *task_rows[index][3:])
    parts = [
        f"{p.node}  pid {p.pid}  {p.implementation} {p.python_version}  "
        f"cpu {p.cpu_percent:.1f}%  rss {human_bytes(p.rss)}  up {human_seconds(p.uptime)}  "
        f"threads {len(snap.threads)}  tasks {p.num_tasks}  children {len(snap.children)}",
        "",
        table(
            ["ID", "NAME", "STATE", "CPU", "FUNCTION", "LOCATION"],
            [
                (
                    t.id,
                    t.name + (" [agent]" if t.is_agent else ""),
                    t.state,
                    f"{t.cpu_time:.2f}s" if t.cpu_time is not None else "",
                    t.function,
                    f"{short_path(t.file)}:{t.line}" if t.file else "",
                )
                for t in snap.threads
            ],
        ),
        "",
        table(task_head, task_rows),
    ]
    if any(not t.age_exact for t in snap.tasks):
        parts.append(f"\nAGE >= ...: {AGE_BOUND_NOTE}")
    if snap.truncated:
        parts.append(f"\n{len(snap.tasks)} of {snap.tasks_total} tasks shown (use --limit)")
    if snap.children:
        parts.append("")
        parts.append(
            table(
                ["ID", "NAME", "STATUS", "CPU", "RSS", "COMMAND"],
                [
                    (
                        c.id,
                        c.name + (f" [agent {c.agent}]" if c.agent else ""),
                        c.status,
                        f"{c.cpu_percent:.1f}%" if c.cpu_percent is not None else "",
                        human_bytes(c.rss),
                        " ".join(c.cmdline),
                    )
                    for c in snap.children
                ],
            )
        )
    return "\n".join(parts)


def exits_text(exits: Any) -> str:
    """Workers that exited lately (the master's WorkerSet), one line each."""
    return "\n".join(f"worker pid {e.pid} ({e.name}) {exit_text(e)}" for e in exits)


def tree_text(root: TreeNode, snap: Snapshot) -> str:
    """One line per node of the tree, indented by depth."""
    lines = []
    for depth, item in root.walk():
        parts = [f"{'  ' * depth}{item.kind} {item.name}", f"({item.id})"]
        if item.state:
            parts.append(item.state)
        if item.cpu:
            parts.append(item.cpu)
        if item.kind == "task":
            parts.extend(tree_task_parts(item))
            lines.append("  ".join(parts))
            continue
        if item.function:
            parts.append(item.function)
        if item.location:
            file, _, line = item.location.rpartition(":")
            parts.append(f"{short_path(file)}:{line}")
        lines.append("  ".join(parts))
    if snap.truncated:
        lines.append(f"({len(snap.tasks)} of {snap.tasks_total} tasks shown; use --limit)")
    return "\n".join(lines)


def stack_text(stack: StackInfo, frames_locals: tuple[LocalsInfo, ...], with_locals: bool) -> str:
    """A traceback-like listing, outermost frame first, with each frame's locals if asked."""
    lines = [f"{stack.kind} {stack.name} ({stack.target}) {stack.state} - {stack.note}"]
    if stack.awaiting:
        lines.append(f"awaiting: {', '.join(stack.awaiting)}")
    for i, frame in enumerate(stack.frames):
        lines.append(f'  File "{frame.file}", line {frame.line}, in {frame.function}')
        if frame.source:
            lines.append(f"    {frame.source}")
        if with_locals and i < len(frames_locals):
            lines += [f"      {var.name} = {var.repr}" for var in frames_locals[i].variables]
    return "\n".join(lines)


def mem_json(memory: MemoryInfo, census: Census, growth: bool) -> dict[str, Any]:
    """What ``mem --json`` prints: the memory record, the census's types, its growth if
    asked, and the rest of the census under "census"."""
    out = dataclasses.asdict(memory)
    meta = dataclasses.asdict(census)
    out["types"] = meta.pop("types")
    grown = meta.pop("growth")
    if growth:
        out["growth"] = grown
    out["census"] = meta
    return out


def mem_text(
    memory: MemoryInfo, census: Census, baseline: bool, growth: bool, worker: int | None = None
) -> str:
    """Memory facts, the census line, then objects by type (or their growth); ``worker``:
    the pid of the worker read through its master (--process)."""
    lines = [sections_text(memory_facts(memory, worker)), f"Census: {census_text(census)}"]
    if baseline:
        lines.append("Baseline recorded: `observer mem NODE --growth` shows what grows from here.")
    if not growth:
        rows = [(t.type, f"{t.count:,}", human_bytes(t.size)) for t in census.types]
        lines.append(table(["TYPE", "COUNT", "SIZE"], rows, max_width=70))
    elif census.growth:
        grown = [
            (
                g.type,
                f"{g.count:,}",
                f"+{g.delta:,}",
                human_bytes(g.size),
                signed_bytes(g.size_delta),
            )
            for g in census.growth
        ]
        lines.append(table(["TYPE", "COUNT", "DELTA", "SIZE", "SIZE DELTA"], grown, max_width=70))
    else:
        lines.append("Nothing grew since the baseline.")
    return "\n".join(lines)


def trace_sites_text(stats: TraceStats, diff: bool, group: str) -> str:
    """tracemalloc's status line, then its top (or diff) sites with their source lines."""
    if not stats.status.tracing:
        return trace_text(stats)
    headers = (
        ["SIZE", "BLOCKS"] + (["SIZE DIFF", "BLOCKS DIFF"] if diff else []) + ["WHERE", "SOURCE"]
    )
    rows = []
    for site in stats.sites:
        where = short_path(site.file, 3) + (f":{site.line}" if site.line else "")
        row: list[object] = [human_bytes(site.size), f"{site.count:,}"]
        if diff:
            row += [signed_bytes(site.size_diff), f"{site.count_diff:+,}"]
        rows.append([*row, where, site.source])
        if group == "traceback":
            rows += [
                ["", ""] + (["", ""] if diff else []) + [f"  from {short_path(tb, 3)}", ""]
                for tb in site.traceback[1:]
            ]
    return trace_text(stats) + "\n" + table(headers, rows, max_width=80)


def audit_text(records: tuple[AuditRecord, ...]) -> str:
    return table(
        ["TIME", "PEER", "ROLE", "ACTION", "TARGET", "RESULT", "DETAIL"],
        [
            (
                time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.time)),
                r.peer,
                r.role,
                r.action,
                r.target,
                r.result,
                r.detail,
            )
            for r in records
        ],
        max_width=100,
    )


def history_text(history: History, last: int) -> str:
    """The last ``last`` load samples, one row each."""
    return table(
        ["TIME", "CPU%", "RSS", "THREADS", "+AGENT", "TASKS", "LOOP LAG", "GC"],
        [
            (
                time.strftime("%H:%M:%S", time.localtime(s.time)),
                f"{s.cpu_percent:.1f}",
                human_bytes(s.rss),
                s.threads,
                s.agent_threads,
                s.tasks,
                f"{s.loop_lag * 1000:.1f}ms" if s.loop_lag is not None else "",
                s.gc_collections,
            )
            for s in history.samples[-last:]
        ],
    )


def keygen_text(km: KeyMaterial) -> str:
    """What keygen wrote, the fingerprint to pin, and how to embed the agent and connect."""
    d = km.directory.resolve()
    return "\n".join(
        [
            f"wrote {km.cert}, {km.key}, {km.viewer_token}, {km.operator_token}",
            f"fingerprint: {km.fingerprint}",
            f"certificate expires on {km.not_after:%Y-%m-%d} (renew with --force before then)",
            "",
            "embed the agent (in the production process):",
            f'  agent.start("127.0.0.1:7330", tls_cert="{d}/agent.crt", tls_key="{d}/agent.key",\n'
            f'              tokens={{"viewer": open("{d}/viewer.token").read().strip(),\n'
            f'                      "operator": open("{d}/operator.token").read().strip()}})',
            "or with environment variables:",
            "  OBSERVER_AGENT_BIND=127.0.0.1:7330",
            f"  OBSERVER_AGENT_TOKEN_DIR={d}",
            "",
            "connect (from the operator's machine):",
            f"  observer ps HOST:7330 --token-file {d}/operator.token"
            f" --fingerprint {km.fingerprint}",
            f"(the fingerprint again, later: observer keygen --show {d})",
        ]
    )


def certificate_text(cert: Any, fingerprint: str, expires: Any) -> str:
    """What keygen printed about a certificate, again, and the openssl way to see it."""
    return "\n".join(
        [
            f"certificate: {cert}",
            f"fingerprint: {fingerprint}",
            f"certificate expires on {expires:%Y-%m-%d}",
            f"(the same with openssl: openssl x509 -in {cert} -noout -fingerprint -sha256)",
        ]
    )


def chaos_event_line(event: ChaosEvent) -> str:
    """One action or outcome of a chaos run, stamped to the millisecond."""
    stamp = time.strftime("%H:%M:%S", time.localtime(event.time))
    return f"{stamp}.{int(event.time * 1000) % 1000:03d}  {event.text}"
