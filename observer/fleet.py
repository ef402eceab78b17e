"""Many nodes at once, Qt-free: the cluster view's rows and a concurrent, bounded refresh.

``Fleet`` is what ``observer nodes`` and ``bench/fleet.py`` drive; the GUI's Cluster tab
builds the same ``ClusterRow`` from its own per-node links with ``Trend``. One refresh is
one ``overview()`` round trip per node, all of them in flight together on a bounded
pool; a node whose previous refresh has not finished is not asked again, so a slow or
silent node costs its own timeout once and never holds the others back.
"""

from __future__ import annotations

import collections
import contextlib
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from agent.schema import HistorySample, Overview
from observer.errors import ObserverError
from observer.link import Link, Status, same_process
from observer.nodesfile import NodeSpec
from observer.resolve import RESOLVE_EVERY, Roster

POOL_SIZE = 32
SPARK_POINTS = 60


@dataclass(frozen=True)
class ClusterRow:
    """One node in the cluster view (and one object of ``observer nodes --json``)."""

    address: str
    name: str
    status: str  # up, down, dead, auth-failed, connecting
    error: str
    origin: str  # the address the user wrote (a DNS name stands for several nodes)
    rtt: float | None
    pid: int | None
    role: str
    agent_version: str
    cpu_percent: float | None
    rss: int | None
    threads: int | None
    tasks: int | None
    loop_lag: float | None
    uptime: float | None
    restarted: str  # "restarted HH:MM:SS: pid A -> B", or ""
    last_seen: float | None  # time.time() of the data shown, None when never
    stale: float | None  # seconds the data shown is old when the node is not up
    in_dns: bool  # False once a resolved address stopped being listed
    spark: tuple[float, ...]  # recent CPU %, oldest first


class Trend:
    """A node's last overview and a short CPU history for its sparkline."""

    def __init__(self, points: int = SPARK_POINTS) -> None:
        self.overview: Overview | None = None
        self.seen = 0.0  # time.time() the overview arrived
        self.cpu: collections.deque[float] = collections.deque(maxlen=points)
        self.since = 0.0  # the newest sample time we have: ask only for newer ones

    def add(self, overview: Overview) -> None:
        """Take an overview in; a new process's history starts afresh (it is not this one's)."""
        if self.overview is not None and not same_process(self.overview.hello, overview.hello):
            self.cpu.clear()
            self.since = 0.0
        samples: Iterable[HistorySample] = overview.samples
        for sample in samples:
            if sample.time > self.since:
                self.cpu.append(sample.cpu_percent)
                self.since = sample.time
        if overview.now.time > self.since:
            self.cpu.append(overview.now.cpu_percent)
            self.since = overview.now.time
        self.overview = overview
        self.seen = time.time()

    def fetch(self, link: Link, timeout: float | None = None) -> Overview:
        """One overview round trip through ``link`` (asks only for samples it lacks)."""
        overview = link.call(lambda node: node.overview(self.since), timeout)
        self.add(overview)
        return overview

    def row(self, link: Link, origin: str = "", gone_since: float = 0.0) -> ClusterRow:
        o = self.overview
        now = o.now if o else None
        up = link.status is Status.UP
        return ClusterRow(
            address=link.address,
            name=link.label,
            status=link.status.value,
            error=link.error,
            origin=origin or link.address,
            rtt=link.rtt if up else None,
            pid=link.pid,
            role=link.role,
            agent_version=link.agent_version,
            cpu_percent=now.cpu_percent if now else None,
            rss=now.rss if now else None,
            threads=now.threads if now else None,
            tasks=now.tasks if now else None,
            loop_lag=now.loop_lag if now else None,
            uptime=(o.uptime + (time.time() - self.seen)) if o else None,
            restarted=link.restarted,
            last_seen=self.seen or None,
            stale=None if up or not self.seen else time.time() - self.seen,
            in_dns=not gone_since,
            spark=tuple(self.cpu),
        )


class Fleet:
    """Every node a list of specs stands for, refreshed concurrently on a bounded pool."""

    def __init__(
        self,
        specs: list[NodeSpec],
        *,
        timeout: float | None = None,
        pool_size: int = POOL_SIZE,
        resolve_every: float = RESOLVE_EVERY,
    ) -> None:
        self.timeout = timeout  # per-call bound for refreshes (default: each spec's)
        self.roster = Roster(specs)
        self.links: dict[str, Link] = {}
        self.trends: dict[str, Trend] = {}
        self.errors: list[str] = []  # names that did not resolve in the last round
        self.resolve_every = resolve_every
        self._pool = ThreadPoolExecutor(pool_size, thread_name_prefix="observer-fleet")
        self._inflight: dict[str, Future[None]] = {}
        self.resolve()

    def resolve(self) -> None:
        """Resolve every name again: new addresses join, vanished ones are marked."""
        change = self.roster.update()
        self.errors = change.errors
        for address in change.removed:
            self.links.pop(address).close()
            self.trends.pop(address)
        for spec in change.added:
            self.links[spec.address] = Link(spec)
            self.trends[spec.address] = Trend()

    def refresh(self, wait_for: float | None = None) -> list[ClusterRow]:
        """Ask every node not already being asked for its overview, all at once; return
        every node's row once the answers that matter are in (at most ``wait_for`` s).

        Answers that matter are those of nodes that were up or not yet tried. A node
        already known down, dead or refusing us is retried in the background: its row
        changes when it answers, and a silent node costs its timeout once (when it went
        quiet), not again on every refresh.
        """
        if time.time() - self.roster.resolved_at >= self.resolve_every:
            self.resolve()
        waited = []
        for address, link in self.links.items():
            running = self._inflight.get(address)
            if running is not None and not running.done():
                continue  # still waiting on the last one: never pile up on a slow node
            future = self._pool.submit(self._refresh_one, address, link)
            self._inflight[address] = future
            if link.status in (Status.UP, Status.CONNECTING):
                waited.append(future)
        wait(waited, timeout=wait_for)
        return self.rows()

    def settle(self, timeout: float | None = None) -> list[ClusterRow]:
        """Wait for every request in flight, background retries included; every row."""
        wait(list(self._inflight.values()), timeout=timeout)
        return self.rows()

    def _refresh_one(self, address: str, link: Link) -> None:
        with contextlib.suppress(ObserverError):  # the link's status and error say what
            self.trends[address].fetch(link, self.timeout)

    def rows(self) -> list[ClusterRow]:
        return [
            self.trends[a].row(link, self.roster.origin.get(a, a), self.roster.gone.get(a, 0.0))
            for a, link in self.links.items()
        ]

    def close(self) -> None:
        for link in self.links.values():
            link.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
