"""The observer's public Python API: ``connect()`` returns a ``Node``.

    >>> from observer.client import connect
    >>> node = connect("10.0.0.5:7330", token_file="operator.token",
    ...                fingerprint="sha256:...")
    >>> [t.name for t in node.tasks()]
    >>> node.cancel("task-12")

Every method is one round trip and returns frozen records from ``agent.schema``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import field
from pathlib import Path
from typing import Any, TypeVar

from agent.codec import WireError, decode_envelope, from_wire
from agent.record import record
from agent.schema import (
    AuditRecord,
    Census,
    ChildInfo,
    ControlResult,
    Hello,
    History,
    LocalsInfo,
    LoopInfo,
    MemoryInfo,
    Overview,
    ProcessInfo,
    Profile,
    Snapshot,
    SnapshotUpdate,
    SourceText,
    StackInfo,
    StallList,
    TaskChunk,
    TaskCpu,
    TaskInfo,
    TaskListing,
    ThreadInfo,
    TraceStats,
    Variable,
    WorkerExit,
    WorkerSet,
)
from agent.version import PROTOCOL_VERSION
from observer.errors import (
    BadRequest,
    NodeDown,
    NodeTimeout,
    ObserverError,
    remote_error,
)
from observer.gcpause import gc_paused
from observer.taskcache import ListingStats, Resync, TaskCache
from observer.transport import (
    Address,
    Session,
    check_timeout,
    open_session,
    parse_address,
    parse_pin,
)

T = TypeVar("T")
DEFAULT_TIMEOUT = 10.0
CHUNK_ROWS = 20_000  # task rows per reply asked for (the agent may send fewer)
FANOUT_TIMEOUT = 5.0  # seconds each worker gets in a fan-out, at most
_UPDATE_TASKS = [f.name for f in dataclasses.fields(SnapshotUpdate)].index("tasks")
_LISTING_ROWS = [f.name for f in dataclasses.fields(TaskListing)].index("rows")
_CHUNK_ROWS = [f.name for f in dataclasses.fields(TaskChunk)].index("rows")


@record
class TaskList:
    """Tasks as returned by the agent, with how many matched before the limit."""

    tasks: tuple[TaskInfo, ...]
    total: int
    truncated: bool


Cursor = tuple[int, int]  # (the node's task cache, its version) a consumer last saw


@record
class SnapshotChanges:
    """A snapshot for one consumer (see Node.changes): process, threads, loops and
    children whole; the tasks all of them (``full``) or only those new or changed since
    the consumer's cursor, and the ids of those gone."""

    process: ProcessInfo
    threads: tuple[ThreadInfo, ...]
    loops: tuple[LoopInfo, ...]
    children: tuple[ChildInfo, ...]
    collect_seconds: float
    tasks_total: int
    truncated: bool
    full: bool
    tasks: tuple[TaskInfo, ...]  # full: every task, pending first; else new and changed
    gone: tuple[str, ...]  # ids of tasks gone (never in ``tasks``)
    current: tuple[str, ...]  # ids of tasks running a step now
    now: float  # the agent's clock: ages are as of this
    cursor: Cursor  # what to pass to the next Node.changes
    cache: Any = field(default=None, compare=False, repr=False)  # the TaskCache read
    lock: Any = field(default=None, compare=False, repr=False)  # the node's, guarding it

    def snapshot(self) -> Snapshot:
        """The whole snapshot: every task the node held when these changes were made."""
        tasks = self.tasks
        if not self.full:
            current = [int(task_id[5:]) for task_id in self.current]
            with self.lock or contextlib.nullcontext(), gc_paused():
                tasks = self.cache.tasks(self.now, current)
        return Snapshot(
            process=self.process,
            threads=self.threads,
            loops=self.loops,
            tasks=tasks,
            children=self.children,
            tasks_total=self.tasks_total,
            truncated=self.truncated,
            collect_seconds=self.collect_seconds,
        )


def changes_from(
    update: SnapshotUpdate, cache: TaskCache, since: Cursor, lock: Any = None
) -> SnapshotChanges:
    """What a consumer that saw ``since`` needs of ``cache``, which ``update`` has just
    brought up to date (``lock``: what guards the cache, held by the caller now)."""
    listing = update.tasks
    now = listing.time
    found = cache.changes_since(since[1]) if since[0] == cache.serial else None
    with gc_paused():
        if found is None:
            tasks, gone = cache.tasks(now, listing.current), ()
        else:
            changed, removed = found
            tasks = tuple(cache.infos(changed, now, listing.current))
            gone = tuple(f"task-{serial}" for serial in removed)
    return SnapshotChanges(
        process=update.process,
        threads=update.threads,
        loops=update.loops,
        children=update.children,
        collect_seconds=update.collect_seconds,
        tasks_total=listing.total,
        truncated=listing.truncated,
        full=found is None,
        tasks=tasks,
        gone=gone,
        current=tuple(f"task-{serial}" for serial in listing.current),
        now=now,
        cursor=(cache.serial, cache.version),
        cache=cache,
        lock=lock,
    )


def read_token(
    token: str | None = None, token_file: str | os.PathLike[str] | None = None
) -> str | None:
    """The token from an argument, a file, or OBSERVER_TOKEN / OBSERVER_TOKEN_FILE."""
    if token:
        return token.strip()
    path = token_file or os.environ.get("OBSERVER_TOKEN_FILE")
    if path:
        try:
            lines = Path(path).read_text().strip().splitlines()
        except OSError as exc:
            raise ObserverError(f"cannot read token file {path}: {exc.strerror}") from exc
        if not lines or not lines[0].strip():
            raise ObserverError(f"token file {path} is empty")
        return lines[0].strip()
    env = os.environ.get("OBSERVER_TOKEN")
    return env.strip() if env else None


class Node:
    """A connection to one agent. Thread-safe: calls are serialised on the connection."""

    def __init__(self, address: Address, session: Session, *, timeout: float) -> None:
        self.address = address
        self.timeout = timeout
        self._lock = threading.RLock()
        self._conn = session.conn
        self.role = session.role
        self.agent_version = session.agent_version
        self.tls = session.tls
        self.cert_warning = session.cert_warning  # e.g. "agent certificate expired on ..."
        self.last_rtt: float | None = None
        self.last_size = 0
        self.chunk_rows = CHUNK_ROWS  # rows per task listing reply asked of the agent
        self.last_listing: ListingStats | None = None  # what the last task listing carried
        self._tasks = TaskCache()  # this node's tasks as of the last complete or delta listing
        self._hello: Hello | None = None
        # (method, data): a reply already fetched (Node.tree_changes), taken by the next
        # call of that method instead of a round trip
        self._feed: tuple[str, Any] | None = None
        self._tree = True  # False once the agent refused tree (older, or not a master)

    def __repr__(self) -> str:
        name = self._hello.node if self._hello else "?"  # repr never does network I/O
        return f"<Node {name!r} {self.address} role={self.role}>"

    def __enter__(self) -> Node:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def name(self) -> str:
        """The node's name (asked once, on first use: connecting costs no extra round trip)."""
        if self._hello is None:
            self.hello()
        assert self._hello is not None
        return self._hello.node

    def close(self, goodbye: bool = True) -> None:
        """Close the connection (idempotent).

        ``goodbye=False`` drops the socket without rpyc's closing round trip: to a node
        that stopped answering, that goodbye would wait out the whole call timeout again.
        """
        with contextlib.suppress(Exception):
            self._conn.close(goodbye)

    @property
    def closed(self) -> bool:
        return bool(self._conn.closed)

    # ------------------------------------------------------------ plumbing

    @contextlib.contextmanager
    def deadline(self, seconds: float | None):  # type: ignore[no-untyped-def]
        """Calls made inside use this timeout instead of the node's (a liveness probe
        should fail fast; a big snapshot may take its time)."""
        if seconds is None:
            yield self
            return
        with self._lock:
            conn = self._conn
            before = conn.timeout
            conn.timeout = seconds
            try:
                yield self
            finally:
                conn.timeout = before

    def _raw(self, method: str, *args: Any) -> Any:
        """One round trip: call an exposed method and decode its envelope."""
        fed = self._feed
        if fed is not None and fed[0] == method:
            self._feed = None
            return fed[1]
        payload = self._request(method, args)
        if type(payload) is not bytes:
            raise ObserverError(f"{self.address} sent a non-bytes reply to {method}")
        return self._open(payload)

    def _request(self, method: str, args: tuple[Any, ...]) -> Any:
        """One round trip: the exposed method's reply as it came (errors turned into ours)."""
        with self._lock:
            try:
                self._conn.root()  # a round trip on first use only
                started = time.perf_counter()
                # one round trip: rpyc's getattr-then-call in one request (CALLATTR)
                payload = self._conn.call(method, args)
                self.last_rtt = time.perf_counter() - started
            except TimeoutError as exc:
                waited = self._conn.timeout
                raise NodeTimeout(
                    f"{self.address} did not answer {method} within {waited:g}s"
                ) from exc
            except EOFError as exc:
                raise NodeDown(f"connection to {self.address} lost") from exc
            except OSError as exc:
                raise NodeDown(f"connection to {self.address} lost: {exc}") from exc
        return payload

    def _open(self, payload: bytes) -> Any:
        """An envelope's data; its error raised as ours."""
        try:
            with gc_paused():
                envelope = decode_envelope(payload)
        except WireError as exc:
            raise ObserverError(f"{self.address} sent a malformed reply: {exc}") from exc
        self.last_size = len(payload)
        if envelope.version != PROTOCOL_VERSION:
            raise ObserverError(f"{self.address} replied with protocol {envelope.version}")
        if not envelope.ok:
            raise remote_error(envelope.error, envelope.message)
        return envelope.data

    def _call(self, tp: Any, method: str, *args: Any) -> Any:
        data = self._raw(method, *args)
        try:
            with gc_paused():
                return from_wire(tp, data)
        except WireError as exc:
            raise ObserverError(f"{self.address} sent a malformed {method} reply: {exc}") from exc

    # ------------------------------------------------------------ reads

    def hello(self) -> Hello:
        """Node name, pid, versions and the role granted to this connection."""
        self._hello = self._call(Hello, "hello")
        return self._hello

    def process(self) -> ProcessInfo:
        """The host process: identity, CPU, memory, fds, GC, exposed objects."""
        return self._call(ProcessInfo, "process")

    def threads(self) -> tuple[ThreadInfo, ...]:
        """Every Python thread with CPU time and current location."""
        return self._call(tuple[ThreadInfo, ...], "threads")

    def system(
        self,
    ) -> tuple[ProcessInfo, tuple[ChildInfo, ...], tuple[WorkerExit, ...], tuple[ThreadInfo, ...]]:
        """The process, its children, how its recent workers ended (a master's) and its
        threads in one round trip (three calls to an agent that predates it)."""
        try:
            data = self._raw("system")
        except (AttributeError, BadRequest):  # an older agent, or a relay that predates it
            return self.process(), self.children(), (), self.threads()
        try:
            with gc_paused():
                return (
                    from_wire(ProcessInfo, data["process"]),
                    from_wire(tuple[ChildInfo, ...], data["children"]),
                    from_wire(tuple[WorkerExit, ...], data.get("exits", ())),
                    from_wire(tuple[ThreadInfo, ...], data["threads"]),
                )
        except (WireError, KeyError, TypeError) as exc:
            raise ObserverError(f"{self.address} sent a malformed system reply: {exc}") from exc

    def task_list(self, limit: int = 100_000, match: str = "") -> TaskList:
        """Tasks (filtered in the agent by name/coroutine substring), pending first."""
        with gc_paused():  # one pause over the rows and the records made of them
            _head, listing, cache = self._listing("tasks", TaskListing, limit, match)
            tasks = cache.tasks(listing.time, listing.current)
        return TaskList(tasks, listing.total, listing.truncated)

    def tasks(self, limit: int = 100_000, match: str = "") -> tuple[TaskInfo, ...]:
        """Asyncio tasks of every event loop in the process."""
        return self.task_list(limit, match).tasks

    def snapshot(self, limit: int = 100_000, match: str = "") -> Snapshot:
        """Process, threads, loops, tasks and children in one round trip (plus one per
        further chunk of task rows: only a first listing, or a huge change, has several).

        After the first, the agent sends only the tasks that changed and the ids of those
        gone; the node merges them into the tasks it holds and returns them all.
        """
        with gc_paused():  # one pause over the rows and the records made of them
            update, listing, cache = self._listing("snapshot", SnapshotUpdate, limit, match)
            tasks = cache.tasks(listing.time, listing.current)
        return Snapshot(
            process=update.process,
            threads=update.threads,
            loops=update.loops,
            tasks=tasks,
            children=update.children,
            tasks_total=listing.total,
            truncated=listing.truncated,
            collect_seconds=update.collect_seconds,
        )

    def _listing(
        self, method: str, head: Any, limit: int, match: str
    ) -> tuple[Any, TaskListing, TaskCache]:
        """Call a task-listing method and bring the node's tasks up to date with it; the
        decoded reply, its listing and the cache holding its tasks.

        An unfiltered call asks for what changed since the version held; a filtered one
        (``match``) or a truncated answer is a listing of its own (a cache of its own)
        and leaves what the node holds alone. A delta that does not follow it (the agent
        restarted, a reply was lost) makes the node ask again for everything, once.
        """
        with self._lock, gc_paused():  # the rows of every chunk stay until all are in
            for attempt in range(2):
                sent = self._listing_args(limit, match) if attempt == 0 else None
                data = self._raw(method, *(sent or (int(limit), str(match), 0, 0, self.chunk_rows)))
                size = self.last_size
                try:
                    with gc_paused():
                        wire = data[_UPDATE_TASKS] if head is SnapshotUpdate else data
                        rows = wire[_LISTING_ROWS]
                        wire[_LISTING_ROWS] = []
                        decoded = from_wire(head, data)
                except (WireError, IndexError, TypeError, KeyError) as exc:
                    raise ObserverError(
                        f"{self.address} sent a malformed {method} reply: {exc}"
                    ) from exc
                listing = decoded.tasks if head is SnapshotUpdate else decoded
                if type(rows) is not list:
                    raise ObserverError(f"{self.address} sent task rows that are not a list")
                chunks = 1
                while len(rows) < listing.count:
                    more = self._chunk(listing.listing, len(rows))
                    rows.extend(more)
                    size += self.last_size
                    chunks += 1
                complete = listing.base == 0 and not match and not listing.truncated
                cache = self._tasks if listing.base else TaskCache()
                try:
                    with gc_paused():
                        cache.apply(listing, rows)
                except Resync:
                    self._tasks = TaskCache()
                    continue
                except WireError as exc:
                    self._tasks = TaskCache()
                    raise ObserverError(f"{self.address} sent a malformed task row: {exc}") from exc
                if complete:
                    self._tasks = cache
                self.last_listing = ListingStats(
                    listing.base, listing.version, len(rows), len(listing.removed), chunks, size
                )
                return decoded, listing, cache
        raise ObserverError(f"{self.address} sent task deltas that do not follow each other")

    def changes(self, since: Cursor = (0, 0), limit: int = 100_000) -> SnapshotChanges:
        """A snapshot as what changed for one consumer since its ``cursor`` (the one the
        last SnapshotChanges it got carries; (0, 0) at first): only the tasks new or
        changed since then, and the ids of those gone; ``full`` when every task comes
        (the first call, a consumer too far behind, a truncated listing).

        A steady refresh at 100k tasks with 100 changed builds ~100 records, not 100k.
        Consumers (GUI tabs, scripts) share the node's one copy of the tasks, whatever
        version each saw last: the agent's change log and the node's bounded one serve
        them all, and one too far behind gets everything.
        """
        with self._lock, gc_paused():
            update, _listing, cache = self._listing("snapshot", SnapshotUpdate, limit, "")
            return changes_from(update, cache, since, self._lock)

    def _chunk(self, listing: int, offset: int) -> list[Any]:
        """Rows of a listing from ``offset`` (one round trip)."""
        data = self._raw("task_chunk", listing, offset, int(self.chunk_rows))
        try:
            rows = data[_CHUNK_ROWS]
            data[_CHUNK_ROWS] = []
            chunk = from_wire(TaskChunk, data)
        except (WireError, IndexError, TypeError) as exc:
            raise ObserverError(f"{self.address} sent a malformed task chunk: {exc}") from exc
        if chunk.listing != listing or chunk.offset != offset or type(rows) is not list:
            raise ObserverError(f"{self.address} sent rows of another listing or place")
        if not rows:
            raise ObserverError(f"{self.address} sent an empty chunk of listing {listing}")
        return rows

    def tree(self, limit: int = 100_000) -> Snapshot:
        """The snapshot a process tree is drawn from (see observer.tree.build_tree)."""
        return self.snapshot(limit)

    def children(self) -> tuple[ChildInfo, ...]:
        """Descendant OS processes."""
        return self._call(tuple[ChildInfo, ...], "children")

    def stack(self, target: str) -> StackInfo:
        """Full stack of a thread, or await chain of a task (``thread-N`` / ``task-N``)."""
        return self.stack_with_locals(target, with_locals=False)[0]

    def stack_with_locals(
        self, target: str, with_locals: bool = True
    ) -> tuple[StackInfo, tuple[LocalsInfo, ...]]:
        """A stack and every frame's locals, read together in one round trip."""
        data = self._raw("stack", str(target), bool(with_locals))
        try:
            with gc_paused():
                return (
                    from_wire(StackInfo, data["stack"]),
                    from_wire(tuple[LocalsInfo, ...], data["locals"]),
                )
        except (WireError, KeyError, TypeError) as exc:
            raise ObserverError(f"{self.address} sent a malformed stack reply: {exc}") from exc

    def locals(self, target: str, frame: int = -1, path: tuple[str, ...] = ()) -> LocalsInfo:
        """Safe, redacted locals of one frame (default innermost); ``path`` expands a value."""
        return self._call(LocalsInfo, "locals", str(target), int(frame), tuple(map(str, path)))

    def exposed(self, name: str) -> tuple[Variable, ...]:
        """The members of an object the host exposed."""
        return self._call(tuple[Variable, ...], "exposed", str(name))

    def history(self, since: float = 0.0) -> History:
        """The agent's load-history ring buffer (samples newer than ``since``)."""
        return self._call(History, "history", float(since))

    def memory(self) -> MemoryInfo:
        """RSS/USS/VMS/swap, GC counters, tracemalloc status, exposed objects' deep sizes."""
        return self._call(MemoryInfo, "memory")

    def census(self, top: int = 50, *, baseline: bool = False, growth: bool = False) -> Census:
        """Live objects by type (top N by count). ``baseline=True`` makes this census the
        node's baseline (operator, audited); ``growth=True`` also lists the types that grew
        most since the baseline."""
        return self._call(Census, "census", int(top), bool(baseline), bool(growth))

    def growth(self, top: int = 50) -> Census:
        """A census compared with the baseline: ``.growth`` holds the types that grew most."""
        return self.census(top, growth=True)

    def tracemalloc_top(self, limit: int = 20, group: str = "lineno") -> TraceStats:
        """Where traced memory is now, largest first (group: lineno, traceback or filename)."""
        return self._call(TraceStats, "trace_stats", int(limit), str(group), False)

    def tracemalloc_diff(self, limit: int = 20, group: str = "lineno") -> TraceStats:
        """What grew since the tracemalloc baseline (taken at start, or by tracemalloc_baseline)."""
        return self._call(TraceStats, "trace_stats", int(limit), str(group), True)

    def tracemalloc_baseline(self) -> float:
        """Make the traced memory as it is now the baseline that diffs compare against
        (operator, audited: the baseline is shared by every observer of the node)."""
        return self._call(float, "trace_baseline")

    def source(self, path: str, line: int, context: int = 10) -> SourceText:
        """Lines around ``path:line`` (loaded modules and reported allocation sites only)."""
        return self._call(SourceText, "source", str(path), int(line), int(context))

    def overview(self, since: float = 0.0) -> Overview:
        """Identity, load now and the history samples newer than ``since``: a cluster row."""
        return self._call(Overview, "overview", float(since))

    def metrics(self, openmetrics: bool = False) -> tuple[str, str]:
        """(URL, text) of the node's Prometheus endpoint as a scrape would see it now."""
        try:
            url, text = self._raw("metrics", bool(openmetrics))
        except AttributeError as exc:  # an agent from before the metrics endpoint
            raise ObserverError(f"{self.address}: this agent has no metrics endpoint") from exc
        return str(url), str(text)

    def stalls(self, since: float = 0.0) -> StallList:
        """Event-loop stalls the agent caught that ended after ``since`` (agent wall clock):
        what blocked each loop, for how long, and the stack that did it."""
        try:
            return self._call(StallList, "stalls", float(since))
        except AttributeError as exc:  # the agent has no such method: it predates stalls
            raise ObserverError(
                f"{self.address} runs an agent without the stall catcher (agent "
                f"{self.agent_version}): upgrade it to see stalls"
            ) from exc

    def profile_start(self, seconds: float = 10.0, rate: float = 100.0) -> Profile:
        """Start a sampling profile on the node (any role; one at a time; it stops by itself
        after ``seconds``, clamped by the agent like ``rate``); returns its empty start."""
        try:
            return self._call(Profile, "profile_start", float(seconds), float(rate))
        except AttributeError as exc:
            raise ObserverError(
                f"{self.address} runs an agent without the profiler (agent "
                f"{self.agent_version}): upgrade it to profile"
            ) from exc

    def profile_read(self) -> Profile:
        """The running profile so far, or the latest finished one."""
        return self._call(Profile, "profile_read")

    def profile_stop(self) -> Profile:
        """Stop the running profile now (the session that started it, or an operator)."""
        return self._call(Profile, "profile_stop")

    def profile(
        self, seconds: float = 10.0, rate: float = 100.0, on_partial: Any = None
    ) -> Profile:
        """Start a profile, wait for its end (reading it each second, ``on_partial(p)``
        sees each partial one), and return it; stopped early on KeyboardInterrupt."""
        started = self.profile_start(seconds, rate)
        deadline = time.monotonic() + started.seconds
        try:
            while True:
                time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))
                current = self.profile_read()
                if current.serial != started.serial:
                    raise ObserverError("another profile replaced this one")
                if current.state != "running":
                    return current
                if on_partial is not None:
                    on_partial(current)
        except KeyboardInterrupt:
            return self.profile_stop()

    def audit(self, limit: int = 1000) -> tuple[AuditRecord, ...]:
        """Recent control actions on this node, oldest first."""
        return self._call(tuple[AuditRecord, ...], "audit", int(limit))

    # ------------------------------------------------------------ control (operator)

    # ``run`` names the chaos run an action belongs to; the agent writes it to its audit.

    def cancel(
        self, task_id: str, message: str = "cancelled by runtime-observer", *, run: str = ""
    ) -> ControlResult:
        """Cancel a task on its own event loop."""
        return self._call(ControlResult, "cancel", str(task_id), str(message), str(run))

    def raise_in(
        self, thread_id: str, exception: str = "SystemExit", *, run: str = ""
    ) -> ControlResult:
        """Raise a builtin exception in a thread (lands at its next bytecode, not in C code)."""
        return self._call(ControlResult, "raise_in", str(thread_id), str(exception), str(run))

    def signal(self, pid: int | str, sig: str = "TERM", *, run: str = "") -> ControlResult:
        """Send SIGTERM / SIGKILL / SIGINT to a child process (``1234`` or ``pid-1234``)."""
        return self._call(ControlResult, "signal", parse_pid(pid), str(sig), str(run))

    def chaos_mark(self, run: str, event: str, detail: str = "") -> ControlResult:
        """Audit a chaos run's ``start`` or ``end`` (operator only: a viewer is refused here)."""
        return self._call(ControlResult, "chaos", str(run), str(event), str(detail))

    def tracemalloc_start(self, frames: int = 10, keep: bool = False) -> ControlResult:
        """Start tracing allocations with ``frames`` frames per traceback (operator, audited).

        It stops when this connection ends unless ``keep`` (and whenever the agent stops)."""
        if keep:  # only sent when asked: an older agent takes frames alone
            return self._call(ControlResult, "tracemalloc_start", int(frames), True)
        return self._call(ControlResult, "tracemalloc_start", int(frames))

    def tracemalloc_stop(self) -> ControlResult:
        """Stop tracing and free the traces (operator, audited)."""
        return self._call(ControlResult, "tracemalloc_stop")

    def task_cpu(self, window: float = 10.0, top: int = 20, limit: int = 20_000) -> TaskCpu:
        """CPU per task over the last ``window`` seconds, busiest first (``enabled`` False
        while it is off; ``note`` says why it cannot run, e.g. before Python 3.12)."""
        try:
            return self._call(TaskCpu, "task_cpu", float(window), int(top), int(limit))
        except AttributeError as exc:
            raise ObserverError(
                f"{self.address} runs an agent without CPU per task (agent "
                f"{self.agent_version}): upgrade it"
            ) from exc

    def task_cpu_start(self, keep: bool = False) -> ControlResult:
        """Turn CPU per task on (operator, audited); it stops when this connection ends
        unless ``keep`` (and whenever the agent stops)."""
        return self._call(ControlResult, "task_cpu_start", bool(keep))

    def task_cpu_stop(self) -> ControlResult:
        """Turn CPU per task off (operator, audited): the host pays nothing again."""
        return self._call(ControlResult, "task_cpu_stop")

    def worker(self, pid: int | str) -> WorkerNode:
        """The worker ``pid`` (1234 or pid-1234) of this node, a node-like object reached
        through this session: the node relays each call with this session's role."""
        return WorkerNode(self, parse_pid(pid))

    def worker_set(self) -> WorkerSet:
        """The node's workers now and how the recent ones ended (who replaced them)."""
        return self.fan_out("")[0]

    def fan_out(
        self,
        method: str,
        *args: Any,
        pids: Iterable[int] | None = None,
        each: Mapping[int, tuple[Any, ...]] | None = None,
        timeout: float | None = None,
    ) -> tuple[WorkerSet, dict[int, Any]]:
        """``method(*args)`` on every worker (or those in ``pids``) at once, in one round
        trip: the master asks them concurrently, each within ``timeout`` s (half this
        node's timeout by default, 6 s at most). Returns the workers and how the recent
        ones ended, and pid -> the worker's decoded reply data, or the ObserverError it
        gave instead (a frozen or dead worker's is ``unreachable``; the others answer).
        ``each`` gives some workers arguments of their own; ``method`` "": no call."""
        wait = min(FANOUT_TIMEOUT, self.timeout / 2) if timeout is None else float(timeout)
        asked = tuple(int(pid) for pid in pids or ())
        own = tuple((int(pid), tuple(a)) for pid, a in (each or {}).items())
        try:
            reply = self._request("workers", (str(method), tuple(args), asked, own, wait))
        except AttributeError as exc:  # an agent from before the fan-out
            raise BadRequest(
                "bad-request", f"{self.address} runs an agent without the workers fan-out"
            ) from exc
        raws = self._replies(reply)
        try:
            with gc_paused():
                workers = from_wire(WorkerSet, self._open(raws[0]))
        except WireError as exc:
            raise ObserverError(f"{self.address} sent a malformed worker set: {exc}") from exc
        out: dict[int, Any] = {}
        for pid, payload in raws[1]:
            try:
                out[pid] = self._open(payload)
            except ObserverError as exc:
                out[pid] = exc
        return workers, out

    def _replies(self, reply: Any, parts: int = 2) -> Any:
        """A fan-out's reply, its shape checked (a header, then (pid, bytes) pairs, then,
        for tree, the node's own envelope)."""
        if type(reply) is bytes:  # the call itself was refused: its error
            self._open(reply)
        ok = (
            type(reply) is tuple
            and len(reply) == parts
            and all(type(part) is bytes for part in reply[2:])
            and type(reply[0]) is bytes
            and type(reply[1]) is tuple
            and all(
                type(pair) is tuple
                and len(pair) == 2
                and type(pair[0]) is int
                and type(pair[1]) is bytes
                for pair in reply[1]
            )
        )
        if not ok:
            raise ObserverError(f"{self.address} sent a malformed fan-out reply")
        return reply

    def worker_snapshots(
        self,
        workers: Iterable[WorkerNode] | None = None,
        limit: int = 100_000,
        match: str = "",
    ) -> tuple[WorkerSet, dict[int, Snapshot | ObserverError]]:
        """Every worker's snapshot (or those of ``workers``, whose task caches make the
        listings deltas) in one round trip through this node; a worker that could not
        answer gives its error. A listing too big for one reply fetches its other
        chunks from that worker alone."""
        nodes = {w.pid: w for w in workers} if workers is not None else None
        return self._fanned(nodes, limit, match, lambda node: node.snapshot(limit, match))

    def worker_changes(
        self, workers: Iterable[tuple[WorkerNode, Cursor]], limit: int = 100_000
    ) -> tuple[WorkerSet, dict[int, SnapshotChanges | ObserverError]]:
        """Each worker's changes since its cursor (as Node.changes), all in one round trip
        through this node: a worker whose tasks did not change sends no task rows and
        none are copied here (a GUI refresh of a master's workers)."""
        held = {w.pid: (w, cursor) for w, cursor in workers}
        nodes = {pid: w for pid, (w, _cursor) in held.items()}
        return self._fanned(nodes, limit, "", lambda node: node.changes(held[node.pid][1], limit))

    def tree_changes(
        self,
        since: Cursor,
        workers: Iterable[tuple[WorkerNode, Cursor]],
        limit: int = 100_000,
        timeout: float | None = None,
    ) -> tuple[SnapshotChanges, WorkerSet, dict[int, SnapshotChanges | ObserverError]]:
        """Node.changes and Node.worker_changes in ONE round trip: the master makes its
        own snapshot delta while its workers answer theirs (a master's Processes-tree
        refresh). Its tasks feed this node's cache as Node.changes does; further chunks
        of a big listing come as usual. An agent without it (older, or no master: it
        refuses) is remembered and asked with the two calls from then on."""
        held = {w.pid: (w, cursor) for w, cursor in workers}
        if not self._tree or not held:
            return (self.changes(since, limit), *self.worker_changes(held.values(), limit))
        wait = min(FANOUT_TIMEOUT, self.timeout / 2) if timeout is None else float(timeout)
        with self._lock, gc_paused():
            own = self._listing_args(limit, "")
            each = tuple((pid, w._listing_args(limit, "")) for pid, (w, _c) in held.items())
            common = (int(limit), "", 0, 0, int(self.chunk_rows))
            call = (own, "snapshot", common, tuple(held), each, wait)
            try:
                header, pairs, mine = self._replies(self._request("tree", call), 3)
                found = self._open(header)  # a refusal raises here, before anything is fed
            except (AttributeError, BadRequest):  # an agent from before tree, or no master
                self._tree = False
                return self.tree_changes(since, held.values(), limit, timeout)
            try:
                with gc_paused():
                    found = from_wire(WorkerSet, found)
            except WireError as exc:
                raise ObserverError(f"{self.address} sent a malformed worker set: {exc}") from exc
            self._feed = ("snapshot", self._open(mine))
            try:
                master = self.changes(since, limit)
            finally:
                self._feed = None
            out: dict[int, Any] = {}
            for pid, payload in pairs:
                pair = held.get(pid)
                if pair is None:
                    continue
                node, cursor = pair
                try:
                    node._feed = ("snapshot", self._open(payload))
                    out[pid] = node.changes(cursor, limit)
                except ObserverError as exc:
                    out[pid] = exc
                finally:
                    node._feed = None
            return master, found, out

    def _fanned(
        self,
        nodes: dict[int, WorkerNode] | None,
        limit: int,
        match: str,
        read: Callable[[WorkerNode], Any],
    ) -> tuple[WorkerSet, dict[int, Any]]:
        """worker_snapshots and worker_changes: one fan-out of the listing, each worker's
        reply then ``read`` by its node (fed the reply instead of a round trip)."""
        with self._lock:
            each = None
            if nodes is not None:
                each = {pid: w._listing_args(limit, match) for pid, w in nodes.items()}
            if nodes is not None and not nodes:
                return self.worker_set(), {}
            common = (int(limit), str(match), 0, 0, int(self.chunk_rows))
            try:
                found, replies = self.fan_out("snapshot", *common, pids=nodes or (), each=each)
            except BadRequest:
                if nodes is None:
                    raise
                return self._one_by_one(list(nodes.values()), read)
            out: dict[int, Any] = {}
            for pid, data in replies.items():
                node = nodes.get(pid) if nodes is not None else None
                node = node or WorkerNode(self, pid)
                if isinstance(data, ObserverError):
                    out[pid] = data
                    continue
                node._feed = ("snapshot", data)
                try:
                    out[pid] = read(node)
                except ObserverError as exc:
                    out[pid] = exc
                finally:
                    node._feed = None
            return found, out

    def _one_by_one(
        self, workers: list[WorkerNode], read: Callable[[WorkerNode], Any]
    ) -> tuple[WorkerSet, dict[int, Any]]:
        """_fanned for an agent without the fan-out: one worker after another."""
        out: dict[int, Any] = {}
        for worker in workers:
            try:
                out[worker.pid] = read(worker)
            except ObserverError as exc:
                out[worker.pid] = exc
        return WorkerSet((), (), "this agent does not watch worker exits"), out

    def _listing_args(self, limit: int, match: str) -> tuple[Any, ...]:
        """The arguments _listing sends first (the version held, when unfiltered)."""
        since, epoch = self._tasks.since() if not match else (0, 0)
        return (int(limit), str(match), since, epoch, int(self.chunk_rows))

    def kill(
        self,
        target: str,
        *,
        signal: str | None = None,
        exception: str | None = None,
        run: str = "",
    ) -> ControlResult:
        """Act on any id ps prints: cancel a task, raise in a thread, signal a child."""
        if target.startswith("task-"):
            return self.cancel(target, run=run)
        if target.startswith("thread-"):
            return self.raise_in(target, exception or "SystemExit", run=run)
        if target.startswith("pid-") or target.isdigit():
            return self.signal(target, signal or "TERM", run=run)
        raise BadRequest("bad-request", f"{target!r} is not a task-N, thread-N or pid-N id")


class WorkerNode(Node):
    """A worker of a node, reached through the node's own session (the master relays
    every call with this session's role: agent.relay); reads and actions as on a Node."""

    def __init__(self, master: Node, pid: int) -> None:
        self.master = master
        self.pid = pid
        self.address = master.address
        self.timeout = master.timeout
        self._lock = master._lock
        self._methods = {}
        self._conn = master._conn
        self.role = master.role
        self.agent_version = master.agent_version
        self.tls = master.tls
        self.cert_warning = ""
        self.last_rtt = None
        self.last_size = 0
        self.chunk_rows = master.chunk_rows
        self.last_listing = None
        self._tasks = TaskCache()
        self._hello = None
        # (method, data): a reply the master already fetched (Node.worker_snapshots), taken
        # by this worker's next call of that method instead of a round trip
        self._feed: tuple[str, Any] | None = None
        self._tree = False  # a worker relays to none (tree is not relayed)

    def __repr__(self) -> str:
        return f"<WorkerNode pid {self.pid} of {self.master!r}>"

    def _raw(self, method: str, *args: Any) -> Any:
        fed, self._feed = self._feed, None
        if fed is not None and fed[0] == method:
            return fed[1]
        data = self.master._raw("worker", self.pid, method, tuple(args))
        self.last_rtt, self.last_size = self.master.last_rtt, self.master.last_size
        return data

    def close(self, goodbye: bool = True) -> None:
        """The master's session stays open (close the master to end it)."""


def parse_pid(value: int | str) -> int:
    """Accept 1234 or 'pid-1234'."""
    if isinstance(value, int):
        return value
    text = value.removeprefix("pid-")
    if not text.isdigit():
        raise BadRequest("bad-request", f"{value!r} is not a process id")
    return int(text)


def check_settings(
    address: str, fingerprint: str | None = None, timeout: float = DEFAULT_TIMEOUT
) -> Address:
    """What connect() checks before connecting: a malformed address, fingerprint (given,
    else $OBSERVER_FINGERPRINT) or timeout raises BadSetting, one line naming the value."""
    where = parse_address(address)
    parse_pin(fingerprint or os.environ.get("OBSERVER_FINGERPRINT"))
    check_timeout(timeout)
    return where


def connect(
    address: str,
    *,
    token: str | None = None,
    token_file: str | os.PathLike[str] | None = None,
    fingerprint: str | None = None,
    cafile: str | None = None,
    certfile: str | None = None,
    keyfile: str | None = None,
    tls: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    connect_timeout: float | None = None,
    server_name: str | None = None,
    role: str | None = None,
) -> Node:
    """Connect to an agent at ``host:port``, verify it, authenticate; return a Node.

    ``timeout`` bounds every call; ``connect_timeout`` (default ``timeout``) bounds
    connecting; ``server_name`` is the name the certificate is checked against when
    ``address`` is an IP a DNS name resolved to; ``role="viewer"`` holds an operator
    token read-only for this connection.
    """
    where = check_settings(address, fingerprint, timeout)
    session = open_session(
        where,
        token=read_token(token, token_file),
        fingerprint=fingerprint or os.environ.get("OBSERVER_FINGERPRINT"),
        cafile=cafile or os.environ.get("OBSERVER_CAFILE"),
        certfile=certfile,
        keyfile=keyfile,
        tls=tls,
        timeout=timeout,
        connect_timeout=connect_timeout,
        server_name=server_name,
        role=role,
    )
    return Node(where, session, timeout=timeout)
