"""Every worker's series on its master's endpoint, with a bounded ``worker`` label.

A master's workers are its live children that run a worker agent (agent.workers notes
each in the runtime directory) or that the host names as workers (gunicorn's arbiter,
multiprocessing; agent.collect.roles). Each gets a slot, the lowest one free when it is
first seen, kept while it lives; a worker that died (gone or a zombie) frees its slot at
the next scrape and its replacement takes the lowest free one, the dead one's when it
was the only vacancy. (gunicorn's age modulo the worker count is not a slot: a
replacement's age modulo N can equal a live worker's.) The label is the slot number, the
pid is in ``observer_worker_info``, so series stay bounded through any number of restarts.

The master reads each worker's ``process_*`` series from /proc with psutil, in the metrics
thread: the scrape never wakes a dormant worker's agent (an unobserved worker keeps its
pages shared with the master) and never waits on a worker: a frozen (SIGSTOPped) worker
still answers /proc reads. A scrape spends at most BUDGET seconds on workers; the ones
left when it runs out (a process in uninterruptible sleep, a huge smaps) are left out of
that scrape and counted in ``observer_worker_scrape_errors_total``. A worker's USS is
read at most every USS_MAX_AGE seconds (the scrapes between repeat the last value).

Workers that run an agent (agent.workers) also get their own Python series (GC, threads,
asyncio tasks, loop lag, stalls) asked of their agents while /proc is read
(agent.metrics.workeragents): that wakes a dormant worker's agent at the first scrape,
and is off with ``OBSERVER_AGENT_METRICS_WORKER_AGENTS=0``. Those series take at most
half the series cap together; the workers beyond it (highest slots) are left out of that
scrape and counted.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable

import psutil

from agent import registry
from agent.collect import roles
from agent.collect.proctree import child_pids as _child_pids
from agent.metrics.exposition import Family, counter, gauge
from agent.metrics.runtime import ProcessCollector
from agent.metrics.workeragents import REASONS, WorkerAgents
from agent.ratelog import RateLog

log = logging.getLogger("agent")
MAX_WORKERS = 255  # slots 0..254; more workers are left out and counted as errors
BUDGET = 2.0  # seconds of one scrape spent reading workers at most (under scrape timeouts)
USS_WORKERS = 64  # USS for the first this many slots only
# USS walks the worker's page tables (smaps_rollup: ~0.8 ms a worker, half a scrape's cost
# at 32 workers); it moves slowly, so a worker's is read at most this often
USS_MAX_AGE = 30.0
WORKER = "worker"
USS_HELP = "Memory unique to the process (USS) in bytes: what its exit would free."


class Slots:
    """pid -> slot: the lowest free slot to a newcomer, freed when the pid is gone."""

    def __init__(self, limit: int = MAX_WORKERS) -> None:
        self.limit = limit
        self.by_pid: dict[int, tuple[int, float]] = {}  # pid -> (slot, create time)
        self.freed = 0  # slots vacated since start (workers that exited)

    def update(self, live: Iterable[tuple[int, float]]) -> tuple[dict[int, int], int]:
        """Slots for ``live`` (pid, create time) in the order given; returns pid -> slot
        and how many live workers got no slot (beyond ``limit``)."""
        live = list(live)
        alive = {(pid, created) for pid, created in live}
        for pid, (_slot, created) in list(self.by_pid.items()):
            if (pid, created) not in alive:  # gone, or the pid was reused by another one
                del self.by_pid[pid]
                self.freed += 1
        taken = {slot for slot, _ in self.by_pid.values()}
        free = (s for s in range(self.limit) if s not in taken)
        unslotted = 0
        for pid, created in live:
            if pid in self.by_pid:
                continue
            slot = next(free, None)
            if slot is None:
                unslotted += 1
                continue
            self.by_pid[pid] = (slot, created)
        return {pid: slot for pid, (slot, _) in self.by_pid.items()}, unslotted


def worker_children(
    process: psutil.Process,
) -> list[tuple[int, float, psutil.Process, str | None]]:
    """(pid, create time, process, its agent's address or None) of the live children of
    ``process`` that are workers, oldest first."""
    try:
        pids = _child_pids(process.pid)
        if pids is None:
            children = process.children()
        else:
            children = []
            for pid in pids:
                try:
                    children.append(psutil.Process(pid))
                except psutil.Error:
                    continue  # exited and reaped meanwhile
    except (psutil.Error, OSError):
        return []
    named = None
    found = []
    for child in children:
        try:
            with child.oneshot():
                if child.status() == psutil.STATUS_ZOMBIE:
                    continue  # dead, not reaped yet: its slot is free
                created = child.create_time()
        except (psutil.Error, OSError):
            continue
        address = registry.agent_address_of(child.pid, created)
        if address is None:
            if named is None:
                named = roles.child_roles()
            if child.pid not in named:
                continue
        found.append((child.pid, created, child, address))
    found.sort(key=lambda item: (item[1], item[0]))
    return found


class WorkersCollector:
    """The ``worker``-labelled series of a master's workers (nothing for a process that
    never had any), plus how many there are, exits and scrape errors."""

    def __init__(
        self,
        process: psutil.Process,
        budget: float = BUDGET,
        clock: Callable[[], float] = time.monotonic,
        agents: WorkerAgents | None = None,
        max_series: int = 5000,
    ) -> None:
        self._process = process
        self._budget = budget
        self._clock = clock
        self.agents = agents  # asks the workers' agents for their Python series
        self._own_cap = max_series // 2  # samples of every worker's Python series together
        self.keep_max = False  # a look, not a scrape: the workers keep their lag maxima
        self._slots = Slots()
        self._held: dict[int, _Worker] = {}
        self._seen = False
        self.errors = 0  # workers left out of a scrape, since start
        self._events = RateLog(log, every=60.0)

    def collect(self) -> list[Family]:
        deadline = self._clock() + self._budget
        workers = worker_children(self._process)
        slots, unslotted = self._slots.update((pid, created) for pid, created, _, _ in workers)
        self.errors += unslotted
        if unslotted:
            self._events.event(
                "slots", "runtime-observer agent: %d workers beyond %d", unslotted, MAX_WORKERS
            )
        self._seen = self._seen or bool(workers)
        if not self._seen:
            return []
        self._held = {pid: w for pid, w in self._held.items() if pid in slots}  # the dead go
        batch = None
        if self.agents is not None:  # asked first: they answer while /proc is read
            asked = [pid for pid, _c, _p, address in workers if address and pid in slots]
            batch = self.agents.ask(asked, self.keep_max)
            asked_at = self._clock()
        merged: dict[str, Family] = {}
        info = Family("observer_worker", "info", "A worker of this master: its slot and pid.")
        shown: list[int] = []
        for pid, created, proc, _ in sorted(workers, key=lambda w: slots.get(w[0], MAX_WORKERS)):
            slot = slots.get(pid)
            if slot is None:
                continue
            if self._clock() > deadline:
                self.errors += 1
                self._events.event(
                    "budget", "runtime-observer agent: worker %d left out: over budget", pid
                )
                continue
            labels = ((WORKER, str(slot)),)
            try:
                for family in self._worker(pid, created, proc, slot).collect(self._clock()):
                    _merge(merged, family.relabelled(labels))
                info.add(1, (*labels, ("pid", str(pid))), "_info")
                shown.append(pid)
            except Exception as exc:  # a worker's odd /proc: its series are left out
                self.errors += 1
                self._events.event("worker", "runtime-observer agent: worker %d: %r", pid, exc)
        out = [*merged.values()]
        if batch is not None and self.agents is not None:
            own = self.agents.collect(batch, asked_at + self.agents.timeout)
            out.extend(self._own(own, shown, slots))
        return [
            *out,
            info,
            gauge("observer_workers", "Workers of this master shown in this scrape.", len(shown)),
            counter(
                "observer_worker_exits",
                "Workers of this master that exited since the agent started (their slots "
                "were freed for replacements).",
                self._slots.freed,
            ),
            counter(
                "observer_worker_scrape_errors",
                "Workers left out of a scrape (time budget spent, too many, or unreadable).",
                self.errors,
            ),
            *self._agent_errors(),
        ]

    def _own(
        self, own: dict[int, list[Family]], shown: list[int], slots: dict[int, int]
    ) -> list[Family]:
        """The workers' own Python series, labelled by slot, in slot order, within the
        cap (the workers beyond it are counted as left out, reason "cap")."""
        merged: dict[str, Family] = {}
        room = self._own_cap
        for pid in shown:  # slot order
            families = own.get(pid)
            if families is None:
                continue
            size = sum(len(f.samples) for f in families)
            if size > room:
                assert self.agents is not None
                self.agents.failed("cap")
                continue
            room -= size
            labels = ((WORKER, str(slots[pid])),)
            for family in families:
                into = merged.get(family.name)
                if into is None:
                    into = merged[family.name] = Family(family.name, family.type, family.help)
                into.take(family, labels)
        return list(merged.values())

    def _agent_errors(self) -> list[Family]:
        if self.agents is None:
            return []
        family = Family(
            "observer_worker_agent_errors",
            "counter",
            "Times a worker's own Python series were left out of a scrape, by reason: its "
            "agent was still waking up (waking), did not answer in time (timeout), could "
            "not be reached (unreachable), "
            "sent an error or an unexpected reply (refused), or the series cap (cap).",
        )
        for reason in REASONS:
            family.add(self.agents.errors.get(reason, 0), (("reason", reason),), "_total")
        return [family]

    def _worker(self, pid: int, created: float, proc: psutil.Process, slot: int) -> _Worker:
        held = self._held.get(pid)
        if held is None or held.created != created:
            held = self._held[pid] = _Worker(proc, created, uss=slot < USS_WORKERS)
        return held


class _Worker:
    """One worker's probes: process_* from /proc, its USS re-read every USS_MAX_AGE."""

    def __init__(self, proc: psutil.Process, created: float, uss: bool) -> None:
        self.created = created
        self._proc = proc
        self._process = ProcessCollector(proc, uss=False)
        self._uss = uss
        self._uss_value: float | None = None
        self._uss_at = -math.inf

    def collect(self, now: float) -> list[Family]:
        out = list(self._process.collect())
        if self._uss and now - self._uss_at >= USS_MAX_AGE:
            try:
                self._uss_value = self._proc.memory_full_info().uss
            except (psutil.Error, OSError, AttributeError, NotImplementedError):
                self._uss_value = None  # gone, denied or unsupported: left out
            self._uss_at = now
        if self._uss_value is not None:
            out.append(gauge("process_unique_memory_bytes", USS_HELP, self._uss_value))
        return out


def _merge(merged: dict[str, Family], family: Family) -> None:
    into = merged.get(family.name)
    if into is None:
        merged[family.name] = family
        return
    into.take(family)
