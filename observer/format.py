"""Plain-text rendering shared by the CLI and the GUI: tables, sizes, durations, facts."""

from __future__ import annotations

import dataclasses
import json
import operator
import re
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from agent.schema import (
    Census,
    MemoryInfo,
    ProcessInfo,
    StallEvent,
    TaskInfo,
    TracemallocStatus,
    TraceStats,
    WorkerExit,
)

if TYPE_CHECKING:
    from observer.fleet import ClusterRow
    from observer.tree import TreeNode


def to_json(value: Any) -> str:
    """``value`` as compact JSON, records as objects keyed by field name (what
    ``dataclasses.asdict`` makes of them), in one pass of json's C encoder: 100k task rows
    take a fraction of a second, where the indented pure-Python encoder took seconds.
    Records form trees (no cycles), so json need not track what it is inside of."""
    return json.dumps(value, default=_record_object, separators=(",", ":"), check_circular=False)


_FIELDS: dict[type, tuple[tuple[str, ...], frozenset[str], Callable[[Any], Any]]] = {}


def _record_object(value: Any) -> dict[str, Any]:
    """json's hook for what it cannot encode itself: a record becomes {field: value} (the
    records inside come back here), anything else the TypeError json raises for it.

    A record's own ``__dict__`` is that mapping, in field order (its ``__init__`` set the
    fields in that order), when it holds exactly the fields: handed to json as it is."""
    entry = _FIELDS.get(type(value))
    if entry is None:
        if not dataclasses.is_dataclass(value) or isinstance(value, type):
            raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
        names = tuple(f.name for f in dataclasses.fields(value))
        if len(names) > 1:  # attrgetter of one name returns the value, not a 1-tuple
            getter: Callable[[Any], Any] = operator.attrgetter(*names)
        else:
            getter = lambda record: [getattr(record, n) for n in names]  # noqa: E731
        entry = _FIELDS[type(value)] = (names, frozenset(names), getter)
    names, name_set, getter = entry
    own = getattr(value, "__dict__", None)
    if own is not None and own.keys() == name_set:
        return own  # type: ignore[no-any-return]
    return dict(zip(names, getter(value), strict=True))


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], max_width: int = 60) -> str:
    """An aligned text table; cells longer than ``max_width`` are cut with an ellipsis."""
    cells = [[_cut(str(c), max_width) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in cells:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def _cut(text: str, width: int) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def human_bytes(value: int | None) -> str:
    """1536 -> '1.5 KiB'."""
    if value is None:
        return ""
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{value} B"


def human_seconds(value: float | None) -> str:
    """Seconds as '4.2s', '3m12s', '2h05m', '3d04h'."""
    if value is None:
        return ""
    if value < 60:
        return f"{value:.1f}s"
    minutes, seconds = divmod(int(value), 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def short_path(path: str, keep: int = 2) -> str:
    """Last ``keep`` components of a path: '/a/b/c/d.py' -> 'c/d.py'."""
    parts = path.replace("\\", "/").split("/")
    return "/".join(parts[-keep:]) if len(parts) > keep else path


# ---------------------------------------------------------------- tasks

_DEFAULT_TASK_NAME = re.compile(r"Task-\d+")
FINISHED_STATES = frozenset({"done", "cancelled", "failed"})
AGE_BOUND_NOTE = (
    "at least this old: the task was created before the agent hooked its event loop's "
    "task factory (or without the loop's create_task), so only the time since the agent "
    "first saw it is known"
)


def task_label(name: str, coroutine: str) -> str:
    """What a task is called on screen: its name, or the coroutine it runs when the name
    is asyncio's default ``Task-N`` (like Erlang's "Name or Initial Func")."""
    return coroutine if coroutine and _DEFAULT_TASK_NAME.fullmatch(name) else name


REAPED_FIRST = "status unknown: reaped before the agent read it"


def ended_text(gone: WorkerExit | None) -> str:
    """How a worker ended: 'exited (signal 9)'; 'exited' alone when the master's agent
    did not see it end."""
    return "exited" if gone is None else f"exited ({gone.how or REAPED_FIRST})"


def replaced_text(gone: WorkerExit | None) -> str:
    """'replaced by pid 42': the worker that took its slot ('' when none did yet)."""
    return f"replaced by pid {gone.replaced_by}" if gone is not None and gone.replaced_by else ""


def exit_text(gone: WorkerExit | None) -> str:
    """How a worker ended and who took its place: 'exited (signal 9), replaced by pid 42'."""
    return ", ".join(part for part in (ended_text(gone), replaced_text(gone)) if part)


def task_finished(state: str) -> bool:
    """True for a task that has ended (done, cancelled or failed)."""
    return state in FINISHED_STATES


def task_state_text(state: str, error: str = "") -> str:
    """'failed: ValueError' for a task that raised, else the state."""
    return f"{state}: {error}" if state == "failed" and error else state


def task_age_text(age: float | None, exact: bool = True, state: str = "pending") -> str:
    """'4.2s', or '>= 4.2s' when only a lower bound is known; '' once the task ended (its
    end time is unknown, and the time since it was created says nothing live)."""
    if age is None or task_finished(state):
        return ""
    return human_seconds(age) if exact else f">= {human_seconds(age)}"


def suspended_at(function: str, file: str, line: int) -> str:
    """Where a task is suspended: 'Worker.poll at pkg/worker.py:12' ('' when unknown)."""
    if not file:
        return ""
    where = f"{short_path(file)}:{line}"
    return f"{function} at {where}" if function else where


def task_columns(t: TaskInfo) -> tuple[str, ...]:
    """A task as ``observer ps`` prints it: id, name (or coroutine), state, age, the
    coroutine it runs, where it is suspended, the tasks it awaits."""
    ended = task_finished(t.state)
    return (
        t.id,
        task_label(t.name, t.coroutine),
        task_state_text(t.state, t.error),
        task_age_text(t.age, t.age_exact, t.state),
        t.coroutine,
        "" if ended else suspended_at(t.function, t.file, t.line),
        ",".join(t.awaiting),
    )


def tree_task_parts(node: TreeNode) -> list[str]:
    """The tail of a task's ``observer tree`` line: age, coroutine, where suspended."""
    parts = []
    age = task_age_text(node.age, node.age_exact, "done" if node.finished else "pending")
    if age:
        parts.append(f"age {age}")
    if node.coroutine:
        parts.append(f"runs {node.coroutine}")
    if node.location and not node.finished:
        file, _, line = node.location.rpartition(":")
        where = suspended_at(node.function, file, int(line) if line.isdigit() else 0)
        parts.append(f"suspended in {where}" if node.function else f"at {where}")
    return parts


EXPOSED = "Exposed objects"


def thread_count(p: ProcessInfo, agent_threads: int | None = None) -> str:
    """The process's threads, the host's apart from the agent's own when known: "7 (+3 agent)"
    (the agent's come and go with observers, as the Threads chart shows them)."""
    if agent_threads is None:
        return str(p.num_threads)
    return f"{max(0, p.num_threads - agent_threads)} (+{agent_threads} agent)"


def process_facts(
    p: ProcessInfo, agent_threads: int | None = None
) -> list[tuple[str, list[tuple[str, str]]]]:
    """A process described as (section, [(key, value)]): the GUI's System tab and
    ``observer info`` both show this. ``agent_threads``, when known, splits the thread
    count into the host's and the agent's."""
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(p.start_time))
    gc_counts = " / ".join(map(str, p.gc_counts))
    gc_runs = " / ".join(map(str, p.gc_collections))
    return [
        (
            "Python",
            [
                ("Implementation", f"{p.implementation} {p.python_version}"),
                ("Executable", p.executable),
                ("argv", " ".join(p.cmdline)),
            ],
        ),
        (
            "Process",
            [
                ("Node", p.node),
                ("Host", p.host),
                ("PID", f"{p.pid} (parent {p.ppid})"),
                ("Name", p.name),
                ("Started", started),
                ("Uptime", human_seconds(p.uptime)),
                ("CPUs", str(p.cpu_count)),
            ],
        ),
        (
            "Resources",
            [
                ("CPU", f"{p.cpu_percent:.1f}%"),
                ("RSS", human_bytes(p.rss)),
                ("VMS", human_bytes(p.vms)),
                ("Threads", thread_count(p, agent_threads)),
                ("Event loops", str(p.num_loops)),
                ("Tasks", f"{p.num_tasks:,}"),
                ("Open fds", "n/a" if p.num_fds is None else str(p.num_fds)),
                (
                    "Connections",
                    "n/a (not permitted)" if p.num_connections is None else str(p.num_connections),
                ),
            ],
        ),
        (
            "Garbage collector",
            [
                ("Pending objects (gen 0/1/2)", gc_counts),
                ("Collections (gen 0/1/2)", gc_runs),
            ],
        ),
        (
            "Agent",
            [
                ("Version", f"{p.agent_version} (protocol {p.protocol_version})"),
                ("Your role", f"you are {p.role}"),
            ],
        ),
        (
            EXPOSED,
            [
                (
                    e.name,
                    e.type + (f", size {e.size:,}" if e.size is not None else "") + f": {e.repr}",
                )
                for e in p.exposed
            ]
            or [("(none)", "the host has not called agent.expose")],
        ),
    ]


def _per_gen(values: Sequence[int]) -> str:
    return " / ".join(f"{v:,}" for v in values)


def _clock(stamp: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(stamp)) if stamp else ""


def tracemalloc_text(t: TracemallocStatus, worker: int | None = None) -> str:
    """One line: tracing or not (and how to start it), traced/peak memory, what it costs.
    ``worker``: the pid of the worker shown, reached through its master: the agent's hint
    names ``observer mem NODE``, which would reach the master, so ``--process`` is added."""
    if not t.tracing:
        if worker is not None:
            return t.hint.replace("observer mem NODE ", f"observer mem NODE --process {worker} ")
        return t.hint
    parts = [
        f"tracing {t.frames} frame{'s' if t.frames != 1 else ''}",
        f"traced {human_bytes(t.current)} (peak {human_bytes(t.peak)})",
        f"overhead {human_bytes(t.overhead)}",
    ]
    if t.slowdown:
        parts.append(f"allocation-only code up to {t.slowdown:.0f}x slower")
    if t.started:
        parts.append(f"started {_clock(t.started)} by {t.started_by or '?'}")
    else:
        parts.append("started outside the agent")
    if t.baseline:
        parts.append(f"baseline {_clock(t.baseline)}")
    return "; ".join(parts)


def memory_facts(
    m: MemoryInfo, worker: int | None = None
) -> list[tuple[str, list[tuple[str, str]]]]:
    """Memory described as (section, [(key, value)]): the Memory tab and ``observer mem``
    (``worker``: the pid of the worker shown through its master, see tracemalloc_text)."""
    os_rows = [("RSS", human_bytes(m.rss)), ("VMS", human_bytes(m.vms))]
    if m.uss is not None:
        os_rows.append(("USS (unique)", human_bytes(m.uss)))
    if m.pss is not None:
        os_rows.append(("PSS (proportional)", human_bytes(m.pss)))
    if m.swap is not None:
        os_rows.append(("Swap", human_bytes(m.swap)))
    if m.note:
        os_rows.append(("Note", m.note))
    tracked = "no census yet" if m.tracked is None else f"{m.tracked:,} at {_clock(m.tracked_time)}"
    gc_rows = [
        ("Enabled", "yes" if m.gc_enabled else "NO (gc.disable() was called)"),
        ("Pending (gen 0/1/2)", f"{_per_gen(m.gc_counts)} of {_per_gen(m.gc_thresholds)}"),
        ("Collections (gen 0/1/2)", _per_gen(m.gc_collections)),
        ("Collected (gen 0/1/2)", _per_gen(m.gc_collected)),
        ("Uncollectable (gen 0/1/2)", _per_gen(m.gc_uncollectable)),
        ("gc.garbage", f"{m.gc_garbage:,}"),
        ("Tracked objects", tracked),
        ("Allocated blocks", f"{m.allocated_blocks:,}"),
    ]
    exposed = [
        (
            e.name,
            f"{e.type}: ~{human_bytes(e.size)} in {e.objects:,} objects"
            + ("" if e.complete else " (walk cut short by its budget: at least this)"),
        )
        for e in m.exposed
    ]
    return [
        ("Process (OS)", os_rows),
        ("Garbage collector", gc_rows),
        ("tracemalloc", [("Status", tracemalloc_text(m.tracemalloc, worker))]),
        (EXPOSED, exposed or [("(none)", "the host has not called agent.expose")]),
    ]


def census_text(c: Census) -> str:
    """One line about a census: what it saw, what it cost, whether it sampled."""
    text = (
        f"{c.objects:,} gc-tracked objects of {c.types_total:,} types, counted in "
        f"{c.seconds * 1000:.0f} ms (longest GIL hold {c.hold_seconds * 1000:.1f} ms)"
    )
    if c.note:
        text += f"; {c.note}"
    if c.baseline:
        text += f"; baseline {_clock(c.baseline)} by {c.baseline_by or '?'}"
    return text


def trace_text(t: TraceStats) -> str:
    """One line about a tracemalloc top/diff: totals and what it cost."""
    if not t.status.tracing:
        return t.status.hint
    what = "growth since the baseline" if t.diff else "largest sites"
    return (
        f"{what} by {t.group}: {human_bytes(t.size)} in {t.count:,} blocks at "
        f"{t.sites_total:,} sites; {t.traces:,} traces read in {t.seconds * 1000:.0f} ms "
        f"(host paused {t.hold_seconds * 1000:.0f} ms while they were copied; "
        "the agent's and rpyc's own allocations left out)"
    )


def signed_bytes(value: int) -> str:
    """+1.5 KiB / -20 B."""
    return ("+" if value > 0 else "-" if value < 0 else "") + human_bytes(abs(value))


CLUSTER_COLUMNS = (
    "Node",
    "Address",
    "Status",
    "RTT",
    "CPU",
    "RSS",
    "Threads",
    "Tasks",
    "Loop lag",
    "Uptime",
    "Agent",
    "Note",
)


def cluster_note(row: ClusterRow) -> str:
    """What else the user should know about a node: stale data, a restart, DNS, an error."""
    notes = []
    if row.stale is not None:  # whole seconds: the GUI redraws this every tick
        age = f"{int(row.stale)}s" if row.stale < 60 else human_seconds(row.stale)
        notes.append(f"data {age} old")
    if not row.in_dns:
        notes.append("no longer in DNS")
    if row.restarted:
        notes.append(row.restarted)
    if row.error:  # the row shows the address already: "cannot connect: refused"
        notes.append(re.sub(rf"\s?(?:to |for )?{re.escape(row.address)}", "", row.error).strip())
    return "; ".join(notes)


def cluster_cells(row: ClusterRow) -> tuple[str, ...]:
    """A cluster row as the CLI and the GUI print it, one string per CLUSTER_COLUMNS."""
    return (
        row.name,
        row.address,
        row.status,
        f"{row.rtt * 1000:.1f} ms" if row.rtt is not None else "",
        f"{row.cpu_percent:.1f}%" if row.cpu_percent is not None else "",
        human_bytes(row.rss),
        str(row.threads) if row.threads is not None else "",
        f"{row.tasks:,}" if row.tasks is not None else "",
        f"{row.loop_lag * 1000:.1f} ms" if row.loop_lag is not None else "",
        human_seconds(row.uptime),
        row.agent_version,
        cluster_note(row),
    )


def cluster_table(rows: Sequence[ClusterRow]) -> str:
    """The text of ``observer nodes``."""
    return table([c.upper() for c in CLUSTER_COLUMNS], [cluster_cells(r) for r in rows], 70)


STALL_COLUMNS = ("Time", "Duration", "Loop", "Culprit", "Location", "Running")


def stall_where(event: StallEvent) -> str:
    """The culprit's place, 'dir/file.py:123', or why there is none."""
    if not event.file:
        return ""
    return f"{short_path(event.file)}:{event.line}"


_CALLBACK = re.compile(r"^(.*) \((.+):(\d+)\)$")


def stall_running(event: StallEvent) -> str:
    """What the loop was running: its task, else its callback (its file cut short), and a
    GIL holder if any."""
    handle = event.handle
    named = _CALLBACK.match(handle)
    if named:
        handle = f"{named.group(1)} ({short_path(named.group(2))}:{named.group(3)})"
    parts = [event.task or handle]
    if event.gil_elsewhere:
        parts.append(f"GIL held by thread {event.gil_thread}")
    return "; ".join(p for p in parts if p)


def stall_cells(event: StallEvent) -> tuple[str, ...]:
    """A stall as the CLI and the GUI print it, one string per STALL_COLUMNS."""
    stamp = time.strftime("%H:%M:%S", time.localtime(event.start))
    millis = f"{event.start % 1:.3f}"[1:]
    return (
        stamp + millis,
        f"{event.duration * 1000:,.0f} ms",
        event.loop,
        event.function,
        stall_where(event),
        stall_running(event),
    )


def stall_table(events: Sequence[StallEvent]) -> str:
    """The text of ``observer stalls``: one row per stall, oldest first."""
    return table([c.upper() for c in STALL_COLUMNS], [stall_cells(e) for e in events], 70)


def stall_text(event: StallEvent) -> str:
    """One stall in full, as a traceback reads: what, how long, and the blocking stack."""
    cells = dict(zip(STALL_COLUMNS, stall_cells(event), strict=True))
    head = (
        f"stall #{event.serial} on {event.loop} (thread {event.thread}) at {cells['Time']}: "
        f"blocked {cells['Duration']}, {event.captures} stack capture"
        f"{'s' if event.captures != 1 else ''}"
    )
    lines = [head]
    if event.task:
        lines.append(f"  task: {event.task}")
    if event.handle:
        lines.append(f"  callback: {event.handle}")
    if event.gil_elsewhere:
        lines.append(
            f"  the GIL was held by thread {event.gil_thread} (the watchdog itself woke "
            f"{event.late * 1000:.0f} ms late): the stack below is that thread's"
        )
    elif event.late:
        lines.append(f"  the watchdog woke {event.late * 1000:.0f} ms late")
    lines.append(f"  culprit: {event.function} at {stall_where(event) or '(unknown)'}")
    lines.append("  blocking stack, outermost first:")
    for frame in event.frames:
        lines.append(f'    File "{frame.file}", line {frame.line}, in {frame.function}')
        if frame.source:
            lines.append(f"      {frame.source}")
    for thread in event.threads:
        cpu = "" if thread.cpu is None else f", {thread.cpu * 1000:.0f} ms CPU meanwhile"
        top = thread.frames[-1] if thread.frames else None
        where = f" at {short_path(top.file)}:{top.line} in {top.function}" if top else ""
        lines.append(f"  other thread {thread.name}{cpu}{where}")
    return "\n".join(lines)
