"""The agent's state and its operations, independent of rpyc: one data API for every front end."""

from __future__ import annotations

import dataclasses
import logging
import platform
import socket
import sys
import threading
import time
import types
from collections.abc import Callable, Collection
from typing import Any

import psutil

from agent import control
from agent.audit import AuditLog
from agent.auditfile import AuditFile
from agent.codec import RawJSON, Spliced, to_wire
from agent.collect import guarded
from agent.collect.census import CensusTaker
from agent.collect.children import ChildTracker
from agent.collect.deepsize import deep_size
from agent.collect.frames import (
    coroutine_chain,
    describe_variable,
    frame_infos,
    frame_variables,
    thread_frames,
)
from agent.collect.history import HistoryBuffer, Sampler
from agent.collect.lag import LagProbe
from agent.collect.memory import gc_state, os_memory
from agent.collect.pacing import pause_point
from agent.collect.process import (
    CpuMeter,
    Throttled,
    collect_process,
    connection_count,
    gc_collections,
    note_agent_thread,
    thread_counts,
)
from agent.collect.profiler import Profiler
from agent.collect.source import nearest_reported, source_lines
from agent.collect.stalls import DEFAULT_THRESHOLD, StallWatch
from agent.collect.taskcpu import TaskCpuMeter
from agent.collect.taskcpu import register as register_meter
from agent.collect.tasks import TaskRegistry, awaited_tasks, task_state
from agent.collect.tasktable import CHUNK_ROWS, Answer, Listing
from agent.collect.threads import THREAD_IDS, collect_threads
from agent.collect.tracing import Tracer
from agent.errors import BadRequest, NotFound
from agent.exposed import ExposedRegistry
from agent.redact import is_sensitive
from agent.saferepr import safe_children, safe_type_name
from agent.schema import (
    AuditRecord,
    Census,
    ChildInfo,
    ExposedSize,
    Hello,
    History,
    HistorySample,
    LocalsInfo,
    LoopInfo,
    MemoryInfo,
    Overview,
    ProcessInfo,
    SnapshotUpdate,
    SourceText,
    StackInfo,
    StallList,
    TaskChunk,
    TaskListing,
    TaskSite,
    ThreadInfo,
    TraceStats,
    Variable,
)
from agent.security import ROLES
from agent.version import AGENT_VERSION, PROTOCOL_VERSION

log = logging.getLogger("agent")
_UPDATE_FIELDS = [f.name for f in dataclasses.fields(SnapshotUpdate)]
_UPDATE_TASKS = _UPDATE_FIELDS.index("tasks")
_UPDATE_SECONDS = _UPDATE_FIELDS.index("collect_seconds")
_LISTING_ROWS = [f.name for f in dataclasses.fields(TaskListing)].index("rows")
_CHUNK_ROWS = [f.name for f in dataclasses.fields(TaskChunk)].index("rows")
DEFAULT_TASK_LIMIT = 100_000
MAX_TASK_LIMIT = 10_000_000  # rows come in chunks: a bound on work, not on a reply
MAX_PATH = 16
MAX_SOURCE_CONTEXT = 200
SOURCE_WINDOW = 20  # lines a viewer may read on either side of a reported line
OVERVIEW_SAMPLES = 120  # a sparkline's worth of history per overview
EXPOSED_SIZE_BUDGET = 0.1  # seconds per memory() call for all exposed objects' deep sizes
_module_ns = types.ModuleType.__dict__["__dict__"].__get__  # C-level, no module hooks run


def _json_array(fragments: list[str]) -> RawJSON:
    """Join pre-encoded rows into one JSON array (one chunk: a bounded join)."""
    return RawJSON("[" + ",".join(fragments) + "]")


def _listing_wire(answer: Answer, chunk: int) -> list[Any]:
    """A TaskListing's wire form carrying the listing's first chunk of rows."""
    first = answer.listing.chunk(0, chunk)
    listing = TaskListing(
        epoch=answer.epoch,
        version=answer.version,
        base=answer.base,
        time=answer.time,
        sites_from=answer.sites_from,
        sites=tuple(TaskSite(*site) for site in answer.sites),
        removed=tuple(answer.removed),
        current=tuple(answer.current),
        total=answer.total,
        truncated=answer.truncated,
        count=len(answer.listing.rows),
        listing=answer.listing.id,
        rows=(),
    )
    wire = Spliced(to_wire(listing))
    wire[_LISTING_ROWS] = _json_array(first)
    return wire


class AgentCore:
    """Everything the agent knows and can do; thread-safe; never touches rpyc."""

    def __init__(
        self,
        name: str,
        *,
        history_capacity: int = 600,
        history_interval: float = 1.0,
        history_idle_interval: float = 10.0,
        audit_file: str | None = None,
        stall_threshold: float = DEFAULT_THRESHOLD,
        task_factory: bool = True,
    ) -> None:
        self.name = name
        self.process = psutil.Process()
        self.started = guarded(self.process.create_time, time.time())
        self.cpu = CpuMeter(self.process)
        self.connections = Throttled(lambda: connection_count(self.process))
        self.tasks = TaskRegistry()
        if not task_factory:  # the operator opted out: no loop of the host gets a factory
            self.tasks.births.closed = True
        self.children = ChildTracker(self.process)
        self.exposed = ExposedRegistry()
        self._agent_idents: set[int] = set()
        self._idents_lock = threading.Lock()
        # raises ConfigError for an unsafe file: the operator asked for a trail
        sink = AuditFile(audit_file, on_thread=self.add_agent_thread) if audit_file else None
        self.audit = AuditLog(sink=sink)
        self.thread_ids = THREAD_IDS
        self.lag = LagProbe()
        self.history = HistoryBuffer(history_capacity, history_interval)
        self.census_taker = CensusTaker()
        self.tracer = Tracer()
        self.metrics: Any = None  # the metrics endpoint (agent.metrics), set when it is on
        self._observers = 0
        self._sessions = 0
        self._observers_lock = threading.Lock()
        self.sampler = Sampler(
            self.sample,
            self.history,
            interval=history_interval,
            idle_interval=history_idle_interval,
            observers=lambda: self._observers,
            on_thread=self.add_agent_thread,
            between=self.find_loops,
        )
        self.stall_watch = StallWatch(
            self._stall_loops,
            threshold=stall_threshold,
            agent_idents=self.agent_idents,
            on_thread=self.add_agent_thread,
        )
        self.profiler = Profiler(
            self.tasks.loops, agent_idents=self.agent_idents, on_thread=self.add_agent_thread
        )
        self.task_cpu = TaskCpuMeter(
            lambda task: self.tasks.task_id(task)[0],
            self.tasks.find_task,
            self.tasks.all_tasks,
            self._unhooked_loops,
            on_thread=self.add_agent_thread,
        )
        register_meter(self.task_cpu)  # a forked child turns it off (agent.forking)

    # ------------------------------------------------------------ bookkeeping

    def add_agent_thread(self, ident: int) -> None:
        with self._idents_lock:
            self._agent_idents.add(ident)
        note_agent_thread(ident)

    def remove_agent_thread(self, ident: int) -> None:
        with self._idents_lock:
            self._agent_idents.discard(ident)

    def agent_idents(self) -> set[int]:
        with self._idents_lock:
            return set(self._agent_idents)

    def observer_connected(self) -> int:
        """Count a new connection; returns its session number (what owns what it starts)."""
        with self._observers_lock:
            self._observers += 1
            self._sessions += 1
            session = self._sessions
        self.sampler.wake()
        return session

    def observer_disconnected(self, session: int = 0, who: Any = None) -> None:
        """A connection ended: undo what it started for itself alone (tracemalloc without
        ``keep``), audited; never raises."""
        with self._observers_lock:
            self._observers = max(0, self._observers - 1)
        if session:
            peer, role = getattr(who, "peer", "?"), getattr(who, "role", "?")
            for what, stop in (
                ("tracemalloc", self.tracer.stop_started_by),
                ("task cpu", self.task_cpu.stop_started_by),
            ):
                self._stop_owned(what, stop, session, peer, role, "session ended")

    def _stop_owned(
        self, what: str, stop: Callable[[Any], Any], owner: Any, peer: str, role: str, why: str
    ) -> None:
        """Stop ``what`` if ``owner`` (a session, or None: the agent) started it, auditing
        that it did. Never raises: a disconnect or the agent's stop must not fail on it."""
        try:
            stopped = stop(owner)
            if stopped:
                self.audit.record(
                    peer=peer,
                    role=role,
                    action=f"{what} stop",
                    target=what,
                    result="ok",
                    detail=f"{why}: {stopped}",
                )
        except Exception:  # contained: never into rpyc or the host
            log.exception("runtime-observer agent: stopping %s failed", what)

    def close(self) -> None:
        """The agent stops: stop tracemalloc if the agent started it (not if the host did),
        audit that, and flush the audit file. Never raises."""
        self.tasks.births.close()  # the task factories out of the host's loops
        for what, stop in (
            ("task cpu", self.task_cpu.stop_started_by),
            ("tracemalloc", self.tracer.stop_started_by),
        ):
            self._stop_owned(what, stop, None, "host", "agent", "agent stopped")
        try:
            self.audit.close()
        except Exception:
            log.exception("runtime-observer agent: closing the audit failed")

    # ------------------------------------------------------------ reads

    def hello(self, role: str) -> Hello:
        return Hello(
            self.name,
            self.process.pid,
            socket.gethostname(),
            AGENT_VERSION,
            PROTOCOL_VERSION,
            role,
            platform.python_version(),
            self.started,
        )

    def process_info(
        self, role: str, loops: list[tuple[Any, int | None]] | None = None
    ) -> ProcessInfo:
        if loops is None:
            loops = self.tasks.loops()
        return collect_process(
            self.process,
            self.cpu,
            node=self.name,
            role=role,
            num_tasks=self.tasks.count_tasks(),
            num_loops=len(loops),
            exposed=self.exposed.describe(),
            connections=self.connections,
        )

    def loop_infos(
        self, loops: list[tuple[Any, int | None]], counts: dict[int, int]
    ) -> list[LoopInfo]:
        """LoopInfo records; ``counts`` maps a loop's serial to its number of tasks."""
        names = {t.ident: t.name for t in threading.enumerate()}
        out = []
        for loop, ident in loops:
            try:
                serial = self.tasks.loop_serial(loop)
                out.append(
                    LoopInfo(
                        id=f"loop-{serial}",
                        type=f"{type(loop).__module__}.{type(loop).__qualname__}",
                        thread_ident=ident,
                        thread_name=names.get(ident) if ident is not None else None,
                        running=bool(loop.is_running()),
                        closed=bool(loop.is_closed()),
                        num_tasks=counts.get(serial, 0),
                        lag=self.lag.lag(loop),
                    )
                )
            except Exception:
                continue
        return out

    def threads(self) -> list[ThreadInfo]:
        loops = self.tasks.loops()
        by_thread = {ident: self.tasks.loop_id(lp) for lp, ident in loops if ident is not None}
        return collect_threads(self.process, self.agent_idents(), by_thread)

    def child_list(self) -> list[ChildInfo]:
        return self.children.collect()

    def system(self, role: str) -> dict[str, Any]:
        """The process, its children and its threads in one answer (the System tab's
        refresh: one round trip, the loops looked up once)."""
        loops = self.tasks.loops()
        by_thread = {ident: self.tasks.loop_id(lp) for lp, ident in loops if ident is not None}
        return {
            "process": self.process_info(role, loops),
            "children": tuple(self.children.collect()),
            "threads": tuple(collect_threads(self.process, self.agent_idents(), by_thread)),
        }

    def task_rows(
        self, limit: int, match: str, since: int = 0, epoch: int = 0, chunk: int = CHUNK_ROWS
    ) -> tuple[list[Any], Listing]:
        """A task listing's wire form (TaskListing, first chunk of rows) and the listing its
        other chunks come from: the rows changed since version ``since`` of table ``epoch``,
        or every row (see TaskTable.answer)."""
        table = self.tasks.table
        table.refresh()
        answer = table.answer(since=since, epoch=epoch, limit=limit, match=match)
        return _listing_wire(answer, chunk), answer.listing

    def task_chunk(
        self, listing: Listing, offset: int, chunk: int = CHUNK_ROWS
    ) -> tuple[list[Any], int]:
        """The TaskChunk wire form of a listing's rows from ``offset``, and where the next
        chunk starts."""
        if not 0 <= offset < len(listing.rows):
            raise BadRequest(f"offset {offset} is outside listing {listing.id}")
        rows = listing.chunk(offset, chunk)
        wire = Spliced(to_wire(TaskChunk(listing.id, offset, ())))
        wire[_CHUNK_ROWS] = _json_array(rows)
        return wire, offset + len(rows)

    def snapshot(
        self,
        role: str,
        limit: int,
        match: str,
        since: int = 0,
        epoch: int = 0,
        chunk: int = CHUNK_ROWS,
        hide: Collection[int] = (),
    ) -> tuple[list[Any], Listing]:
        """Process, threads, loops, tasks and children in one go (one round trip).

        Returns the SnapshotUpdate's wire form, its tasks a listing of the rows changed
        since version ``since`` of table ``epoch`` (or all of them), and the listing its
        further row chunks come from. ``hide``: threads left out (a fan-out's own, when
        the snapshot is made while they ask the workers: agent.service's tree).
        """
        started = time.perf_counter()
        table = self.tasks.table
        table.refresh()
        pause_point()  # each part below holds the GIL a millisecond or two at 10k tasks
        answer = table.answer(since=since, epoch=epoch, limit=limit, match=match)
        pause_point()
        loops = self.tasks.loops(serials=answer.loop_counts)
        by_thread = {ident: self.tasks.loop_id(lp) for lp, ident in loops if ident is not None}
        threads = collect_threads(self.process, self.agent_idents(), by_thread, hide=hide)
        pause_point()
        process = self.process_info(role, loops)
        pause_point()
        children = self.children.collect()
        pause_point()
        update = SnapshotUpdate(
            process=process,
            threads=tuple(threads),
            loops=tuple(self.loop_infos(loops, answer.loop_counts)),
            children=tuple(children),
            collect_seconds=0.0,
            tasks=TaskListing(0, 0, 0, 0.0, 0, (), (), (), 0, False, 0, 0, ()),
        )
        wire = Spliced(to_wire(update))
        wire[_UPDATE_TASKS] = _listing_wire(answer, chunk)
        wire[_UPDATE_SECONDS] = time.perf_counter() - started
        return wire, answer.listing

    # ------------------------------------------------------------ stacks and locals

    def _frames_of(self, target: str) -> tuple[str, str, str, list[Any], tuple[str, ...], str]:
        """(kind, name, state, frames outermost first, awaiting ids, note) of a target."""
        if target.startswith("task-"):
            task = self.tasks.find_task(target)
            if task is None:
                raise NotFound(f"no task {target} (it may have finished and been collected)")
            try:
                coro = task.get_coro()
            except Exception:
                coro = None
            frames = [frame for _c, frame in coroutine_chain(coro)]
            now = time.monotonic()
            awaiting = tuple(self.tasks.task_id(t, now)[0] for t in awaited_tasks(task))
            state = task_state(task)
            note = "await chain, outermost coroutine first"
            if not frames:
                note = f"task is {state}: it has no coroutine frames left"
            return "task", task.get_name(), state, frames, awaiting, note
        if target.startswith("thread-"):
            thread = self.thread_ids.find(target)
            frame = sys._current_frames().get(thread.ident)  # type: ignore[arg-type]
            if frame is None:
                raise NotFound(f"no thread {target} (it has ended)")
            return "thread", thread.name, "alive", thread_frames(frame), (), "outermost first"
        raise BadRequest(f"{target!r} is neither a task-N nor a thread-N id")

    def stack(self, target: str, with_locals: bool = False) -> dict[str, Any]:
        """The stack and, if asked, every frame's locals, read from the same frames.

        One call, so the locals can never belong to a stack that moved on between
        two requests (and a 200-frame thread costs one round trip, not 201).
        """
        kind, name, state, frames, awaiting, note = self._frames_of(target)
        infos = frame_infos(frames)
        stack = StackInfo(target, kind, str(name), state, infos, awaiting, note)
        local_infos = []
        if with_locals:
            for info, frame in zip(infos, frames, strict=True):
                variables, truncated = frame_variables(frame)
                local_infos.append(LocalsInfo(target, info, variables, truncated))
        return {"stack": stack, "locals": local_infos}

    def locals(self, target: str, frame_index: int, path: tuple[str, ...] = ()) -> LocalsInfo:
        """Safe locals of one frame; ``path`` walks into expandable values (labels)."""
        _kind, _name, _state, frames, _aw, _note = self._frames_of(target)
        if frame_index < 0:
            frame_index += len(frames)
        if not 0 <= frame_index < len(frames):
            raise NotFound(f"{target} has no frame {frame_index} (it has {len(frames)})")
        frame = frames[frame_index]
        info = dataclasses.replace(frame_infos([frame])[0], index=frame_index)
        if not path:
            variables, truncated = frame_variables(frame)
            return LocalsInfo(target, info, variables, truncated)
        if len(path) > MAX_PATH:
            raise BadRequest("path too deep")
        value = self._walk(frame, path)
        children = safe_children(value)
        variables = tuple(describe_variable(label, child) for label, child in children)
        return LocalsInfo(target, info, variables, False)

    @staticmethod
    def _walk(frame: Any, path: tuple[str, ...]) -> Any:
        try:
            local_vars = dict(frame.f_locals)
        except Exception as exc:
            raise NotFound("frame locals are not readable") from exc
        if path[0] not in local_vars:
            raise NotFound(f"no local named {path[0]!r}")
        value = local_vars[path[0]]
        if is_sensitive(path[0]):
            raise NotFound(f"{path[0]!r} is redacted")
        for label in path[1:]:
            for child_label, child in safe_children(value):
                if child_label == label:
                    value = child
                    break
            else:
                raise NotFound(f"no element {label!r} under {'/'.join(path)}")
        return value

    def variables_of_exposed(self, name: str) -> tuple[Variable, ...]:
        try:
            obj = self.exposed.get(name)
        except KeyError as exc:
            raise NotFound(f"nothing exposed as {name!r}") from exc
        return tuple(describe_variable(label, child) for label, child in safe_children(obj))

    # ------------------------------------------------------------ memory

    def memory(self) -> MemoryInfo:
        """OS and interpreter memory figures, tracemalloc status, exposed objects' deep sizes."""
        started = time.perf_counter()
        mem = os_memory(self.process)
        gcs = gc_state()
        items = self.exposed.items()
        budget = EXPOSED_SIZE_BUDGET / max(1, len(items))  # polled: bounded for all together
        exposed = []
        for name, obj in items:
            try:
                size, count, complete = deep_size(obj, budget=budget)
            except Exception:  # contained: one odd object must not hide the others
                log.exception("runtime-observer agent: deep size of %r failed", name)
                size, count, complete = 0, 0, False
            exposed.append(ExposedSize(name, safe_type_name(obj), size, count, complete))
        del items
        census = self.census_taker
        return MemoryInfo(
            time=time.time(),
            rss=mem.rss,
            vms=mem.vms,
            uss=mem.uss,
            pss=mem.pss,
            swap=mem.swap,
            note=mem.note,
            gc_enabled=gcs.enabled,
            gc_counts=gcs.counts,
            gc_thresholds=gcs.thresholds,
            gc_collections=gcs.collections,
            gc_collected=gcs.collected,
            gc_uncollectable=gcs.uncollectable,
            gc_garbage=gcs.garbage,
            tracked=census.last_objects,
            tracked_time=census.last_time,
            allocated_blocks=gcs.allocated_blocks,
            tracemalloc=self.tracer.status(),
            exposed=tuple(exposed),
            census_baseline=census.baseline_time,
            seconds=time.perf_counter() - started,
        )

    def census(self, top: int, baseline: bool, growth: bool, by: str) -> Census:
        return self.census_taker.take(top, baseline=baseline, growth=growth, by=by)

    def trace_stats(self, limit: int, group: str, diff: bool) -> TraceStats:
        return self.tracer.stats(limit, group, diff)

    def source(self, path: str, line: int, context: int, role: str = "viewer") -> SourceText:
        """Redacted lines around ``path:line`` of a file the host runs (a loaded module) or
        an allocation report named: never an arbitrary file of the host's machine.

        An operator may read any such file (they can already stop its threads and tasks,
        and the Memory tab walks whole allocation tracebacks); a viewer only the lines
        within SOURCE_WINDOW of a line the agent reported lately in a stack, a task or
        thread location or an allocation site, so a read-only token cannot page through
        every loaded module.
        """
        if not self._may_show(path):
            raise NotFound(f"{path!r} is not a loaded module or a reported allocation site")
        context = max(0, min(context, MAX_SOURCE_CONTEXT))
        first, last = max(1, line - context), line + context
        if ROLES.get(role, 0) < ROLES["operator"]:
            near = nearest_reported(path, line, SOURCE_WINDOW)
            if near is None:
                raise NotFound(
                    f"{path}:{line} is not near a line the agent reported: a viewer may read "
                    f"source only within {SOURCE_WINDOW} lines of a frame it was shown"
                )
            first, last = max(first, near - SOURCE_WINDOW), min(last, near + SOURCE_WINDOW)
        lines = source_lines(path, first, last)
        if not lines:
            raise NotFound(f"no source available for {path}:{line}")
        return SourceText(path, line, first, tuple(lines))

    def _may_show(self, path: str) -> bool:
        if not path.endswith(".py"):
            return False
        if path in self.tracer.site_files:
            return True
        for module in list(sys.modules.values()):
            try:
                is_module = issubclass(type(module), types.ModuleType)
                if is_module and _module_ns(module).get("__file__") == path:
                    return True
            except Exception:
                continue
        return False

    # ------------------------------------------------------------ history

    def sample(self) -> HistorySample:
        """One load sample; also posts lag probes to every running loop, and lets the task
        table drop the futures it holds once no snapshot asked for a while."""
        self.tasks.table.expire()
        loops = self.find_loops()
        agents = self.agent_idents()
        counted = thread_counts(agents)
        if counted is not None:
            threads, agent_threads = counted
        else:
            alive = {t.ident for t in threading.enumerate()}
            agent_threads = len(agents & alive)
            threads = guarded(self.process.num_threads, threading.active_count())
        self.lag.probe(loops)
        mem = guarded(self.process.memory_info, None)
        return HistorySample(
            time=time.time(),
            cpu_percent=self.cpu.percent(),
            rss=mem.rss if mem else 0,
            threads=max(0, threads - agent_threads),
            tasks=self.tasks.count_tasks(),
            loop_lag=self.lag.worst(loops),
            gc_collections=sum(gc_collections()),
            traced=self.tracer.traced(),
            agent_threads=agent_threads,
        )

    def _unhooked_loops(self) -> bool:
        """Whether some loop makes tasks without the agent's task factory (CPU per task
        then looks for their coroutines every few seconds)."""
        births = self.tasks.births
        return births.closed or any(not births.hooked(lp) for lp, _ in self.tasks.loops())

    def _stall_loops(self) -> list[tuple[Any, int | None, str]]:
        """The loops the stall watchdog watches: every loop the agent knows, with its id."""
        return [(loop, ident, self.tasks.loop_id(loop)) for loop, ident in self.tasks.loops()]

    def stalls(self, since: float) -> StallList:
        """Stall events that ended after ``since`` (wall clock), from the watchdog's ring."""
        return self.stall_watch.stalls(since)

    def find_loops(self) -> list[Any]:
        """The loops running now, each with the agent's task factory chained in front of
        its own (see collect.births); every second, also while nobody looks, so tasks a
        new loop makes get their creation time from its first second on."""
        loops = [lp for lp, _ in self.tasks.loops()]
        if self.tasks.births.take_fresh():
            # a loop was just hooked: meet its older tasks now, so their "at least" ages
            # start from about the hook (a pass of its own: observers do not share it)
            self.tasks.table.refresh(max_age=0.0, share=False)
        return loops

    def history_since(self, since: float) -> History:
        return self.history.snapshot(since)

    def overview(self, role: str, since: float) -> Overview:
        """The cluster-view row: identity, load now and the samples newer than ``since``.

        "Now" is the newest history sample when it is fresh, so a fleet of observers
        polling every second adds no probing of its own; otherwise one sample is taken.
        """
        samples = self.history.snapshot(since).samples[-OVERVIEW_SAMPLES:]
        newest = self.history.newest()
        fresh_for = max(2.0 * self.history.interval, 2.0)
        now = newest if newest and time.time() - newest.time <= fresh_for else self.sample()
        return Overview(
            self.hello(role),
            max(0.0, time.time() - self.started),
            now,
            self.history.interval,
            samples,
        )

    def metrics_text(self, openmetrics: bool) -> tuple[str, str]:
        """The metrics endpoint's URL and its current exposition (as a scrape sees it)."""
        endpoint = self.metrics
        if endpoint is None:
            raise NotFound(
                "the metrics endpoint is off: start the agent with metrics=HOST:PORT "
                "(--metrics, OBSERVER_AGENT_METRICS)"
            )
        rendered = endpoint.render(openmetrics, scrape=False)
        return endpoint.url, rendered.body.decode("utf-8", "replace")

    def audit_records(self, limit: int) -> tuple[AuditRecord, ...]:
        return self.audit.records(limit)

    # ------------------------------------------------------------ control

    def cancel(self, task_id: str, message: str) -> str:
        return control.cancel_task(self.tasks, task_id, message)

    def raise_in(self, thread_id: str, exc_name: str) -> str:
        thread = self.thread_ids.find(thread_id)
        return control.raise_in_thread(thread, thread_id, exc_name, self.agent_idents())

    def signal(self, pid: int, signame: str) -> str:
        return control.signal_child(self.children, pid, signame)

    def tracemalloc_start(self, frames: int, by: str, session: int = 0, keep: bool = False) -> str:
        return self.tracer.start(frames, by, session=session, keep=keep)

    def tracemalloc_stop(self) -> str:
        return self.tracer.stop()
