"""The rpyc service: ``exposed_*`` methods that take builtins and return encoded bytes.

Every method checks its arguments' exact types (a netref never reaches host code),
checks the connection's role, runs the core operation with every error contained,
audits control actions, and returns one immutable ``bytes`` envelope: one round trip.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import rpyc

from agent import fanout
from agent.codec import decode_envelope, encode_error, encode_ok
from agent.collect.pacing import pause_point
from agent.collect.tasktable import CHUNK_ROWS, Listing
from agent.core import DEFAULT_TASK_LIMIT, MAX_TASK_LIMIT, AgentCore
from agent.errors import AgentError, BadRequest, NotFound, PermissionDenied
from agent.relay import CONTROL as RELAY_CONTROL
from agent.relay import RELAYED, Relay, RelayKeys, check_args
from agent.schema import ControlResult, WorkerSet
from agent.security import ROLES, Credentials

log = logging.getLogger("agent")

MAX_ID = 200
CHAOS_EVENTS = ("start", "end")


def _check(value: Any, kind: type, name: str) -> Any:
    """Accept only exact builtin types: never a netref or a subclass."""
    if type(value) is not kind:
        raise BadRequest(f"{name} must be {kind.__name__}")
    if kind is str and len(value) > 10_000:
        raise BadRequest(f"{name} too long")
    return value


def _check_id(value: Any, name: str = "id") -> str:
    value = _check(value, str, name)
    if not value or len(value) > MAX_ID:
        raise BadRequest(f"bad {name}")
    return value


def _limit(value: Any) -> int:
    """A task-count limit, clamped to what the agent will ever send."""
    return min(max(_check(value, int, "limit"), 0), MAX_TASK_LIMIT)


def _chunk(value: Any) -> int:
    """Rows per reply chunk the observer asks for, clamped to what the agent allows."""
    return min(max(_check(value, int, "chunk"), 1), CHUNK_ROWS)


def _since(since: Any, epoch: Any) -> tuple[int, int]:
    """The table version (and table) the observer holds; (0, 0) when it holds none."""
    return max(_check(since, int, "since"), 0), _check(epoch, int, "epoch")


def _listing_args(own: Any) -> tuple[int, str, int, int, int]:
    """A task listing's arguments (limit, match, since, epoch, chunk) sent in one tuple
    (exposed_tree's ``own``), each checked as exposed_snapshot checks it."""
    if type(own) is not tuple or len(own) > 5:
        raise BadRequest("own must be a tuple of at most 5 listing arguments")
    defaults = (DEFAULT_TASK_LIMIT, "", 0, 0, CHUNK_ROWS)
    limit, match, since, epoch, chunk = (*own, *defaults[len(own) :])
    return (_limit(limit), _check(match, str, "match"), *_since(since, epoch), _chunk(chunk))


def _number(value: Any, name: str) -> float:
    """A finite int or float from the peer (the profiler clamps its range)."""
    if type(value) not in (int, float):
        raise BadRequest(f"{name} must be a number")
    return float(value)


def _label(value: Any, width: int = MAX_ID) -> str:
    """How an argument is named in the audit log, even when it is malformed."""
    return value[:width] if type(value) is str else "?"


class AgentService(rpyc.Service):
    """One instance per connection; the core is shared."""

    core: AgentCore  # set by make_service
    relay_keys: RelayKeys | None = None  # set by make_service
    exits: Any = None  # agent.exits.ExitWatch of a master, set by make_service

    def __init__(self) -> None:
        super().__init__()
        self._creds = Credentials("viewer", "?")
        self._session = 0
        self._listing: Listing | None = None  # the task listing whose chunks are pending
        self._relay: Relay | None = None  # this session's links to workers (agent.relay)

    def on_connect(self, conn: rpyc.Connection) -> None:
        creds = conn._config.get("credentials")
        if isinstance(creds, Credentials):
            self._creds = creds
        self._session = self.core.observer_connected()

    def on_disconnect(self, conn: rpyc.Connection) -> None:
        self.core.observer_disconnected(self._session, self._creds)
        if self._relay is not None:
            self._relay.close()

    # ------------------------------------------------------------ plumbing

    def _run(self, fn: Callable[[], Any]) -> bytes:
        """Run a read (every authenticated role may read) with all errors contained."""
        try:
            value = fn()
            pause_point()  # the reply's encoding does not go on from a spent slice
            return encode_ok(value)
        except AgentError as exc:
            return encode_error(exc.kind, exc.message)
        except Exception as exc:  # contained: never into the host, never a traceback out
            log.exception("runtime-observer agent: request failed")
            return encode_error("internal", f"agent error: {type(exc).__name__}")

    def _control(
        self, action: str, target: str, fn: Callable[[], str], run: Any = "", kind: str = ""
    ) -> bytes:
        """Run a control action with role check and audit (denials are audited too).

        ``run`` names the chaos run the action belongs to; it is written to the audit.
        ``kind`` names the action without the peer's words (what denials are folded by).
        """
        return self._operator(
            action,
            target,
            lambda: ControlResult(target, action, True, fn()),
            run,
            kind,
            lambda result: result.message,
        )

    def _operator(
        self,
        action: str,
        target: str,
        fn: Callable[[], Any],
        run: Any = "",
        kind: str = "",
        describe: Callable[[Any], str] = lambda _value: "",
    ) -> bytes:
        """Run ``fn`` for an operator only, audit it (denials too) and reply with its value.

        The role is checked before any argument, so a viewer's attempt is always a denial
        (kept apart from control actions in the audit, see agent.audit).
        """
        creds = self._creds
        run_id = _label(run, 64)
        try:
            if ROLES.get(creds.role, 0) < ROLES["operator"]:
                raise PermissionDenied(
                    f"permission denied: {action} needs the operator role, "
                    f"this connection has {creds.role}"
                )
            if type(run) is not str:
                raise BadRequest("run must be str")
            value = fn()
            outcome, detail, reply = "ok", describe(value), encode_ok(value)
        except AgentError as exc:
            outcome = "denied" if isinstance(exc, PermissionDenied) else exc.kind
            detail, reply = exc.message, encode_error(exc.kind, exc.message)
        except Exception as exc:
            log.exception("runtime-observer agent: %s failed", action)
            outcome, detail = "error", type(exc).__name__
            reply = encode_error("internal", f"agent error: {detail}")
        self.core.audit.record(
            peer=creds.peer,
            role=creds.role,
            action=action,
            target=target,
            result=outcome,
            detail=detail,
            run="" if run_id == "?" else run_id,
            kind=kind or action,
        )
        return reply

    # ------------------------------------------------------------ reads

    def exposed_hello(self) -> bytes:
        return self._run(lambda: self.core.hello(self._creds.role))

    def exposed_process(self) -> bytes:
        return self._run(lambda: self.core.process_info(self._creds.role))

    def exposed_threads(self) -> bytes:
        return self._run(lambda: tuple(self.core.threads()))

    def exposed_system(self) -> bytes:
        """process, children, threads and how the recent workers ended, together:
        {"process", "children", "threads", "exits"} (the System tab's one round trip)."""

        def collect() -> dict[str, Any]:
            found = self.core.system(self._creds.role)
            watch = self.exits
            found["exits"] = watch.recent(fresh=True) if watch is not None else ()
            return found

        return self._run(collect)

    def _listed(self, made: tuple[list[Any], Listing], chunk: int) -> list[Any]:
        """Keep a listing whose rows do not fit its first reply for task_chunk (one per
        connection: a newer listing replaces it) and hand back the reply's wire form."""
        wire, listing = made
        self._listing = listing if len(listing.rows) > len(listing.chunk(0, chunk)) else None
        return wire

    def _listing_reply(
        self,
        collect: Callable[..., Any],
        limit: Any,
        match: Any,
        since: Any,
        epoch: Any,
        chunk: Any,
    ) -> bytes:
        """Check a task listing's arguments (from the peer), run ``collect(limit, match,
        held, table, rows)`` and keep what does not fit the first reply (see _listed)."""

        def run() -> Any:
            _check(match, str, "match")
            held, table = _since(since, epoch)
            rows = _chunk(chunk)
            return self._listed(collect(_limit(limit), match, held, table, rows), rows)

        return self._run(run)

    def exposed_tasks(
        self,
        limit: int = DEFAULT_TASK_LIMIT,
        match: str = "",
        since: int = 0,
        epoch: int = 0,
        chunk: int = CHUNK_ROWS,
    ) -> bytes:
        """Tasks as a TaskListing: what changed since version ``since`` of table ``epoch``,
        or all (filtered by ``match``, pending first up to ``limit``)."""
        return self._listing_reply(self.core.task_rows, limit, match, since, epoch, chunk)

    def exposed_snapshot(
        self,
        limit: int = DEFAULT_TASK_LIMIT,
        match: str = "",
        since: int = 0,
        epoch: int = 0,
        chunk: int = CHUNK_ROWS,
    ) -> bytes:
        """Process, threads, loops, children, and the tasks as exposed_tasks lists them."""
        snapshot = functools.partial(self.core.snapshot, self._creds.role)
        return self._listing_reply(snapshot, limit, match, since, epoch, chunk)

    def exposed_task_chunk(self, listing: int, offset: int, chunk: int = CHUNK_ROWS) -> bytes:
        """The rows of this connection's latest listing from ``offset`` (a TaskChunk); the
        listing is let go once its last row is sent."""

        def run() -> Any:
            _check(listing, int, "listing")
            _check(offset, int, "offset")
            rows = _chunk(chunk)
            kept = self._listing
            if kept is None or kept.id != listing:
                raise NotFound(f"listing {listing} is gone (a newer one replaced it): ask again")
            wire, end = self.core.task_chunk(kept, offset, rows)
            if end >= len(kept.rows):
                self._listing = None
            return wire

        return self._run(run)

    def exposed_children(self) -> bytes:
        return self._run(lambda: tuple(self.core.child_list()))

    def exposed_stack(self, target: str, with_locals: bool = False) -> bytes:
        return self._run(
            lambda: self.core.stack(
                _check_id(target, "target"), _check(with_locals, bool, "with_locals")
            )
        )

    def exposed_locals(self, target: str, frame: int, path: tuple = ()) -> bytes:
        def run() -> Any:
            _check_id(target, "target")
            _check(frame, int, "frame")
            _check(path, tuple, "path")
            labels = tuple(_check(p, str, "path element") for p in path)
            return self.core.locals(target, frame, labels)

        return self._run(run)

    def exposed_exposed(self, name: str) -> bytes:
        return self._run(lambda: self.core.variables_of_exposed(_check(name, str, "name")))

    def exposed_history(self, since: float = 0.0) -> bytes:
        def run() -> Any:
            value = float(since) if type(since) in (int, float) else None
            if value is None:
                raise BadRequest("since must be a number")
            return self.core.history_since(value)

        return self._run(run)

    def exposed_overview(self, since: float = 0.0) -> bytes:
        """The cluster-view row: identity, load now, samples newer than ``since``."""

        def run() -> Any:
            if type(since) not in (int, float):
                raise BadRequest("since must be a number")
            return self.core.overview(self._creds.role, float(since))

        return self._run(run)

    def exposed_metrics(self, openmetrics: bool = False) -> bytes:
        """The metrics endpoint's URL and current exposition (read-only, any role)."""
        return self._run(lambda: self.core.metrics_text(_check(openmetrics, bool, "openmetrics")))

    def exposed_metric_families(self, keep_max: bool = False) -> bytes:
        """This process's own python/asyncio/stall families, compact (read-only, any role):
        what a master's scrape asks of its workers (agent.metrics.own)."""
        from agent.metrics.own import own_series

        return self._run(lambda: own_series(self.core).compact(_check(keep_max, bool, "keep_max")))

    def exposed_stalls(self, since: float = 0.0) -> bytes:
        """Stall events that ended after ``since`` (agent wall clock); every role may read
        them: stacks and lines redacted like every other stack the agent serves."""

        def run() -> Any:
            if type(since) not in (int, float):
                raise BadRequest("since must be a number")
            return self.core.stalls(float(since))

        return self._run(run)

    # ------------------------------------------------------------ profiler

    def exposed_profile_start(self, seconds: float = 10.0, rate: float = 100.0) -> bytes:
        """Start a sampling profile (agent.collect.profiler); every role may, audited."""
        return self._audited(
            "profile start",
            lambda: self.core.profiler.start(
                _number(seconds, "seconds"),
                _number(rate, "rate"),
                self._creds.label,
                self._session,
            ),
            lambda p: f"{p.seconds:g} s at {p.rate:g} Hz",
        )

    def exposed_profile_read(self) -> bytes:
        """The running or latest profile as it stands (partial while it runs)."""
        return self._run(self.core.profiler.read)

    def exposed_profile_stop(self) -> bytes:
        """Stop the running profile early: its own session or an operator; audited."""
        operator = ROLES.get(self._creds.role, 0) >= ROLES["operator"]
        return self._audited(
            "profile stop",
            lambda: self.core.profiler.stop(self._session, operator),
            lambda p: f"{p.ticks} ticks over {p.elapsed:.1f} s",
        )

    def _audited(self, action: str, fn: Callable[[], Any], describe: Callable[[Any], str]) -> bytes:
        """Run a read that costs the host something, for any role, and audit it."""
        creds = self._creds
        try:
            value = fn()
            outcome, detail, reply = "ok", describe(value), encode_ok(value)
        except AgentError as exc:
            outcome, detail, reply = exc.kind, exc.message, encode_error(exc.kind, exc.message)
        except Exception as exc:
            log.exception("runtime-observer agent: %s failed", action)
            outcome, detail = "error", type(exc).__name__
            reply = encode_error("internal", f"agent error: {detail}")
        self.core.audit.record(
            peer=creds.peer,
            role=creds.role,
            action=action,
            target="profiler",
            result=outcome,
            detail=detail,
            run="",
            kind=action,
        )
        return reply

    # ------------------------------------------------------------ CPU per task

    def exposed_task_cpu(self, window: float = 10.0, top: int = 20, limit: int = 20_000) -> bytes:
        """CPU per task over the last ``window`` seconds (agent.collect.taskcpu), the
        busiest first; any role may read it."""
        return self._run(
            lambda: self.core.task_cpu.window(
                _number(window, "window"), _check(top, int, "top"), _check(limit, int, "limit")
            )
        )

    def exposed_task_cpu_start(self, keep: bool = False) -> bytes:
        """Turn CPU per task on (operator, audited): it instruments the host's coroutine
        code and adds two CPU clock reads to every task step, so it changes how the host
        runs, as tracemalloc does. It stops when this session ends unless ``keep``."""
        return self._control(
            "task cpu start" + (" keep" if keep is True else ""),
            "task cpu",
            lambda: self.core.task_cpu.start(
                self._creds.label, session=self._session, keep=_check(keep, bool, "keep")
            ),
            kind="task cpu start",
        )

    def exposed_task_cpu_stop(self) -> bytes:
        """Turn CPU per task off: every hook out of the host (operator, audited)."""
        return self._control("task cpu stop", "task cpu", self.core.task_cpu.stop)

    def exposed_audit(self, limit: int = 1000) -> bytes:
        return self._run(lambda: self.core.audit_records(_check(limit, int, "limit")))

    # ------------------------------------------------------------ memory

    def exposed_memory(self) -> bytes:
        return self._run(self.core.memory)

    def exposed_census(self, top: int = 50, baseline: bool = False, growth: bool = False) -> bytes:
        """Objects by type; ``baseline`` remembers this census, ``growth`` compares with it.

        The baseline is the node's one shared reference (every observer's growth compares
        with it), so taking one is an operator action, audited like the others: a viewer
        cannot reset what the operator is measuring against.
        """

        def take() -> Any:
            return self.core.census(
                _check(top, int, "top"),
                _check(baseline, bool, "baseline"),
                _check(growth, bool, "growth"),
                self._creds.label,
            )

        if baseline is True:
            return self._operator(
                "census baseline",
                "census",
                take,
                describe=lambda c: f"baseline of {c.objects:,} objects",
            )
        return self._run(take)

    def exposed_trace_stats(self, limit: int = 20, group: str = "lineno", diff: bool = False):
        return self._run(
            lambda: self.core.trace_stats(
                _check(limit, int, "limit"), _check(group, str, "group"), _check(diff, bool, "diff")
            )
        )

    def exposed_trace_baseline(self) -> bytes:
        """Make traced memory as of now the shared diff baseline (operator, audited)."""
        return self._operator(
            "tracemalloc baseline",
            "tracemalloc",
            self.core.tracer.set_baseline,
            describe=lambda _stamp: "baseline recorded",
        )

    def exposed_source(self, path: str, line: int, context: int = 10) -> bytes:
        return self._run(
            lambda: self.core.source(
                _check(path, str, "path"),
                _check(line, int, "line"),
                _check(context, int, "context"),
                self._creds.role,
            )
        )

    # ------------------------------------------------------------ control

    def exposed_cancel(self, task_id: str, message: str = "", run: str = "") -> bytes:
        return self._control(
            "cancel",
            _label(task_id),
            lambda: self.core.cancel(_check_id(task_id, "task id"), _check(message, str, "msg")),
            run,
            "cancel",
        )

    def exposed_raise_in(
        self, thread_id: str, exception: str = "SystemExit", run: str = ""
    ) -> bytes:
        return self._control(
            f"raise {_label(exception, 60)}",
            _label(thread_id),
            lambda: self.core.raise_in(
                _check_id(thread_id, "thread id"), _check(exception, str, "exception")
            ),
            run,
            "raise",
        )

    def exposed_signal(self, pid: int, signal: str = "TERM", run: str = "") -> bytes:
        return self._control(
            f"signal {_label(signal, 20)}",
            f"pid-{pid}" if type(pid) is int else "?",
            lambda: self.core.signal(_check(pid, int, "pid"), _check(signal, str, "signal")),
            run,
            "signal",
        )

    def exposed_chaos(self, run: str, event: str, detail: str = "") -> bytes:
        """Mark a chaos run's start or end in the audit (operator only, like its actions):
        a viewer's attempt is refused here, before anything is touched, and audited."""

        def mark() -> str:
            if event not in CHAOS_EVENTS:
                raise BadRequest(f"event must be one of {', '.join(CHAOS_EVENTS)}")
            return f"chaos run {_check_id(run, 'run')} {event}: {_check(detail, str, 'detail')}"

        return self._control(f"chaos {_label(event, 10)}", _label(run, 64), mark, run, "chaos")

    def exposed_tracemalloc_start(self, frames: int = 10, keep: bool = False) -> bytes:
        """Start tracemalloc; it stops when this session ends unless ``keep`` (and always
        when the agent stops)."""
        return self._control(
            f"tracemalloc start {frames if type(frames) is int else '?'} frames"
            + (" keep" if keep is True else ""),
            "tracemalloc",
            lambda: self.core.tracemalloc_start(
                _check(frames, int, "frames"),
                self._creds.label,
                session=self._session,
                keep=_check(keep, bool, "keep"),
            ),
            kind="tracemalloc start",
        )

    def exposed_tracemalloc_stop(self) -> bytes:
        return self._control("tracemalloc stop", "tracemalloc", self.core.tracemalloc_stop)

    # ------------------------------------------------------------ workers

    def exposed_worker(self, pid: int, method: str, args: tuple = ()) -> bytes:
        """``method(*args)`` on the agent of worker ``pid`` (agent.relay), with this
        session's role; the worker's reply as it sent it. Actions are audited here too,
        naming the worker and who asked."""
        keys = self.relay_keys
        if keys is None or type(pid) is not int or type(method) is not str:
            return encode_error("bad-request", "this agent relays to no workers")
        reply = self._relayed(pid, method, args)
        self._audit_relayed(pid, method, args, reply)
        return reply

    def exposed_workers(
        self,
        method: str = "",
        args: tuple = (),
        pids: tuple = (),
        each: tuple = (),
        timeout: float = fanout.DEFAULT_TIMEOUT,
    ) -> tuple[bytes, tuple[tuple[int, bytes], ...]]:
        """``method(*args)`` on many workers at once (agent.fanout): those in ``pids``, or
        every worker when empty (MAX_WORKERS at most), ``each`` giving some their own
        args, each worker within ``timeout`` s. Returns (header, ((pid, reply), ...)): the
        header an envelope of the WorkerSet (the workers now, only when no pids were
        named; recent exits), each reply the worker's own envelope, untouched, or its
        error. ``method`` "": the header alone.
        Role, whitelist and audit as for ``worker``."""
        header, replies, _own = self._fan(method, args, pids, each, timeout, None)
        return header, replies

    def exposed_tree(
        self,
        own: tuple = (),
        method: str = "",
        args: tuple = (),
        pids: tuple = (),
        each: tuple = (),
        timeout: float = fanout.DEFAULT_TIMEOUT,
    ) -> tuple[bytes, tuple[tuple[int, bytes], ...], bytes]:
        """exposed_workers and this process's own snapshot (``own``: its arguments, as
        exposed_snapshot takes them) in one call, the snapshot made while the workers
        answer: (header, ((pid, reply), ...), snapshot envelope). The snapshot's size
        counts within the replies' bound (before the workers'); its further chunks come
        from task_chunk as usual. A master's Processes-tree refresh in one round trip."""
        return self._fan(method, args, pids, each, timeout, own)

    def _fan(
        self, method: Any, args: Any, pids: Any, each: Any, timeout: Any, own: Any
    ) -> tuple[bytes, tuple[tuple[int, bytes], ...], bytes]:
        """exposed_workers, with this process's snapshot (``own``: its arguments) made
        meanwhile when ``own`` is not None; every argument checked before anyone is asked."""
        try:
            if self.relay_keys is None:
                raise BadRequest("this agent relays to no workers")
            if type(method) is not str or (method and method not in RELAYED):
                raise BadRequest(f"{_label(method, 40)!r} cannot be relayed to a worker")
            args = check_args(args)
            asked = fanout.check_pids(pids)
            per = fanout.check_each(each)
            seconds = fanout.check_timeout(timeout)
            listing = None if own is None else _listing_args(own)
        except AgentError as exc:
            error = encode_error(exc.kind, exc.message)
            return error, (), error
        if self._relay is None:
            assert self.relay_keys is not None
            self._relay = Relay(self.relay_keys, self._creds.role)
        relay = self._relay
        header: list[bytes] = []
        if not asked:  # every worker: who they are first
            header_bytes, workers = self._worker_set()
            header.append(header_bytes)
            asked = tuple(w.pid for w in workers)[: fanout.MAX_WORKERS]
        if not method:
            asked = ()

        def ask(pid: int, left: float) -> bytes:
            call_args = per.get(pid, args)
            try:
                reply = relay.call(pid, method, call_args, left)
            except AgentError as exc:
                reply = encode_error(exc.kind, exc.message)
            self._audit_relayed(pid, method, call_args, reply)
            return reply

        def meanwhile(threads: frozenset[int]) -> bytes:
            if not header:  # the caller named its workers: their ChildInfo left out
                header.append(self._worker_set(listed=False)[0])
            if listing is None:
                return b""
            # this process as it is between refreshes: without this call's own threads
            own = functools.partial(self.core.snapshot, self._creds.role, hide=threads)
            return self._listing_reply(own, *listing)

        core = self.core
        try:
            mine, replies = fanout.fan_out(
                ask,
                asked,
                seconds,
                meanwhile,
                on_thread=lambda ident, on: (
                    core.add_agent_thread(ident) if on else core.remove_agent_thread(ident)
                ),
                weigh=len,
            )
        except Exception as exc:  # no thread to be had, say: contained, never into the host
            log.exception("runtime-observer agent: fan-out to workers failed")
            error = encode_error("internal", f"agent error: {type(exc).__name__}")
            return error, (), error
        return header[0], replies, mine

    def _worker_set(self, listed: bool = True) -> tuple[bytes, tuple[Any, ...]]:
        """The fan-out's header (the workers now, unless not ``listed``, and how the
        recent ones ended), encoded, and the workers."""
        workers: tuple[Any, ...] = ()

        def collect() -> WorkerSet:
            nonlocal workers
            if listed:
                workers = tuple(c for c in self.core.child_list() if c.agent)
            watch = self.exits
            if watch is None:
                return WorkerSet(workers, (), "this agent does not watch worker exits")
            return WorkerSet(workers, watch.recent(fresh=listed), watch.why_not)

        return self._run(collect), workers

    def _audit_relayed(self, pid: int, method: str, args: Any, reply: bytes) -> None:
        """Audit a relayed control action (the others are reads): the worker, who asked,
        what the worker said."""
        if method not in RELAY_CONTROL:
            return
        creds = self._creds
        try:
            envelope = decode_envelope(reply)
            outcome = "ok" if envelope.ok else envelope.error
            detail = _control_detail(envelope)
        except Exception:
            outcome, detail = "error", "unreadable reply"
        self.core.audit.record(
            peer=creds.peer,
            role=creds.role,
            action=f"{method} in worker {pid}",
            target=_label(args[0]) if type(args) is tuple and args else method,
            result="denied" if outcome == "permission" else outcome,
            detail=detail,
            run=_run_of(method, args),
            kind=method,
        )

    def _relayed(self, pid: int, method: str, args: Any) -> bytes:
        def call() -> bytes:
            if self._relay is None:
                assert self.relay_keys is not None
                self._relay = Relay(self.relay_keys, self._creds.role)
            return self._relay.call(pid, method, args)

        try:
            return call()
        except AgentError as exc:
            return encode_error(exc.kind, exc.message)
        except Exception as exc:
            log.exception("runtime-observer agent: relay to worker %s failed", pid)
            return encode_error("internal", f"agent error: {type(exc).__name__}")


def _run_of(method: str, args: Any) -> str:
    """The chaos run a relayed action names (its third argument), for the audit."""
    if method in ("cancel", "raise_in", "signal") and type(args) is tuple and len(args) > 2:
        run = _label(args[2], 64)
        return "" if run == "?" else run
    return ""


def _control_detail(envelope: Any) -> str:
    """What a worker said about an action, for the master's audit."""
    if not envelope.ok:
        return str(envelope.message)[:200]
    data = envelope.data
    return str(data[-1])[:200] if isinstance(data, list) and data else ""


def make_service(
    core: AgentCore, relay_keys: RelayKeys | None = None, exits: Any = None
) -> type[AgentService]:
    """A service class bound to one core (rpyc instantiates it per connection);
    ``relay_keys``: how it reaches its workers' agents (agent.relay); ``exits``: how
    its workers ended (agent.exits), in a master."""
    attrs = {"core": core, "relay_keys": relay_keys, "exits": exits}
    return type("RuntimeObserverAgent", (AgentService,), attrs)
