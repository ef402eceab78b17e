"""Chaos runs, Qt-free: kill matching targets at random on several nodes, measure recovery.

    >>> from observer.chaos import Chaos
    >>> summary = Chaos(specs, "worker-?", count=3, every=0.5, seed=42).run()
    >>> summary.recovered, summary.text()

A run picks, every ``every`` seconds, one node and one of its targets (asyncio task,
thread or child process) whose name matches a glob, acts on it (cancel, raise, SIGTERM or
SIGKILL) and then watches that node until a replacement with the same name appears, the
way one kills a process in Erlang's observer and watches its supervisor restart it.
Picks come from ``random.Random(seed)`` over candidates in a fixed order, so a seed
repeats a run. Every action carries the run id, which the agent writes into its audit,
and the run is marked ``start`` and ``end`` in every node's audit; a viewer is refused
at that first mark, before anything is touched.

The engine is one thread doing everything in turn (act, poll for replacements, wait), so
``stop()`` ends it at the next wait and the summary is still produced. The CLI prints its
events, the GUI dialog shows them; both read the same ``ChaosEvent.text``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import logging
import math
import random
import re
import secrets
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from observer.client import Node
from observer.errors import ObserverError, PermissionDenied, RemoteError
from observer.link import Link
from observer.nodesfile import NodeSpec
from observer.resolve import expand
from observer.tree import child_label

log = logging.getLogger(__name__)

KINDS = ("task", "thread", "process")
ACTIONS = {"task": ("cancel",), "thread": ("raise",), "process": ("term", "kill")}
DEFAULT_ACTION = {"task": "cancel", "thread": "raise", "process": "term"}
DEFAULT_EVERY = 1.0
DEFAULT_RECOVERY_TIMEOUT = 15.0
# a gunicorn worker's label ends in its age (agent.collect.roles), a multiprocessing
# worker's in its number (ForkPoolWorker-3, SpawnProcess-2, ForkServerProcess-1:2), which
# a replacement does not share: the slot it fills is the label without them
_AGE = re.compile(r" \(age \d+\)$")
_NUMBERED = re.compile(r"^((?:.* )?\w*(?:PoolWorker|Process))-\d+(?::\d+)*$")
POLL = 0.25  # seconds between looks for replacements: the resolution of recovery times
DEAD_STATUSES = ("zombie", "dead")
WILDCARDS = re.compile(r"[*?\[]")


class ChaosError(ObserverError):
    """The run's arguments make no sense, or no node could be reached."""


class ChaosRefused(ObserverError):
    """A node would not let this connection act (a viewer): nothing was touched."""


@dataclass(frozen=True)
class ChaosEvent:
    """Something that happened during a run, for a live log.

    ``kind`` is start, action, skipped, recovered, not-recovered, error or end; ``text``
    is one human line (the same in the CLI and the GUI); ``data`` is the record it is
    about (an action or a recovery; the summary's dict for ``end``).
    """

    kind: str
    text: str
    data: dict[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)


@dataclass
class Summary:
    """What a run did and how the nodes recovered (``to_dict()`` is the CLI's JSON)."""

    run: str
    seed: int
    dry_run: bool
    match: str
    kind: str
    action: str
    every: float
    count: int | None
    duration: float | None
    recovery_timeout: float
    poll: float
    nodes: list[dict[str, Any]] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)
    recoveries: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    started: float = 0.0
    seconds: float = 0.0
    stopped: bool = False

    @property
    def victims(self) -> int:
        """Targets really acted on (the action succeeded)."""
        return sum(a["result"] == "ok" for a in self.actions)

    @property
    def recovered(self) -> int:
        """Victims whose replacement (same kind and name, new identity) was seen."""
        return sum(r["seconds"] is not None for r in self.recoveries)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["victims"] = self.victims
        out["recovered"] = self.recovered
        return out

    def text(self, repeat_hint: str = "--seed") -> str:
        """One line: '3 actions, 3 victims, 3 recovered (median 0.6 s, max 1.1 s); seed 42'."""
        acted = [a for a in self.actions if a["result"] != "skipped"]
        skipped = len(self.actions) - len(acted)
        prefix = "stopped: " if self.stopped else ""
        extra = f", {skipped} skipped" if skipped else ""
        seed = f"seed {self.seed}" + (
            f" - repeat with {repeat_hint} {self.seed}" if repeat_hint else ""
        )
        if self.dry_run:
            return f"{prefix}dry run: {plural(len(acted), 'pick')}{extra}, nothing touched; {seed}"
        times = [r["seconds"] for r in self.recoveries if r["seconds"] is not None]
        figures = ""
        if times:
            figures = (
                f" (median {seconds_text(statistics.median(times))}, "
                f"max {seconds_text(max(times))}, looked every {self.poll:g} s)"
            )
        cut = sum(r["result"] == "stopped" for r in self.recoveries)
        missing = self.victims - self.recovered - cut
        lost = f", {missing} not recovered within {self.recovery_timeout:g} s" if missing else ""
        if cut:
            lost += f", {cut} not back yet when stopped"
        return (
            f"{prefix}{plural(len(acted), 'action')}{extra}, {plural(self.victims, 'victim')}, "
            f"{self.recovered} recovered{figures}{lost}; {seed}"
        )


def plural(count: int, word: str) -> str:
    """'1 action', '3 actions', '2 processes'."""
    if count == 1:
        return f"{count} {word}"
    return f"{count} {word}es" if word.endswith("s") else f"{count} {word}s"


def seconds_text(seconds: float) -> str:
    """'4 ms' below a second (a task comes back within one poll), else '1.25 s'."""
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


@dataclass(frozen=True)
class _Target:
    """A candidate as the engine sees it, whatever its kind."""

    id: str  # what the action takes: task-N, thread-N, pid-N
    name: str  # what replacements are matched by
    identity: tuple[Any, ...]  # what tells a replacement from the original
    aliases: tuple[str, ...] = ()  # other words the glob may match (a process's argv)
    detail: str = ""  # shown when ids repeat: a new thread may get its predecessor's ident
    main: bool = False  # the main thread


@dataclass
class _Node:
    link: Link
    own: bool  # created here, closed at the end
    label: str = ""
    marked: bool = False  # the run's start was marked in its audit
    failing: bool = False  # the last call failed (report once, not every step)

    @property
    def where(self) -> str:
        """How output names the node: its label and address."""
        label = self.label or self.link.label
        return label if label == self.link.address else f"{label} ({self.link.address})"


@dataclass
class _Watch:
    """A victim whose replacement we are looking for."""

    node: _Node
    name: str
    target: str
    detail: str  # the victim's _Target.detail
    before: frozenset[tuple[Any, ...]]  # identities with that name when it was hit
    acted: float  # monotonic time of the action


def validate(
    match: str,
    kind: str,
    action: str | None,
    every: float,
    count: int | None,
    duration: float | None,
    recovery_timeout: float,
) -> tuple[str, int | None]:
    """Check a run's arguments; return the action (default by kind) and the count
    (default 1 unless a duration is given). Raises ChaosError with a one-line reason."""
    if not isinstance(match, str) or not match.strip():
        raise ChaosError("a match glob is required, e.g. --match 'worker-*'")
    if kind not in KINDS:
        raise ChaosError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    action = action or DEFAULT_ACTION[kind]
    if action not in ACTIONS[kind]:
        raise ChaosError(
            f"a {kind} cannot be hit with {action!r}: use {' or '.join(ACTIONS[kind])}"
        )
    for name, value in (("every", every), ("recovery timeout", recovery_timeout)):
        if (
            not isinstance(value, (int, float))
            or isinstance(value, bool)
            or not math.isfinite(value)
        ):
            raise ChaosError(f"{name} must be a number of seconds")
    if every < 0:
        raise ChaosError("every must be 0 seconds or more")
    if recovery_timeout <= 0:
        raise ChaosError("the recovery timeout must be more than 0 seconds")
    if count is not None and duration is not None:
        raise ChaosError("give a count or a duration, not both")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise ChaosError("count must be a whole number of 1 or more")
    if duration is not None and (
        isinstance(duration, bool)
        or not isinstance(duration, (int, float))
        or not math.isfinite(duration)
        or duration <= 0
    ):
        raise ChaosError("duration must be more than 0 seconds")
    return action, (1 if count is None and duration is None else count)


def process_slot(label: str) -> str:
    """The slot a worker process fills, which its replacement fills again: the label
    without a gunicorn worker's age or a multiprocessing worker's number
    ('gunicorn worker (age 3)' -> 'gunicorn worker', 'ForkPoolWorker-3' -> 'ForkPoolWorker');
    any other label is its own slot."""
    label = _AGE.sub("", label)
    numbered = _NUMBERED.match(label)
    return numbered.group(1) if numbered else label


def literal_hint(glob: str) -> str:
    """The longest piece of ``glob`` every match must contain: the agent filters tasks by
    it (a case-insensitive substring test), so a host with 100k tasks sends a few."""
    head = glob.split("[", 1)[0]
    return max(re.split(r"[*?]", head), key=len)


class Chaos:
    """One chaos run over ``nodes`` (NodeSpecs, or Links the caller keeps open).

    ``run()`` does it in the calling thread and returns the Summary; ``start()`` runs it
    on a daemon thread and ``join()`` returns the Summary (or raises what ``run`` raised).
    ``stop()`` (any thread) ends the run at its next wait; the summary is still made.
    ``on_event`` is called from the run's thread with each ChaosEvent.
    """

    def __init__(
        self,
        nodes: Sequence[NodeSpec | Link],
        match: str,
        *,
        kind: str = "task",
        action: str | None = None,
        every: float = DEFAULT_EVERY,
        count: int | None = None,
        duration: float | None = None,
        seed: int | None = None,
        dry_run: bool = False,
        recovery_timeout: float = DEFAULT_RECOVERY_TIMEOUT,
        exception: str = "SystemExit",
        poll: float = POLL,
        call_timeout: float | None = None,
        on_event: Callable[[ChaosEvent], None] | None = None,
    ) -> None:
        action, count = validate(match, kind, action, every, count, duration, recovery_timeout)
        if not nodes:
            raise ChaosError("no nodes to run chaos on")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ChaosError("seed must be a whole number")
        self._sources = list(nodes)
        self.match, self.kind, self.action = match, kind, action
        self.every, self.count, self.duration = float(every), count, duration
        self.seed = seed if seed is not None else secrets.randbelow(2**32)
        self.dry_run = dry_run
        self.recovery_timeout = float(recovery_timeout)
        self.exception = exception
        self.poll = poll
        self.call_timeout = call_timeout
        self.on_event = on_event
        self.run_id = f"chaos-{secrets.token_hex(4)}"
        self.summary = Summary(
            self.run_id,
            self.seed,
            dry_run,
            match,
            kind,
            action,
            self.every,
            count,
            duration,
            self.recovery_timeout,
            poll,
        )
        self._rng = random.Random(self.seed)
        self._hint = literal_hint(match) if kind == "task" else ""
        self._stop = threading.Event()
        self._nodes: list[_Node] = []
        self._watches: list[_Watch] = []
        # (id of the _Node, identity): targets already picked, replacements already credited
        self._hit: set[tuple[int, tuple[Any, ...]]] = set()
        self._claimed: set[tuple[int, tuple[Any, ...]]] = set()
        self._thread: threading.Thread | None = None
        self._done = threading.Event()  # waited on instead of join(): Ctrl-C can spoil a join
        self._outcome: Summary | BaseException | None = None

    # ------------------------------------------------------------ control

    def stop(self) -> None:
        """End the run at its next wait (any thread); ``run`` still returns the summary."""
        self._stop.set()

    def start(self) -> Chaos:
        """Run on a daemon thread; ``join()`` for the summary."""
        self._thread = threading.Thread(target=self._run_saved, name=self.run_id, daemon=True)
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> Summary | None:
        """The summary once the run (started with ``start``) ended, None if still running
        after ``timeout``; re-raises ChaosError/ChaosRefused/ObserverError from the run."""
        if self._thread is not None and not self._done.wait(timeout):
            return None
        if isinstance(self._outcome, BaseException):
            raise self._outcome
        return self._outcome

    def _run_saved(self) -> None:
        try:
            self._outcome = self.run()
        except BaseException as exc:  # handed to join()
            self._outcome = exc
        finally:
            self._done.set()

    def run(self) -> Summary:
        """Do the whole run in this thread and return its summary."""
        s = self.summary
        s.started = time.time()
        t0 = time.monotonic()
        try:
            self._connect()
            if not self.dry_run:
                self._mark_start()
            self._emit("start", self._start_text(), {"run": self.run_id, "seed": self.seed})
            self._loop()
        finally:
            s.stopped = self._stop.is_set()
            for watch in list(self._watches):  # cut short before they came back
                self._unrecovered(watch, "stopped" if s.stopped else "run ended early")
            s.seconds = round(time.monotonic() - t0, 3)
            if not self.dry_run:
                self._mark_end()
            for node in self._nodes:
                if node.own:
                    node.link.close()
        self._emit("end", s.text(), s.to_dict())
        return s

    # ------------------------------------------------------------ phases

    def _connect(self) -> None:
        """Expand names into one node per address (as ``observer nodes`` does) and say
        hello to each; unreachable nodes are reported (unless none is reachable: then
        the run fails with every reason in one line) and skipped until they answer."""
        for source in self._sources:
            if isinstance(source, Link):
                self._nodes.append(_Node(source, own=False))
                continue
            try:
                specs = expand(source)
            except ObserverError:  # does not resolve: one node, whose connect says why
                specs = [source]
            self._nodes.extend(_Node(Link(spec), own=True) for spec in specs)
        failed: list[tuple[_Node, ObserverError]] = []
        for node in self._nodes:
            try:
                self._call(node, lambda n: n.hello())
            except ObserverError as exc:
                failed.append((node, exc))
            node.label = node.link.label
            self.summary.nodes.append(
                {
                    "node": node.label,
                    "address": node.link.address,
                    "status": node.link.status.value,
                    "role": node.link.role,
                }
            )
        if len(failed) == len(self._nodes):
            reasons = "; ".join(f"{node.where}: {exc}" for node, exc in failed)
            raise ChaosError(f"{self.run_id}: no node reachable: {reasons}")
        for node, exc in failed:
            self._node_failed(node, exc)

    def _mark_start(self) -> None:
        """Mark the start on every node; a node that refuses (a viewer) refuses the run.

        Nodes known to be read-only are asked first, so a refusal usually leaves no mark
        on the others; the agent audits the denied attempt either way."""
        detail = (
            f"{self.action} {plural(2, self.kind)[2:]} matching {self.match!r}, {self._plan()}, "
            f"seed {self.seed}, {len(self._nodes)} nodes"
        )
        order = sorted(self._nodes, key=lambda n: n.link.can_control)
        for node in order:
            try:
                self._call(node, lambda n: n.chaos_mark(self.run_id, "start", detail))
                node.marked = True
            except PermissionDenied as exc:
                self._refuse(node, exc)
            except ObserverError as exc:
                self._node_failed(node, exc)

    def _refuse(self, node: _Node, exc: PermissionDenied) -> None:
        for other in self._nodes:
            if other.marked:
                with contextlib.suppress(ObserverError):
                    self._call(other, lambda n: n.chaos_mark(self.run_id, "end", "refused"))
                other.marked = False
        raise ChaosRefused(
            f"chaos run {self.run_id} refused by {node.where}: {exc.message}; nothing was touched"
        ) from exc

    def _mark_end(self) -> None:
        text = self.summary.text(repeat_hint="")
        for node in self._nodes:
            if node.marked:
                try:
                    self._call(node, lambda n: n.chaos_mark(self.run_id, "end", text))
                except ObserverError as exc:
                    self._node_failed(node, exc)

    def _loop(self) -> None:
        """Steps every ``every`` seconds (never in a burst to catch up after a slow one)
        and recovery polls between them, until the count or duration is done and every
        victim came back or timed out; a duration run lasts its duration."""
        t0 = time.monotonic()
        end_at = t0 + self.duration if self.duration is not None else None
        steps = 0
        next_step = t0
        next_poll = math.inf
        while not self._stop.is_set():
            now = time.monotonic()
            if self._watches and now >= next_poll:
                self._poll()
                next_poll = time.monotonic() + self.poll
                continue
            more = (self.count is None or steps < self.count) and (
                end_at is None or (next_step < end_at and now < end_at)
            )
            if more and now >= next_step:
                self._step()
                steps += 1
                next_step = max(next_step + self.every, time.monotonic())
                if self._watches:  # look at once: most replacements are quick
                    next_poll = min(next_poll, time.monotonic())
                continue
            wakes = [next_step] if more else []
            if self._watches:
                wakes.append(next_poll)
            if end_at is not None and now < end_at:
                wakes.append(end_at)
            if not wakes:
                return
            self._stop.wait(max(0.0, min(wakes) - now))

    # ------------------------------------------------------------ one step

    def _step(self) -> None:
        """List every node's targets, pick a node (uniformly among those with a match),
        then one of its matches (in name order, so a seed repeats), and act on it."""
        pool: list[tuple[int, list[_Target]]] = []
        found: dict[int, list[_Target]] = {}
        already = 0  # matches hit earlier in this run and still there (a thread yet to end)
        for index, node in enumerate(self._nodes):
            if self._stop.is_set():
                return
            targets = self._look(node)  # a step's listing is a recovery poll too
            if targets is None:
                continue
            found[index] = targets
            matching = [t for t in targets if self._matches(t)]
            eligible = [t for t in matching if (id(node), t.identity) not in self._hit]
            already += len(matching) - len(eligible)
            if eligible:
                pool.append((index, sorted(eligible, key=lambda t: (t.name, t.id))))
        if not pool:
            why = f"no {self.kind} matches {self.match!r} on any node"
            if already:
                why = (
                    f"every {self.kind} matching {self.match!r} was hit already and is still there"
                )
            self._emit("skipped", why, self._record(None, None, "skipped", why))
            return
        index, targets = pool[self._rng.randrange(len(pool))]
        target = targets[self._rng.randrange(len(targets))]
        node = self._nodes[index]
        self._hit.add((id(node), target.identity))
        if self.dry_run:
            record = self._record(node, target, "dry-run", "picked, not touched")
            self._emit("action", f"{node.where}  would {self._verb()} {self._what(target)}", record)
            return
        acted = time.monotonic()
        try:
            result = self._call(node, lambda n: self._act(n, target))
            outcome, message = "ok", result.message
            self._node_ok(node)
        except RemoteError as exc:
            outcome = exc.kind if exc.kind != "internal" else f"error: {exc.message}"
            message = exc.message
        except ObserverError as exc:
            outcome, message = f"error: {exc}", str(exc)
            self._node_failed(node, exc)
        record = self._record(node, target, outcome, message)
        self._emit(
            "action", f"{node.where}  {self._verb()} {self._what(target)}: {outcome}", record
        )
        if outcome == "ok":
            before = frozenset(t.identity for t in found[index] if t.name == target.name)
            self._watches.append(_Watch(node, target.name, target.id, target.detail, before, acted))

    def _targets(self, node: Node) -> list[_Target]:
        """Every live target of the run's kind on ``node`` (one round trip)."""
        if self.kind == "task":
            return [
                _Target(t.id, t.name, (t.id,))
                for t in node.tasks(match=self._hint)
                if t.state == "pending"
            ]
        if self.kind == "thread":
            return [
                _Target(
                    t.id, t.name, (t.id, t.native_id), main=t.is_main, detail=f"tid {t.native_id}"
                )
                for t in node.threads()
                if t.alive and not t.is_agent
            ]
        return [
            _Target(
                c.id,
                process_slot(child_label(c.name, c.cmdline)),
                (c.pid, c.create_time),
                (c.name, *c.cmdline),
            )
            for c in node.children()
            if c.status not in DEAD_STATUSES
        ]

    def _matches(self, target: _Target) -> bool:
        if target.main:  # the main thread only when the glob names it exactly
            return not WILDCARDS.search(self.match) and self.match == target.name
        return any(fnmatch.fnmatchcase(word, self.match) for word in (target.name, *target.aliases))

    def _act(self, node: Node, target: _Target) -> Any:
        if self.kind == "task":
            return node.cancel(target.id, f"cancelled by chaos run {self.run_id}", run=self.run_id)
        if self.kind == "thread":
            return node.raise_in(target.id, self.exception, run=self.run_id)
        return node.signal(target.id, self.action.upper(), run=self.run_id)

    # ------------------------------------------------------------ recovery

    def _look(self, node: _Node) -> list[_Target] | None:
        """List a node's targets and credit any replacements; None if it did not answer."""
        try:
            targets = self._call(node, self._targets)
        except ObserverError as exc:
            self._node_failed(node, exc)
            return None
        self._node_ok(node)
        self._check(node, targets)
        return targets

    def _poll(self) -> None:
        """One look at each node with victims to watch; then time out the overdue."""
        for node in {id(w.node): w.node for w in self._watches}.values():
            if self._stop.is_set():
                return
            self._look(node)
        now = time.monotonic()
        for watch in list(self._watches):
            if now - watch.acted >= self.recovery_timeout:
                self._unrecovered(watch, f"not recovered within {self.recovery_timeout:g} s")

    def _check(self, node: _Node, targets: list[_Target]) -> None:
        """Credit replacements seen in ``targets`` (just listed on ``node``): a live target
        with a victim's name and an identity that did not exist when it was hit. Each new
        target replaces one victim only."""
        seen = time.monotonic()
        for watch in [w for w in self._watches if w.node is node]:
            new = next(
                (
                    t
                    for t in targets
                    if t.name == watch.name
                    and t.identity not in watch.before
                    and (id(node), t.identity) not in self._claimed
                ),
                None,
            )
            if new is not None:
                self._claimed.add((id(node), new.identity))
                self._recovered(watch, new, seen - watch.acted)

    def _recovered(self, watch: _Watch, new: _Target, seconds: float) -> None:
        self._watches.remove(watch)
        record = self._recovery(watch, new.id, round(seconds, 3), "recovered")
        new_text, old_text = new.id, watch.target
        if new.id == watch.target and new.detail:  # a reused thread ident: say what differs
            new_text, old_text = f"{new.id} ({new.detail})", f"{watch.target} ({watch.detail})"
        self._emit(
            "recovered",
            f"{watch.node.where}  {watch.name} back within {seconds_text(seconds)}: "
            f"{new_text} replaces {old_text}",
            record,
        )

    def _unrecovered(self, watch: _Watch, why: str) -> None:
        if watch in self._watches:
            self._watches.remove(watch)
        record = self._recovery(watch, None, None, why)
        self._emit(
            "not-recovered", f"{watch.node.where}  {watch.name} ({watch.target}) {why}", record
        )

    def _recovery(
        self, watch: _Watch, replacement: str | None, seconds: float | None, result: str
    ) -> dict[str, Any]:
        record = {
            "node": watch.node.label,
            "address": watch.node.link.address,
            "name": watch.name,
            "target": watch.target,
            "replacement": replacement,
            "seconds": seconds,
            "result": result,
        }
        self.summary.recoveries.append(record)
        return record

    # ------------------------------------------------------------ plumbing

    def _call(self, node: _Node, fn: Callable[[Node], Any]) -> Any:
        return node.link.call(fn, self.call_timeout)

    def _record(
        self, node: _Node | None, target: _Target | None, result: str, message: str
    ) -> dict[str, Any]:
        record = {
            "node": node.label if node else "",
            "address": node.link.address if node else "",
            "target": target.id if target else "",
            "name": target.name if target else "",
            "kind": self.kind,
            "action": self.action,
            "result": result,
            "message": message,
            "time": time.time(),
        }
        self.summary.actions.append(record)
        return record

    def _node_failed(self, node: _Node, exc: Exception) -> None:
        if not node.failing:
            node.failing = True
            self._error(f"{node.where or node.link.address}: {exc}")

    def _node_ok(self, node: _Node) -> None:
        node.failing = False

    def _error(self, text: str) -> None:
        self.summary.errors.append(text)
        self._emit("error", text, {"message": text})

    def _emit(self, kind: str, text: str, data: dict[str, Any]) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(ChaosEvent(kind, text, data))
        except Exception:  # a broken log must not break the run
            log.exception("chaos event handler failed")

    def _verb(self) -> str:
        if self.kind == "thread":
            return f"raise {self.exception} in"
        return {"cancel": "cancel", "term": "SIGTERM", "kill": "SIGKILL"}[self.action]

    def _what(self, target: _Target) -> str:
        return f"{target.id} {target.name}"

    def _plan(self) -> str:
        if self.duration is not None:
            return f"every {self.every:g} s for {self.duration:g} s"
        return f"{self.count} x every {self.every:g} s" if (self.count or 0) > 1 else "once"

    def _start_text(self) -> str:
        what = "dry run: would " if self.dry_run else ""
        return (
            f"{self.run_id}: {what}{self._verb()} {plural(2, self.kind)[2:]} matching "
            f"{self.match!r} on {plural(len(self._nodes), 'node')}, "
            f"{self._plan()}; seed {self.seed}"
        )
