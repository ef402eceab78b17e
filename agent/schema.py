"""Wire records: plain frozen dataclasses, encoded as positional JSON arrays.

Both halves import this module and nothing else crosses the link. A record travels
as a list of its field values in declared order (compact for 100k-row task lists);
new fields are only ever appended, so an older observer ignores trailing values.
How they are encoded, decoded and checked is agent.codec's job.
"""

from __future__ import annotations

from agent.record import record

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
    state: str  # pending / done / cancelled / failed (raised: see error) / unknown
    coroutine: str  # what the task runs
    function: str  # where it is suspended: the innermost function, at file:line
    file: str
    line: int
    loop: str
    age: float | None  # seconds since it was created, or since first seen (age_exact False)
    awaiting: tuple[str, ...]  # ids of tasks this task is waiting on
    current: bool  # running right now on its loop
    age_exact: bool = True  # False: created before the agent hooked its loop, age >= this
    error: str = ""  # state failed: the type of the exception it raised


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
    first_seen: float  # agent wall clock when created (exact) or else first seen
    awaiting: tuple[int, ...]  # serials of the tasks it waits on
    exact: bool  # first_seen is the creation time (the agent's task factory stamped it)
    error: str  # state failed: the type of the exception the task raised


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
    threads: int  # the host's threads, the agent's own left out (see agent_threads)
    tasks: int
    loop_lag: float | None
    gc_collections: int  # total collections since start, all generations
    traced: int | None  # bytes traced by tracemalloc, None when it is not tracing
    agent_threads: int = 0  # the agent's own threads (``threads`` counts the host's only)


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


@record
class WorkerExit:
    """A worker of this master that exited, as the master's agent saw it end (agent.exits)."""

    pid: int
    name: str  # what it was (its role's label, e.g. ForkPoolWorker-2)
    slot: int  # its place among the workers (agent.metrics.workers.Slots); -1 unknown
    how: str  # "signal 9", "exit 3"; "" when the server reaped it before its status was read
    code: int | None  # its exit status, when it exited
    signal: int | None  # the signal that ended it, when one did
    time: float  # when the agent saw it end (the agent's wall clock)
    replaced_by: int  # the worker that took its slot since (its pid); 0: none yet


@record
class WorkerSet:
    """A master's workers now and how the recent ones ended (the fan-out's header)."""

    workers: tuple[ChildInfo, ...]  # descendants that run a worker agent
    exits: tuple[WorkerExit, ...]  # recent exits, oldest first
    watching: str  # "" when exits are watched here, else why not


@record
class TaskCpuRow:
    """One task's share of its loop over a CPU-per-task window."""

    task: str  # task-N
    cpu: float  # seconds of its thread's CPU clock spent in its steps over the window
    wall: float  # seconds of wall time its steps took (more than cpu: it blocked its loop)
    steps: int
    name: str  # filled for the top rows only ("" below them, and for a finished task)
    coroutine: str
    alive: bool  # False: the task has finished (or was collected) since


@record
class TaskCpu:
    """CPU per asyncio task over the last ``covered`` seconds (agent.collect.taskcpu)."""

    enabled: bool
    note: str  # why it cannot run here ("needs Python 3.12+"), or ""
    since: float | None  # agent wall clock when it was turned on
    by: str  # who turned it on (role@peer)
    keep: bool  # it outlives the session that turned it on
    window: float  # seconds asked for
    covered: float  # seconds the figures cover (less than window right after it started)
    cpu: float  # all tasks' step CPU over ``covered``, the rows below the cap included
    wall: float
    steps: int
    untracked: float  # CPU of tasks past the per-second cap, counted but not itemised
    codes: int  # coroutine code objects watched
    rows: tuple[TaskCpuRow, ...]  # the busiest first; name/coroutine for the first ``top``


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
    WorkerExit,
    WorkerSet,
    TaskCpuRow,
    TaskCpu,
)
