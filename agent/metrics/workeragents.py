"""A master's scrape asks its workers' agents for their own Python series, concurrently.

Each worker with an agent (agent.workers) is asked ``metric_families`` (agent.metrics.own)
through agent.relay, over a link kept from scrape to scrape (one per worker, closed when
the worker is gone), by a few daemon threads. The scrape waits for the answers until its
deadline (TIMEOUT after asking) and no longer: a worker that is hung, frozen, dead or
still waking up simply lacks its Python series in that scrape, and
``observer_worker_agent_errors_total{reason}`` counts it (``waking`` until a worker's agent
first answered: a dormant agent builds itself at the first ask). A worker still busy with an
earlier ask is not asked again (so a hung one holds one thread at most, until the relay's
own timeout ends its call).

What comes back is checked: only the families agent.metrics.own.FAMILIES names, with
their type, labels from its short list, at most MAX_SAMPLES samples per worker, built by
the strict writer; anything else leaves that worker's series out (reason "refused").
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from agent.codec import decode_envelope
from agent.errors import AgentError, NotFound
from agent.metrics.exposition import ExpositionError, Family
from agent.metrics.own import FAMILIES, LABELS
from agent.ratelog import RateLog
from agent.relay import Relay, RelayKeys, WorkerUnreachable

log = logging.getLogger("agent")

THREADS = 8  # asks in flight at once
TIMEOUT = 0.5  # seconds a scrape waits for its workers' answers, all of them together
MAX_SAMPLES = 400  # per worker: 32 loops' tasks, lag and stalls fit; more is refused
MAX_REPLY = 1 << 20  # bytes of one worker's decoded reply
REASONS = ("waking", "timeout", "unreachable", "refused", "cap")
METHOD = "metric_families"


class _Link:
    """One worker's relay (a link of its own, logged in as a viewer) and whether an ask to
    it is in flight."""

    __slots__ = ("answered", "busy", "relay")

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.busy = False
        self.answered = False  # its agent answered once (it is awake)

    @property
    def late(self) -> str:
        """Why an ask not answered in time is late."""
        return "timeout" if self.answered else "waking"


class Batch:
    """The asks of one scrape: pid -> families, or pid -> error reason, as they come."""

    def __init__(self, pids: Iterable[int]) -> None:
        self.waiting = set(pids)
        self.links: dict[int, _Link] = {}
        self.families: dict[int, list[Family]] = {}
        self.failed: dict[int, str] = {}
        self._cond = threading.Condition()

    def done(self, pid: int, families: list[Family] | None, reason: str = "") -> None:
        with self._cond:
            self.waiting.discard(pid)
            if families is not None:
                self.families[pid] = families
            else:
                self.failed[pid] = reason
            self._cond.notify_all()

    def wait(self, deadline: float, clock: Callable[[], float] = time.monotonic) -> None:
        """Until every ask is answered or ``deadline``; the unanswered are timeouts."""
        with self._cond:
            while self.waiting:
                left = deadline - clock()
                if left <= 0:
                    break
                self._cond.wait(left)
            for pid in self.waiting:
                link = self.links.get(pid)
                self.failed[pid] = link.late if link is not None else "timeout"
            self.waiting = set()


class WorkerAgents:
    """Links to the workers' agents and the threads that ask them."""

    def __init__(
        self,
        keys: RelayKeys,
        *,
        threads: int = THREADS,
        timeout: float = TIMEOUT,
        on_thread: Callable[[int], None] = lambda _ident: None,
    ) -> None:
        self._keys = keys
        self._role = "viewer" if "viewer" in keys.tokens else min(keys.tokens, default="viewer")
        self.timeout = timeout
        self._max_threads = max(1, threads)
        self._on_thread = on_thread
        self._links: dict[int, _Link] = {}
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self.errors = dict.fromkeys(REASONS, 0)  # since start, by reason
        self._events = RateLog(log, every=60.0)

    def ask(self, pids: Iterable[int], keep_max: bool = False) -> Batch:
        """Start asking each of ``pids`` (workers with an agent); links of workers not in
        ``pids`` are closed (gone). Returns at once; ``Batch.wait`` collects."""
        pids = list(pids)
        batch = Batch(pids)
        with self._lock:
            for pid in [p for p in self._links if p not in batch.waiting]:
                self._close(self._links.pop(pid))
            for pid in pids:
                link = self._links.get(pid)
                if link is None:
                    link = self._links[pid] = _Link(Relay(self._keys, self._role))
                batch.links[pid] = link
                if link.busy:  # the previous ask has not come back yet: hung (or waking)
                    batch.done(pid, None, link.late)
                    continue
                link.busy = True
                self._jobs.put((batch, pid, link, keep_max))
            self._grow()
        return batch

    def collect(self, batch: Batch, deadline: float) -> dict[int, list[Family]]:
        """The families each worker sent by ``deadline``; failures counted by reason."""
        batch.wait(deadline)
        for pid, reason in batch.failed.items():
            self.failed(reason)
            if reason == "waking":  # expected once per worker: counted, not logged
                continue
            self._events.event(
                f"worker:{reason}",
                "runtime-observer agent: worker %d's python series left out of a scrape: %s",
                pid,
                reason,
            )
        return batch.families

    def failed(self, reason: str, count: int = 1) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + count

    def close(self) -> None:
        with self._lock:
            links, self._links = list(self._links.values()), {}
            for _thread in self._threads:
                self._jobs.put(None)
            self._threads = []
        for link in links:
            self._close(link)

    # ------------------------------------------------------------ the threads

    def _grow(self) -> None:
        """A thread for each ask in flight, up to the limit (under _lock): an ask never
        waits behind another worker's (a hung one's) while fewer threads are running."""
        busy = sum(link.busy for link in self._links.values())
        while len(self._threads) < min(busy, self._max_threads):
            thread = threading.Thread(
                target=self._serve, name="observer-agent-metrics-ask", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(Exception):
            self._on_thread(threading.get_ident())
        while True:
            job = self._jobs.get()
            if job is None:
                return
            batch, pid, link, keep_max = job
            families, reason = None, "refused"
            try:
                families, reason = self._ask(pid, link, keep_max)
            except Exception:  # contained: a failed ask is that worker's, never the thread's
                families, reason = None, "refused"
            finally:
                with self._lock:
                    link.busy = False
                    link.answered = link.answered or reason != "unreachable"
            batch.done(pid, families, reason)

    def _ask(self, pid: int, link: _Link, keep_max: bool) -> tuple[list[Family] | None, str]:
        try:
            payload = link.relay.call(pid, METHOD, (keep_max,))
        except (WorkerUnreachable, NotFound):
            return None, "unreachable"
        except AgentError:
            return None, "refused"
        envelope = decode_envelope(payload, MAX_REPLY)
        if not envelope.ok:
            return None, "refused"
        try:
            return families_from(envelope.data), ""
        except (ExpositionError, TypeError, ValueError):
            return None, "refused"

    @staticmethod
    def _close(link: _Link) -> None:
        with contextlib.suppress(Exception):
            link.relay.close()


def families_from(data: Any, max_samples: int = MAX_SAMPLES) -> list[Family]:
    """Families from a worker's compact reply (agent.metrics.own), checked: known names
    and types only, known labels only, at most ``max_samples`` samples; ValueError or
    ExpositionError otherwise."""
    if type(data) is not list or len(data) > len(FAMILIES):
        raise ValueError("not a list of families")
    out: list[Family] = []
    total = 0
    for entry in data:
        name, kind, text, samples = entry
        if FAMILIES.get(name) != kind or type(samples) is not list:
            raise ValueError(f"family {name!r} of type {kind!r} not expected from a worker")
        total += len(samples)
        if total > max_samples:
            raise ValueError("too many samples")
        family = Family(name, kind, str(text)[:300])
        for suffix, flat, value in samples:
            if type(flat) is not list or len(flat) % 2:
                raise ValueError("bad labels")
            labels = tuple(zip(flat[::2], flat[1::2], strict=True))
            if any(k not in LABELS for k, _v in labels):
                raise ValueError("a label a worker may not send")
            family.add(value, labels, suffix)
        out.append(family)
    return out
