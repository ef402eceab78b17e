"""Wire records: plain frozen dataclasses, encoded as positional JSON arrays.

Both halves import this module and nothing else crosses the link. A record travels
as a list of its field values in declared order (compact for 100k-row task lists);
new fields are only ever appended, so an older observer ignores trailing values.
Every reply is an envelope ``{"v": PROTOCOL_VERSION, "ok": bool, ...}`` serialised
as JSON and zlib-compressed when large.
"""

from __future__ import annotations

import dataclasses
import json
import sysconfig
import types
import typing
import zlib
from collections.abc import Callable
from dataclasses import field
from itertools import starmap
from typing import Any, TypeVar, Union

from agent.record import record
from agent.version import PROTOCOL_VERSION

T = TypeVar("T")

MAX_PAYLOAD = 64 * 1024 * 1024  # uncompressed reply cap; larger replies are truncated
COMPRESS_ABOVE = 64 * 1024


class RawJSON(str):
    """Text that is already JSON (e.g. task rows encoded in slices); emitted verbatim."""


class WireError(ValueError):
    """A payload that does not decode into the expected record."""


# ---------------------------------------------------------------- records


@record
class ExposedInfo:
    """An object the host registered with ``agent.expose``."""

    name: str
    type: str
    size: int | None  # len() or qsize() when the type makes that safe to ask
    repr: str


@record
class ProcessInfo:
    """The host process as a whole."""

    node: str
    pid: int
    ppid: int
    name: str
    cmdline: tuple[str, ...]
    python_version: str
    implementation: str
    executable: str
    host: str
    start_time: float
    uptime: float
    cpu_percent: float
    cpu_count: int
    rss: int
    vms: int
    num_threads: int
    num_fds: int | None
    num_connections: int | None
    gc_counts: tuple[int, ...]
    gc_collections: tuple[int, ...]
    agent_version: str
    protocol_version: int
    num_tasks: int
    num_loops: int
    exposed: tuple[ExposedInfo, ...]
    role: str  # the role this connection was granted
    environ: tuple[str, ...]  # "NAME=value", sorted, secrets redacted in the agent


@record
class ThreadInfo:
    """A Python thread with its OS-level CPU time."""

    id: str  # "thread-<ident>-<serial>", what ps prints and kill takes
    ident: int
    native_id: int | None
    name: str
    daemon: bool
    alive: bool
    state: str  # running / sleeping / disk-wait / ... from the OS, "unknown" when unreadable
    cpu_time: float | None  # user + system seconds
    function: str
    file: str
    line: int
    is_main: bool
    is_agent: bool  # one of the agent's own threads
    loop: str | None  # id of the event loop this thread is running, if any


@record
class LoopInfo:
    """An asyncio event loop found in some thread."""

    id: str  # "loop-<n>"
    type: str
    thread_ident: int | None
    thread_name: str | None
    running: bool
    closed: bool
    num_tasks: int
    lag: float | None  # seconds, last measured event-loop lag


@record
class TaskInfo:
    """An asyncio task."""

    id: str  # "task-<n>": stable for the task's life, never reused
    name: str
    state: str  # pending / done / cancelled / failed
    coroutine: str
    function: str
    file: str
    line: int
    loop: str
    age: float | None  # seconds since the agent first saw it (a lower bound)
    awaiting: tuple[str, ...]  # ids of tasks this task is waiting on
    current: bool  # running right now on its loop


@record
class ChildInfo:
    """A descendant OS process of the host."""

    id: str  # "pid-<pid>"
    pid: int
    ppid: int
    name: str
    cmdline: tuple[str, ...]
    status: str
    cpu_percent: float | None
    rss: int | None
    create_time: float
    agent: str | None  # address of an agent running in that child, when known


@record
class Snapshot:
    """Everything a process view needs, in one round trip."""

    process: ProcessInfo
    threads: tuple[ThreadInfo, ...]
    loops: tuple[LoopInfo, ...]
    tasks: tuple[TaskInfo, ...]
    children: tuple[ChildInfo, ...]
    tasks_total: int  # tasks that matched before the limit was applied
    truncated: bool
    collect_seconds: float


@record
class TaskSite:
    """Where tasks stand: their coroutine and their location's function and file. A
    listing sends each site once; rows point at it by index (short rows, shared text)."""

    coroutine: str
    function: str
    file: str


@record
class TaskRow:
    """One task as the agent sends it (the observer makes a TaskInfo of it)."""

    serial: int  # the task's id is "task-<serial>"
    name: str
    state: str  # pending / done / cancelled / unknown
    site: int  # index into the agent's site table (TaskListing.sites)
    line: int
    loop: int  # the loop's id is "loop-<loop>"; 0 when it has none
    first_seen: float  # agent wall clock when the agent first saw the task
    awaiting: tuple[int, ...]  # serials of the tasks it waits on


@record
class TaskListing:
    """Tasks as one answer carries them: every task (``base`` 0), or what changed after
    version ``base`` of the agent's table ``epoch``: new and changed rows, and the serials
    of tasks gone. Rows come in chunks: ``rows`` is the first; the observer fetches the
    rest of the ``count`` with task_chunk(``listing``, offset)."""

    epoch: int  # the agent's task table: versions of another table mean nothing
    version: int  # the table version this listing brings the observer to
    base: int  # 0: a complete listing; else the version it follows
    time: float  # agent wall clock: a task's age is time - first_seen
    sites_from: int  # index of sites[0] in the table (0 for a complete listing)
    sites: tuple[TaskSite, ...]
    removed: tuple[int, ...]  # serials of tasks gone since base
    current: tuple[int, ...]  # serials of tasks running a step right now
    total: int  # tasks that matched before the limit was applied
    truncated: bool
    count: int  # rows in this listing, all chunks together
    listing: int  # what task_chunk calls this listing
    rows: tuple[TaskRow, ...]  # the first chunk


@record
class TaskChunk:
    """More rows of a listing, from ``offset``."""

    listing: int
    offset: int
    rows: tuple[TaskRow, ...]


@record
class SnapshotUpdate:
    """A snapshot as it travels: process, threads, loops and children whole, the tasks as
    a TaskListing the observer merges into the rows it holds (observer.client then hands
    out a complete Snapshot)."""

    process: ProcessInfo
    threads: tuple[ThreadInfo, ...]
    loops: tuple[LoopInfo, ...]
    children: tuple[ChildInfo, ...]
    collect_seconds: float
    tasks: TaskListing


@record
class FrameInfo:
    """One frame of a stack, outermost first."""

    index: int
    function: str
    file: str
    line: int
    source: str


@record
class StackInfo:
    """The stack of a thread, or the coroutine/await chain of a task."""

    target: str
    kind: str  # thread / task
    name: str
    state: str
    frames: tuple[FrameInfo, ...]
    awaiting: tuple[str, ...]
    note: str


@record
class Variable:
    """A frame local or an attribute, rendered safely and redacted."""

    name: str
    type: str
    repr: str
    size: int | None
    redacted: bool
    expandable: bool


@record
class LocalsInfo:
    """Locals of one frame of a target's stack."""

    target: str
    frame: FrameInfo
    variables: tuple[Variable, ...]
    truncated: bool


@record
class ControlResult:
    """The outcome of a control action, as the agent saw it."""

    target: str
    action: str
    ok: bool
    message: str


@record
class AuditRecord:
    """One control action (or denied attempt): who, what, when, result."""

    time: float
    peer: str
    role: str
    action: str
    target: str
    result: str
    detail: str
    run: str = ""  # the chaos run that did it, "" for a single action


@record
class HistorySample:
    """One load sample of the history ring buffer."""

    time: float
    cpu_percent: float
    rss: int
    threads: int
    tasks: int
    loop_lag: float | None
    gc_collections: int  # total collections since start, all generations
    traced: int | None  # bytes traced by tracemalloc, None when it is not tracing


@record
class History:
    """The load history the agent kept, oldest first."""

    interval: float
    capacity: int
    samples: tuple[HistorySample, ...]


@record
class Hello:
    """What a node says about itself right after authentication."""

    node: str
    pid: int
    host: str
    agent_version: str
    protocol_version: int
    role: str
    python_version: str
    started: float  # the process's start time: a restart shows even when the pid is reused


@record
class Overview:
    """A node's cluster-view row in one round trip: who it is, its load now, recent load."""

    hello: Hello
    uptime: float
    now: HistorySample
    interval: float  # seconds between history samples
    samples: tuple[HistorySample, ...]  # newer than the caller's ``since``, at most 120


@record
class TracemallocStatus:
    """Whether tracemalloc traces this process, what it sees and what it costs."""

    tracing: bool
    frames: int  # frames kept per allocation traceback
    current: int  # bytes traced now
    peak: int  # highest traced since start (or the last peak reset)
    overhead: int  # bytes tracemalloc itself uses for its traces
    started: float | None  # wall time the agent started it; None if started elsewhere or off
    started_by: str  # "role@peer" of whoever started it through the agent
    slowdown: float | None  # allocation slowdown factor measured when the agent started it
    baseline: float | None  # wall time of the baseline the diff compares against
    hint: str  # when not tracing: how to start it


@record
class ExposedSize:
    """Approximate deep size of an exposed object (referents walked within a budget)."""

    name: str
    type: str
    size: int  # bytes, shallow sizes of every object reached
    objects: int  # objects reached
    complete: bool  # False when the time, depth or object budget cut the walk short


@record
class MemoryInfo:
    """The host's memory as the OS and the interpreter see it; cheap enough to poll."""

    time: float
    rss: int
    vms: int
    uss: int | None  # unique set size (memory_full_info); None when the OS refused
    pss: int | None
    swap: int | None
    note: str  # why uss/pss/swap are missing, '' when they are there
    gc_enabled: bool
    gc_counts: tuple[int, ...]  # allocations minus deallocations per generation
    gc_thresholds: tuple[int, ...]
    gc_collections: tuple[int, ...]
    gc_collected: tuple[int, ...]
    gc_uncollectable: tuple[int, ...]
    gc_garbage: int  # len(gc.garbage)
    tracked: int | None  # gc-tracked objects at the last census (None: no census yet)
    tracked_time: float | None
    allocated_blocks: int  # sys.getallocatedblocks(): live pymalloc blocks
    tracemalloc: TracemallocStatus
    exposed: tuple[ExposedSize, ...]
    census_baseline: float | None  # wall time of the census baseline, None if none
    seconds: float  # what collecting this cost the agent


@record
class TypeCount:
    """Live gc-tracked objects of one type."""

    type: str
    count: int
    size: int  # sum of shallow sizes (sys.getsizeof), bytes


@record
class TypeGrowth:
    """How a type's live objects changed since the census baseline."""

    type: str
    count: int
    delta: int
    size: int
    size_delta: int


@record
class Census:
    """Live objects by type, counted in the agent within a time budget.

    Only gc-tracked objects are seen (containers and class instances, as objgraph and
    gc.get_objects() see them); str, bytes, int and float live inside them and show up in
    tracemalloc instead. When ``stride`` > 1 every stride-th object was looked at and the
    counts are scaled estimates; ``complete`` is False when the time budget ran out.
    """

    time: float
    objects: int  # gc-tracked objects in the process
    scanned: int  # objects actually looked at
    stride: int
    sampled: bool
    complete: bool
    types_total: int  # distinct types seen
    types: tuple[TypeCount, ...]  # top N by count, largest first
    growth: tuple[TypeGrowth, ...]  # top N by delta when growth was asked for
    baseline: float | None  # wall time of the baseline, None if none
    baseline_by: str
    seconds: float  # agent wall time of this census
    hold_seconds: float  # longest single step holding the GIL (listing the objects)
    note: str


@record
class AllocationSite:
    """Where traced memory was allocated: one line, or one traceback (innermost first)."""

    file: str
    line: int
    source: str
    traceback: tuple[str, ...]  # "file:line", innermost first
    size: int
    count: int
    size_diff: int  # against the baseline (0 for a plain top)
    count_diff: int


@record
class TraceStats:
    """Top allocation sites now, or their change since the baseline."""

    status: TracemallocStatus
    group: str  # lineno / traceback / filename
    diff: bool
    sites: tuple[AllocationSite, ...]
    sites_total: int
    size: int  # traced bytes counted (the agent's own allocations excluded)
    count: int
    traces: int  # traces in the snapshot
    seconds: float  # snapshot + statistics time in the agent
    hold_seconds: float  # copying the traces out of tracemalloc: one C call holding the GIL
    excluded: tuple[str, ...]  # file patterns left out


@record
class SourceText:
    """Lines around one line of a source file the agent may show."""

    file: str
    line: int  # the line asked for
    first: int  # line number of lines[0]
    lines: tuple[str, ...]


@record
class StallThread:
    """Another thread as the stall watchdog saw it when its own wake-up came late."""

    name: str
    ident: int
    cpu: float | None  # CPU seconds it used since the watchdog's wake-up before; None: unknown
    frames: tuple[FrameInfo, ...]  # outermost first, the innermost few dozen


@record
class StallEvent:
    """An event loop that did not run its heartbeat for longer than the threshold."""

    serial: int  # 1, 2, ... since the agent started
    loop: str  # "loop-<n>"
    thread: str  # the loop thread's name
    start: float  # wall clock when the late heartbeat was posted
    duration: float  # seconds the heartbeat waited (the stall lasted at least this long)
    captures: int  # stack reads of the loop thread during the stall
    function: str  # the culprit: innermost frame of the blocking stack
    file: str
    line: int
    source: str  # the culprit line, redacted
    frames: tuple[FrameInfo, ...]  # the blocking stack, outermost first
    task: str  # "name (coroutine)" of the task running when caught, "" for none
    handle: str  # the callback the loop was running, named from code objects only
    gil_elsewhere: bool  # another thread held the GIL: the blocking stack is that thread's
    gil_thread: str  # that thread's name
    late: float  # how late the watchdog's own wake-up was (seconds; 0: on time)
    threads: tuple[StallThread, ...]  # other threads, read when the watchdog woke late


@record
class StallList:
    """The stall events an agent kept (a bounded ring), oldest first."""

    threshold: float  # seconds; 0 = the stall catcher is off
    capacity: int
    total: int  # stalls recorded since the agent started (older ones left the ring)
    time: float  # agent wall clock
    stalls: tuple[StallEvent, ...]


@record
class ProfileFrame:
    """A function a profile saw: its name, file and first line (interned per profile)."""

    function: str
    file: str
    line: int


@record
class ProfileStack:
    """How often one stack was sampled on one thread (and task): frames outermost first,
    as indices into the profile's frame table."""

    frames: tuple[int, ...]
    thread: str
    task: str  # "name (coroutine)" of the task the thread's loop was stepping, "" for none
    samples: int  # wall-time samples
    cpu: int  # of those, samples the thread was on CPU
    idle: bool  # the innermost frame is a standard-library wait (selector, lock, queue)


@record
class Profile:
    """A sampling profile, running (partial) or finished, in interned form."""

    serial: int  # 1, 2, ... profiles since the agent started
    state: str  # running / done / stopped
    started: float  # agent wall clock
    seconds: float  # duration asked (clamped)
    rate: float  # samples a second (clamped)
    elapsed: float
    ticks: int  # sampling rounds so far
    dropped: int  # samples not counted: the row cap was reached
    owner: str  # who started it (role@peer)
    cpu_known: bool  # per-thread CPU clocks were available (else every sample is "on CPU")
    frames: tuple[ProfileFrame, ...]
    stacks: tuple[ProfileStack, ...]


RECORDS: tuple[type, ...] = (
    ExposedInfo,
    ProcessInfo,
    ThreadInfo,
    LoopInfo,
    TaskInfo,
    ChildInfo,
    Snapshot,
    TaskSite,
    TaskRow,
    TaskListing,
    TaskChunk,
    SnapshotUpdate,
    FrameInfo,
    StackInfo,
    Variable,
    LocalsInfo,
    ControlResult,
    AuditRecord,
    HistorySample,
    History,
    Hello,
    Overview,
    TracemallocStatus,
    ExposedSize,
    MemoryInfo,
    TypeCount,
    TypeGrowth,
    Census,
    AllocationSite,
    TraceStats,
    SourceText,
    StallThread,
    StallEvent,
    StallList,
    ProfileFrame,
    ProfileStack,
    Profile,
)

# ---------------------------------------------------------------- encoding


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def to_wire(value: Any) -> Any:
    """Turn a record (or tuple of records) into JSON-able positional lists."""
    names = _FIELD_NAMES.get(type(value))
    if names is None and dataclasses.is_dataclass(value) and not isinstance(value, type):
        names = _FIELD_NAMES[type(value)] = tuple(f.name for f in dataclasses.fields(value))
    if names is not None:
        return [to_wire(getattr(value, n)) for n in names]
    if isinstance(value, str):
        return value
    if isinstance(value, (tuple, list)):
        return [to_wire(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_wire(v) for k, v in value.items()}
    return value


Decoder = Callable[[Any], Any]
_DECODERS: dict[Any, Decoder] = {}


def from_wire(tp: Any, data: Any) -> Any:
    """Rebuild a value of type ``tp`` from its wire form, validating every field."""
    return _decoder(tp)(data)


def _decoder(tp: Any) -> Decoder:
    """A validating decoder for ``tp``, compiled once per type (100k rows decode fast)."""
    cached = _DECODERS.get(tp)
    if cached is None:
        cached = _DECODERS[tp] = _build_decoder(tp)
    return cached


def _primitive(kind: type) -> Decoder:
    def decode(data: Any) -> Any:
        if type(data) is kind:
            return data
        raise WireError(f"expected {kind.__name__}, got {type(data).__name__}")

    return decode


def _float(data: Any) -> float:
    if type(data) is float or type(data) is int:
        return float(data)
    raise WireError(f"expected float, got {type(data).__name__}")


def _fail(cls: type, index: int, value: Any) -> None:
    field_name = dataclasses.fields(cls)[index].name
    raise WireError(f"bad {cls.__name__}.{field_name}: {type(value).__name__} {value!r:.40}")


def _record_decoder(cls: type) -> Decoder:
    """Generate a straight-line decoder for one record type.

    Primitive and optional-primitive fields are checked inline (no call per field), which
    makes decoding 100k task rows several times faster than a generic walk.
    """
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    env: dict[str, Any] = {"cls": cls, "WireError": WireError, "_fail": _fail}
    lines = [
        "def decode(data):",
        f"    if type(data) is not list or len(data) < {len(fields)}:",
        f"        raise WireError('expected {len(fields)} fields for {cls.__name__}')",
    ]
    for i, f in enumerate(fields):
        hint = hints[f.name]
        v = f"v{i}"
        lines.append(f"    {v} = data[{i}]")
        args = typing.get_args(hint)
        optional = typing.get_origin(hint) in (Union, types.UnionType) and type(None) in args
        inner = [a for a in args if a is not type(None)] if optional else [hint]
        base = inner[0] if len(inner) == 1 else None
        guard = f"{v} is not None and " if optional else ""
        if base in (str, int, bool):
            lines.append(f"    if {guard}type({v}) is not {base.__name__}: _fail(cls, {i}, {v})")
        elif base is float:
            lines.append(f"    if {guard}type({v}) is not float:")
            lines.append(f"        if type({v}) is int: {v} = float({v})")
            lines.append(f"        else: _fail(cls, {i}, {v})")
        else:
            env[f"d{i}"] = _decoder(hint)
            lines.append(f"    {v} = d{i}({v})")
    lines.append(f"    return cls({', '.join(f'v{i}' for i in range(len(fields)))})")
    exec("\n".join(lines), env)  # generated from our own type hints only
    return env["decode"]


# ------------------------------------------------ bulk rows (tuple[FlatRecord, ...])

BULK_ROWS = 32  # shorter lists decode row by row: compiling a bulk decoder costs more
_NONE = type(None)


def _bulk_or_generic(cls: type, generic: Decoder) -> Decoder:
    """``generic`` for short lists; for long ones :func:`_rows_decoder`, built when first
    needed (a CLI call that lists a few tasks compiles nothing it does not use)."""
    built: list[Decoder | None] = []

    def decode(data: Any) -> tuple[Any, ...]:
        if type(data) is not list or len(data) < BULK_ROWS:
            return generic(data)
        if not built:
            built.append(_rows_decoder(cls, generic))
        bulk = built[0]
        return generic(data) if bulk is None else bulk(data)

    return decode


class _Reject(Exception):
    """A row the fast path cannot vouch for: the generic decoder says what is wrong."""


def _flat_field(hint: Any) -> tuple[type, bool, bool] | None:
    """(primitive type, optional, is a tuple of it) of a flat field, or None when the field
    is not flat: a record, a union of several types, a tuple of records, an optional tuple."""
    args = typing.get_args(hint)
    optional = typing.get_origin(hint) in (Union, types.UnionType) and _NONE in args
    inner = [a for a in args if a is not _NONE] if optional else [hint]
    if len(inner) != 1:
        return None
    base = inner[0]
    if base in (str, int, bool, float):
        return base, optional, False
    if typing.get_origin(base) is tuple and not optional:
        items = typing.get_args(base)
        if len(items) == 2 and items[1] is Ellipsis and items[0] in (str, int, bool):
            return items[0], False, True
    return None


def _check_lines(i: int, base: type, optional: bool, many: bool) -> list[str]:
    """Inline checks of parameter ``v{i}``, the same the generic decoder makes."""
    v = f"v{i}"
    if many:  # most such lists are empty: their items cost nothing to check
        return [
            f"    if type({v}) is not list: raise _Reject",
            f"    if {v} and not _items[{i}].issuperset(map(type, {v})): raise _Reject",
            f"    {v} = tuple({v})",
        ]
    guard = f"{v} is not None and " if optional else ""
    if base is float:
        return [
            f"    if {guard}type({v}) is not float:",
            f"        if type({v}) is int: {v} = float({v})",
            "        else: raise _Reject",
        ]
    return [f"    if {guard}type({v}) is not {base.__name__}: raise _Reject"]


def _rows_decoder(cls: type, generic: Decoder, swap: bool = True) -> Decoder | None:
    """A decoder for ``tuple[cls, ...]`` of a flat record: every field a primitive, an
    optional primitive or a tuple of primitives (None for any other record).

    It accepts exactly what ``generic`` accepts and returns equal records, several times
    faster: that every row is a list is checked in bulk, each row's length and fields by
    generated inline code, and the records are built without the frozen ``__init__`` (see
    :func:`_row_factory`). Any row it cannot vouch for hands the whole payload to
    ``generic``, which rejects it with its precise WireError.
    """
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    plan = [_flat_field(hints[f.name]) for f in fields]
    if not fields or any(p is None for p in plan):
        return None
    make = _row_factory(cls, plan, swap)  # type: ignore[arg-type]

    def decode_rows(data: Any) -> tuple[Any, ...]:
        if type(data) is not list or not data or set(map(type, data)) != {list}:
            return generic(data)
        try:
            return tuple(starmap(make, data))
        except (_Reject, TypeError):  # TypeError: a row too short for the parameters
            return generic(data)

    return decode_rows


def _row_factory(
    cls: type, plan: list[tuple[type, bool, bool]], swap: bool = True
) -> Callable[..., Any]:
    """A callable taking one row's values (trailing extras ignored) that checks them and
    returns the record, or raises _Reject.

    A frozen dataclass's ``__init__`` stores each field through ``object.__setattr__``,
    the slow half of decoding 100k rows. A plain twin class stores them with ordinary
    attribute writes, then its instance becomes a ``cls`` by ``__class__`` assignment (same
    layout, same ``__dict__``), equal to ``cls(*values)``. Probed once here; where the
    swap is refused, would stop the world per row (free-threaded builds) or ``swap`` is
    False, the factory calls ``cls`` instead.
    """
    names = [f.name for f in dataclasses.fields(cls)]
    params = ", ".join(f"v{i}" for i in range(len(names)))
    checks = [line for i, p in enumerate(plan) for line in _check_lines(i, *p)]
    items = {i: frozenset({base}) for i, (base, _, many) in enumerate(plan) if many}
    env: dict[str, Any] = {"cls": cls, "_Reject": _Reject, "_items": items}
    exec(  # generated from our own field names and type hints only
        "\n".join(
            [f"def make({params}, *extra):", *checks, f"    return cls({params})"]
            + [f"def __init__(self, {params}, *extra):", *checks]
            + [f"    self.{name} = v{i}" for i, name in enumerate(names)]
            + ["    self.__class__ = cls"]
        ),
        env,
    )
    if not swap or sysconfig.get_config_var("Py_GIL_DISABLED"):
        return env["make"]
    twin = type(f"{cls.__name__}Row", (), {"__init__": env["__init__"], "__module__": __name__})
    sample = [[base(1)] if many else base(1) for base, _, many in plan]  # valid values
    try:
        probe, expected = twin(*sample), env["make"](*sample)
        swaps = type(probe) is cls and probe == expected and vars(probe) == vars(expected)
    except (TypeError, _Reject):
        swaps = False
    return twin if swaps else env["make"]


def _build_decoder(tp: Any) -> Decoder:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(options) < len(typing.get_args(tp))
        inner = [_decoder(a) for a in options]

        def decode_union(data: Any) -> Any:
            if data is None and optional:
                return None
            errors = []
            for dec in inner:
                try:
                    return dec(data)
                except WireError as exc:
                    errors.append(str(exc))
            raise WireError(f"value matches none of {tp}: {'; '.join(errors)}")

        return decode_union
    if origin is tuple:
        item_type = typing.get_args(tp)[0]
        item = _decoder(item_type)

        def decode_tuple(data: Any) -> tuple[Any, ...]:
            if type(data) is not list:
                raise WireError(f"expected a list for {tp}, got {type(data).__name__}")
            return tuple([item(v) for v in data])

        if isinstance(item_type, type) and dataclasses.is_dataclass(item_type):
            return _bulk_or_generic(item_type, decode_tuple)
        return decode_tuple
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _record_decoder(tp)
    if tp is float:
        return _float
    if tp is Any:
        return lambda data: data
    if tp in (int, str, bool):
        return _primitive(tp)
    raise WireError(f"cannot decode type {tp!r}")


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)


def _has_raw(obj: Any) -> bool:
    """Whether pre-encoded JSON sits anywhere inside ``obj``."""
    if isinstance(obj, RawJSON):
        return True
    if isinstance(obj, list):
        return any(_has_raw(v) for v in obj)
    if isinstance(obj, dict):
        return any(_has_raw(v) for v in obj.values())
    return False


def _encode(obj: Any) -> str:
    """JSON text of ``obj``, splicing RawJSON in verbatim wherever it occurs.

    Large row lists arrive as RawJSON (encoded in slices by the collector), so the
    parts encoded here are small and no single json.dumps call holds the GIL long.
    """
    if isinstance(obj, RawJSON):
        return str(obj)
    if not _has_raw(obj):
        return _dumps(obj)
    if isinstance(obj, list):
        return "[" + ",".join(_encode(v) for v in obj) + "]"
    return "{" + ",".join(f"{_dumps(str(k))}:{_encode(v)}" for k, v in obj.items()) + "}"


def _pack(envelope: dict[str, Any]) -> bytes:
    raw = _encode(envelope).encode()
    if len(raw) > COMPRESS_ABOVE:
        return b"Z" + zlib.compress(raw, 1)
    return b"J" + raw


def encode_ok(value: Any) -> bytes:
    """Encode a successful reply carrying a record, tuple of records or plain data."""
    return _pack({"v": PROTOCOL_VERSION, "ok": True, "data": to_wire(value)})


def encode_error(kind: str, message: str) -> bytes:
    """Encode a failure reply: ``kind`` is a stable machine word, ``message`` for humans."""
    return _pack({"v": PROTOCOL_VERSION, "ok": False, "error": kind, "message": message})


@record
class Envelope:
    """A decoded reply."""

    version: int
    ok: bool
    data: Any = None
    error: str = ""
    message: str = ""
    size: int = field(default=0, compare=False)


def decode_envelope(payload: bytes, max_size: int = MAX_PAYLOAD) -> Envelope:
    """Decode a reply, bounding decompressed size and validating its shape."""
    if not isinstance(payload, bytes) or not payload:
        raise WireError("empty or non-bytes payload")
    tag, body = payload[:1], payload[1:]
    if tag == b"Z":
        decomp = zlib.decompressobj()
        try:
            body = decomp.decompress(body, max_size + 1)
        except zlib.error as exc:
            raise WireError(f"corrupt compressed payload: {exc}") from exc
        if len(body) > max_size:
            raise WireError(f"payload larger than {max_size} bytes")
    elif tag != b"J":
        raise WireError(f"unknown payload tag {tag!r}")
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WireError(f"payload is not JSON: {exc}") from exc
    if (
        not isinstance(obj, dict)
        or type(obj.get("v")) is not int
        or type(obj.get("ok")) is not bool
    ):
        raise WireError("payload is not a reply envelope")
    if obj["ok"]:
        return Envelope(obj["v"], True, obj.get("data"), size=len(payload))
    return Envelope(
        obj["v"], False, error=str(obj.get("error", "")), message=str(obj.get("message", ""))
    )


def decode_as(tp: type[T] | Any, envelope: Envelope) -> T:
    """Decode an envelope's data as a record type (or ``tuple[Record, ...]``)."""
    return from_wire(tp, envelope.data)
