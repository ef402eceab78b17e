"""The metrics endpoint of one agent: its registry of collectors, the HTTP thread, the GC
timer, and a short cache so a burst of scrapes costs one collection."""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from typing import Any

from agent.metrics.config import MetricsConfig
from agent.metrics.exposition import Rendered, render, wants_openmetrics
from agent.metrics.httpserve import MetricsHTTPServer
from agent.metrics.registry import Registry
from agent.metrics.runtime import (
    AgentCollector,
    AsyncioCollector,
    GcTimer,
    ProcessCollector,
    PythonCollector,
    StallCollector,
)
from agent.metrics.workeragents import WorkerAgents
from agent.metrics.workers import WorkersCollector
from agent.relay import RelayKeys
from agent.wire import join_host_port

log = logging.getLogger("agent")
CACHE_SECONDS = 0.5  # scrapes this close together share one collection


class MetricsEndpoint:
    """Collect and render on demand; serve over HTTP once started. Never raises into the
    host after construction (which binds the port and may raise OSError)."""

    def __init__(
        self,
        config: MetricsConfig,
        core: Any,
        listener: socket.socket,
        tls: ssl.SSLContext | None = None,
        relay_keys: RelayKeys | None = None,
    ) -> None:
        self.config = config
        self.registry = Registry()
        self.gc_timer = GcTimer()
        self.asyncio = AsyncioCollector(core.tasks)
        self._lock = threading.Lock()
        self._cache: dict[bool, tuple[float, Rendered]] = {}
        self._last = (0.0, 0, 0, 0)  # seconds, bytes, series, dropped of the last render
        # the agent's own accounting first: a series cap never leaves out what says so
        self.registry.register(
            AgentCollector(core, scrape_stats=lambda: self._last, errors=self._errors)
        )
        self.registry.register(ProcessCollector(core.process))
        self.registry.register(PythonCollector(self.gc_timer))
        self.registry.register(self.asyncio)
        self.registry.register(StallCollector(core.stall_watch))
        agents = None
        if relay_keys is not None and config.worker_agents:  # workers' own Python series
            agents = WorkerAgents(relay_keys, on_thread=core.add_agent_thread)
        # a master's workers, labelled by slot
        self.workers = WorkersCollector(core.process, agents=agents, max_series=config.max_series)
        self.registry.register(self.workers)
        self.server = MetricsHTTPServer(
            listener,
            self.serve,
            token=config.token,
            tls=tls if config.tls else None,
            tick=self.asyncio.tick,
            on_thread=core.add_agent_thread,
        )

    def _errors(self) -> int:
        return self.registry.errors

    @property
    def address(self) -> str:
        host, port = self.server.address
        return join_host_port(str(host), int(port))

    @property
    def url(self) -> str:
        return f"{'https' if self.config.tls else 'http'}://{self.address}/metrics"

    def start(self) -> None:
        self.gc_timer.install()
        self.server.start()

    def stop(self, shutdown: bool = True) -> None:
        self.gc_timer.uninstall()
        self.server.stop(shutdown)
        if self.workers.agents is not None:
            self.workers.agents.close()

    def abandon(self) -> None:
        """In a forked child (agent.forking): drop the GC hook and the child's copies of the
        endpoint's sockets; the parent keeps serving its metrics."""
        self.gc_timer.uninstall()
        self.server.abandon()

    def render(self, openmetrics: bool = False, scrape: bool = True) -> Rendered:
        """A fresh exposition (or one made less than CACHE_SECONDS ago), never raising:
        a failure yields an exposition with only the error counter. ``scrape=False`` (a
        look from an observer) leaves the per-scrape maxima to the next real scrape."""
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(openmetrics)
            if cached is not None and now - cached[0] < CACHE_SECONDS:
                return cached[1]
            started = time.perf_counter()
            self.asyncio.keep_max = self.workers.keep_max = not scrape
            try:
                result = render(self.registry.collect(), openmetrics, self.config.max_series)
            except Exception:
                self.registry.errors += 1
                log.debug("runtime-observer agent: metrics render failed", exc_info=True)
                result = render([], openmetrics, self.config.max_series)
            finally:
                self.asyncio.keep_max = self.workers.keep_max = False
            if scrape:  # what the endpoint reports of its previous scrape
                took = time.perf_counter() - started
                self._last = (took, len(result.body), result.series, result.dropped)
            if not scrape:
                return result  # not cached: a scrape right after must reset the maxima
            self._cache = {openmetrics: (time.monotonic(), result)}
            return result

    def serve(self, accept: str) -> tuple[bytes, str]:
        result = self.render(wants_openmetrics(accept))
        return result.body, result.content_type
