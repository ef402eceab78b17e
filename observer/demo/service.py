"""The demo service: a small production-like asyncio app with the observer agent embedded.

Run ``python -m observer.demo.service [--keys DIR]``. Once ready it prints exactly two lines
to stdout, ``agent: HOST:PORT`` and ``http: HOST:PORT``; logs go to stderr. SIGTERM or
SIGINT stop it cleanly (exit status 0).

Supervision tree (every task, thread and process below has a stable name)::

    main (asyncio task, one-for-one over the tasks below, in start order)
      child-supervisor -> child-worker-1..N      (OS processes, restarted on exit)
      worker-pool      -> http-worker-1..N       (forked processes serving one socket, each
                                                  with an agent of its own: a killed one
                                                  is replaced, new pid, same slot)
      http-server      -> http-conn-<n>          (one task per connection)
      supervisor       -> worker-1..N            (restarted on cancel/crash)
                            -> worker-K-job      (awaited sub-task, so await chains exist)
      job-producer, reporter, load-generator (-> load-req-<n>)
      report-exporter                            (every minute exports a report on the
                                                  loop itself: a ~300 ms stall, on purpose)
    thread-supervisor -> cache-janitor            (threads, restarted if it dies)
    blocking-pool_0..3                            (ThreadPoolExecutor for /work and reports)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import hashlib
import ipaddress
import itertools
import json
import logging
import math
import os
import random
import re
import signal
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import agent

from .cache import DEFAULT_MAX_ENTRIES, DemoCache
from .child import PARENT_ENV
from .httpd import HttpServer, Request, Response, http_get, within
from .pool import WorkerPool
from .supervision import ChildSupervisor, TaskSupervisor, ThreadSupervisor

log = logging.getLogger("observer.demo")

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MAX_WORK_MS = 5000
QUEUE_MAXSIZE = 500
READY_TIMEOUT = 15.0
EXPORT_STALL = 0.3  # seconds the report export blocks the event loop (the Stalls tab's example)
FIRST_EXPORT = 15.0  # seconds after start of the first export (a newcomer sees one soon)
BIG_ORDER = re.compile(r'"total_cents": ([4-9]\d{4})')  # totals of 400.00 and more


@dataclass(frozen=True)
class Options:
    """The service's command-line options."""

    bind: str = "127.0.0.1:0"
    keys: Path | None = None
    name: str = "demo"
    http_bind: str = "127.0.0.1:0"
    children: int = 2
    pool: int = 2
    workers: int = 3
    cache_max: int = DEFAULT_MAX_ENTRIES
    crash_rate: float = 0.0
    log_level: str = "INFO"
    export_every: float = 60.0  # seconds between report exports (0: none)


@dataclass(frozen=True)
class Job:
    """One unit of work on the ``jobs`` queue."""

    id: int
    key: str
    size: int
    poison: bool = False


def split_hostport(text: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[v6]:PORT`` too) into host and port."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def is_loopback(host: str) -> bool:
    """Tell whether ``host`` only accepts local connections."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def blocking_work(ms: int, halt: threading.Event) -> dict[str, Any]:
    """Simulate a slow synchronous call in a pool thread: half "I/O" wait, half hashing.

    The wait uses ``halt`` so shutdown never waits for it; sha256 on 64 KiB blocks
    releases the GIL, so the event loop stays responsive.
    """
    started = time.perf_counter()
    halt.wait(ms / 2000)
    deadline = started + ms / 1000
    digest = hashlib.sha256()
    block = bytes(65536)
    rounds = 0
    while time.perf_counter() < deadline and not halt.is_set():
        digest.update(block)
        rounds += 1
    return {
        "ms": ms,
        "took_ms": round((time.perf_counter() - started) * 1000, 1),
        "rounds": rounds,
        "digest": digest.hexdigest()[:16],
    }


def cache_janitor(cache: DemoCache, stop: threading.Event) -> None:
    """Once a second trim the cache and recount its size (body of the ``cache-janitor`` thread)."""
    scratch = bytes(8 << 20)
    while not stop.wait(1.0):
        evicted = cache.trim()
        cache.recount()
        # "Scrub" a buffer too: a few ms of real CPU a second, so the thread shows up in CPU views.
        hashlib.blake2b(scratch).digest()
        if evicted:
            log.debug("cache-janitor: evicted %d entries", evicted)


def child_command(name: str) -> list[str]:
    """Return the command line of the child worker process called ``name``."""
    return [sys.executable, "-m", "observer.demo.child", name]


def child_env() -> dict[str, str]:
    """Return our environment with this checkout importable, so ``-m observer...`` works."""
    env = dict(os.environ)
    paths = [str(PROJECT_ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env[PARENT_ENV] = str(os.getpid())
    return env


def _only_child_cancelled(parent: asyncio.Task[Any] | None, child: asyncio.Task[Any]) -> bool:
    """Tell whether a CancelledError came from cancelling ``child`` rather than ``parent``.

    Needs ``Task.cancelling()`` (3.11+); on 3.10 we assume the parent was cancelled.
    """
    cancelling = getattr(parent, "cancelling", None)
    return child.cancelled() and cancelling is not None and cancelling() == 0


class DemoService:
    """Everything the demo runs, wired together; ``run()`` is the ``main`` task."""

    def __init__(self, options: Options) -> None:
        """Build (but do not start) the cache, queue, pool, servers and supervisors."""
        self.options = options
        self.started_at = time.time()
        self.rng = random.Random()
        self.cache = DemoCache(options.cache_max)
        self.jobs: asyncio.Queue[Job] = asyncio.Queue(maxsize=QUEUE_MAXSIZE)
        self.job_ids = itertools.count(1)
        self.request_ids = itertools.count(1)
        self.halt = threading.Event()
        self.pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="blocking-pool")
        http_host, http_port = split_hostport(options.http_bind)
        self.http = HttpServer(http_host, http_port, self.handle)
        self.agent_address = ""
        self.config: dict[str, Any] = {
            "service": options.name,
            "environment": "demo",
            "agent_bind": options.bind,
            "http_bind": options.http_bind,
            "workers": options.workers,
            "children": options.children,
            "pool": options.pool,
            "cache_max_entries": options.cache_max,
            "queue_maxsize": QUEUE_MAXSIZE,
            "db_url": "postgresql://demo@db.internal:5432/orders",
            "db_password": "demo-secret",
            "feature_flags": {"new_checkout": True, "fast_path": False},
        }
        self.workers = TaskSupervisor(
            "supervisor",
            [
                (f"worker-{k}", functools.partial(self.worker, k))
                for k in range(1, options.workers + 1)
            ],
        )
        self.children = ChildSupervisor(
            [f"child-worker-{i}" for i in range(1, options.children + 1)],
            child_command,
            env=child_env(),
        )
        self.pool_workers = WorkerPool(options.pool, http_host)
        self.janitor = ThreadSupervisor(
            "cache-janitor", functools.partial(cache_janitor, self.cache)
        )
        self.root = TaskSupervisor(
            "main",
            [
                ("child-supervisor", self.children.run),
                ("worker-pool", self.pool_workers.run),
                ("http-server", self.http.serve),
                ("supervisor", self.workers.run),
                ("job-producer", self.produce_jobs),
                ("reporter", self.report_periodically),
                ("load-generator", self.generate_load),
                ("report-exporter", self.export_periodically),
            ],
        )
        self._main_task: asyncio.Task[Any] | None = None
        self._stop_signal: str | None = None

    # -- agent ---------------------------------------------------------------------------

    def start_agent(self) -> None:
        """Start the embedded agent (TLS + tokens with --keys) and expose our objects."""
        opts = self.options
        if opts.keys is None:
            host, _ = split_hostport(opts.bind)
            if not is_loopback(host):
                raise ValueError(f"refusing to serve the agent on {opts.bind} without --keys")
            handle = agent.start(opts.bind, name=opts.name, workers=True)
        else:
            tokens = {
                role: (opts.keys / f"{role}.token").read_text().strip()
                for role in ("viewer", "operator")
            }
            handle = agent.start(
                opts.bind,
                tls_cert=str(opts.keys / "agent.crt"),
                tls_key=str(opts.keys / "agent.key"),
                tokens=tokens,
                name=opts.name,
                workers=True,  # the forked pool workers get agents, reached through this one
            )
        self.agent_address = handle.address
        agent.expose("cache", self.cache.entries)  # the agent sizes builtin containers only
        agent.expose("jobs", self.jobs)
        agent.expose("config", self.config)

    # -- HTTP ----------------------------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        """Route one HTTP request."""
        if request.method != "GET":
            return Response.json({"error": "method not allowed"}, 405)
        if request.path == "/":
            return Response.json(self.status())
        if request.path == "/health":
            return Response.text("ok")
        if request.path == "/work":
            try:
                ms = int(request.query.get("ms", "100"))
            except ValueError:
                return Response.json({"error": "ms must be an integer"}, 400)
            ms = min(max(ms, 0), MAX_WORK_MS)
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(self.pool, blocking_work, ms, self.halt)
            return Response.json(result)
        if request.path == "/cache":
            return Response.json(self.cache.stats())
        if request.path == "/export":  # the export on demand: a stall right now
            return Response.json(self.export_report())
        return Response.json({"error": "not found", "path": request.path}, 404)

    def status(self) -> dict[str, Any]:
        """Return the service status served on ``GET /``."""
        return {
            "status": "ok",
            "service": self.options.name,
            "pid": os.getpid(),
            "uptime_s": round(time.time() - self.started_at, 1),
            "agent": self.agent_address,
            "http": self.http.address,
            "cache_size": len(self.cache),
            "queue_depth": self.jobs.qsize(),
            "workers": sorted(self.workers.children()),
            "children": self.children.pids(),
            "pool": self.pool_workers.address,
            "pool_workers": self.pool_workers.pids(),
            "http_requests": self.http.requests,
            "restarts": {
                "main": self.root.restarts,
                "supervisor": self.workers.restarts,
                "child-supervisor": self.children.restarts,
                "worker-pool": self.pool_workers.restarts,
                "thread-supervisor": self.janitor.restarts,
            },
        }

    # -- workers -------------------------------------------------------------------------

    async def worker(self, k: int) -> None:
        """Take jobs off the queue forever; every fifth job runs in a ``worker-K-job`` task."""
        me = asyncio.current_task()
        while True:
            job = await self.jobs.get()
            try:
                await asyncio.sleep(self.rng.uniform(0.001, 0.01))
                if job.poison:
                    raise RuntimeError(f"poison job {job.id}")
                self.cache.get(f"item:{job.id - self.rng.randint(1, 2000)}")
                if job.id % 5 == 0:
                    sub = asyncio.create_task(self.slow_job(job), name=f"worker-{k}-job")
                    try:
                        await sub
                    except asyncio.CancelledError:
                        if not _only_child_cancelled(me, sub):
                            raise
                        log.info("worker-%d: job %d was cancelled", k, job.id)
                else:
                    self.store(job)
            finally:
                self.jobs.task_done()

    async def slow_job(self, job: Job) -> None:
        """A slower job: "call a backend" (sleep), then cache the result."""
        await asyncio.sleep(self.rng.uniform(0.05, 0.4))
        self.store(job)

    def store(self, job: Job) -> None:
        """Cache a job's result."""
        self.cache.put(
            job.key,
            {
                "job": job.id,
                "customer": f"customer-{self.rng.randint(1, 5000)}",
                "total_cents": self.rng.randint(100, 50_000),
                "stored_at": time.time(),
                "payload": self.rng.randbytes(job.size // 2).hex(),
            },
        )

    async def produce_jobs(self) -> None:
        """Put jobs on the queue at a rate swinging between ~5 and ~60 per second."""
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        while True:
            phase = (loop.time() - t0) * 2 * math.pi / 45.0
            rate = 5.0 + 55.0 * (0.5 + 0.5 * math.sin(phase))
            job_id = next(self.job_ids)
            poison = self.options.crash_rate > 0 and self.rng.random() < self.options.crash_rate
            await self.jobs.put(Job(job_id, f"item:{job_id}", self.rng.randint(32, 512), poison))
            await asyncio.sleep(self.rng.expovariate(rate))

    async def report_periodically(self) -> None:
        """Every 5 s build a report in the blocking pool (the periodic ``report`` job)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(5.0)
            report = await loop.run_in_executor(self.pool, self.report)
            log.debug("report: %s", report)

    def report(self) -> dict[str, Any]:
        """Summarise cache and queue state off the event loop."""
        keys = self.cache.keys()[-5000:]
        digest = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]
        return {**self.cache.stats(), "queue_depth": self.jobs.qsize(), "keys_digest": digest}

    async def export_periodically(self) -> None:
        """Export the orders report on the event loop itself, every ``--export-every`` s
        (the first soon after start): the deliberate mistake the Stalls tab and the lag
        chart's marks show. A real service would run it in the pool, as ``reporter`` does."""
        every = self.options.export_every
        if every <= 0:
            await asyncio.Event().wait()  # no exports: idle until cancelled
        await asyncio.sleep(min(every, FIRST_EXPORT))
        while True:
            report = self.export_report()
            log.info("report-exporter: %d orders, %d big", report["orders"], report["big"])
            await asyncio.sleep(every)

    def export_report(self, budget: float = EXPORT_STALL) -> dict[str, Any]:
        """Serialise the cached orders to JSON and scan the text for big totals, in the
        calling thread: on the loop, it blocks it for ``budget`` seconds (passes over the
        orders until then, so the stall is the same on a fast or a slow machine)."""
        started = time.perf_counter()
        orders = self.cache.values()[-2000:]
        passes = big = 0
        while True:
            text = json.dumps(orders, sort_keys=True)  # CPU-bound: holds the loop
            big = len(BIG_ORDER.findall(text))
            passes += 1
            if time.perf_counter() - started >= budget:
                break
        took = time.perf_counter() - started
        return {"orders": len(orders), "big": big, "passes": passes, "took_ms": round(took * 1e3)}

    # -- load ----------------------------------------------------------------------------

    async def generate_load(self) -> None:
        """Call our own HTTP port at a rate swinging between ~3 and ~50 requests per second."""
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        in_flight: set[asyncio.Task[None]] = set()
        try:
            while True:
                phase = (loop.time() - t0) * 2 * math.pi / 60.0
                rate = 3.0 + 47.0 * (0.5 + 0.5 * math.sin(phase - math.pi / 2))
                if len(in_flight) < 64:
                    task = asyncio.create_task(
                        self._one_request(), name=f"load-req-{next(self.request_ids)}"
                    )
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                await asyncio.sleep(self.rng.expovariate(rate))
        finally:
            for task in list(in_flight):
                task.cancel()

    async def _one_request(self) -> None:
        """Make one request of a realistic mix; errors are logged, never raised."""
        roll = self.rng.random()
        if roll < 0.55:
            path = "/"
        elif roll < 0.70:
            path = "/health"
        elif roll < 0.85:
            path = f"/work?ms={self.rng.randint(5, 80)}"
        elif roll < 0.97:
            path = "/cache"
        else:
            path = "/missing"
        host = self.http.host
        if host in ("", "0.0.0.0", "::"):
            host = "127.0.0.1" if host != "::" else "::1"
        port = self.http.port
        if self.options.pool and self.rng.random() < 0.3:  # the pool's workers serve too
            port, path = self.pool_workers.port, path.replace("/cache", "/work")
        try:
            await http_get(host, port, path)
        except (OSError, asyncio.TimeoutError) as exc:
            log.debug("load-generator: GET %s failed: %r", path, exc)

    # -- lifecycle -----------------------------------------------------------------------

    def _on_signal(self, signum: int) -> None:
        """First SIGTERM/SIGINT cancels the main task; later ones are only logged."""
        name = signal.Signals(signum).name
        if self._stop_signal is not None:
            log.info("received %s; already stopping", name)
            return
        self._stop_signal = name
        log.info("received %s; shutting down", name)
        self.request_stop()

    def request_stop(self) -> None:
        """Stop the service from inside the loop (what the signal handlers do)."""
        if self._main_task is not None:
            self._main_task.cancel()

    async def run(self) -> int:
        """The ``main`` task: start everything, print the ready lines, supervise, shut down."""
        loop = asyncio.get_running_loop()
        main_task = asyncio.current_task()
        assert main_task is not None
        main_task.set_name("main")
        self._main_task = main_task
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            self.start_agent()
        except Exception as exc:
            log.error("could not start the agent: %s", exc)
            self.pool.shutdown(wait=False)
            return 1
        try:
            await self.http.bind()
            self.pool_workers.bind()
            self.janitor.start()
            self.root.start()
            await within(READY_TIMEOUT, self._started())
            print(f"agent: {self.agent_address}", flush=True)
            print(f"http: {self.http.address}", flush=True)
            log.info(
                "%s ready: agent %s, http %s, pid %d",
                self.options.name,
                self.agent_address,
                self.http.address,
                os.getpid(),
            )
            await self.root.supervise()
        except asyncio.CancelledError:
            uncancel = getattr(main_task, "uncancel", None)
            if uncancel is not None:
                uncancel()
            if self._stop_signal is None:
                log.warning("main task cancelled from outside; shutting down")
        except (OSError, asyncio.TimeoutError) as exc:
            log.error("startup failed: %r", exc)
            return 1
        finally:
            await self.shutdown()
        return 0

    async def _started(self) -> None:
        """Wait until the children and the workers have been started once."""
        await self.children.started.wait()
        await self.pool_workers.started.wait()
        await self.workers.started.wait()

    async def shutdown(self) -> None:
        """Stop tasks (reverse start order), threads, the pool, children, then the agent."""
        await self.root.shutdown()
        self.halt.set()
        await asyncio.to_thread(self.janitor.stop)
        await asyncio.to_thread(self.pool.shutdown, wait=True, cancel_futures=True)
        await asyncio.to_thread(self.children.kill_remaining)
        try:
            await asyncio.to_thread(agent.stop)
        except Exception:
            log.exception("agent.stop() failed")
        log.info("%s stopped", self.options.name)


def parse_args(argv: Sequence[str] | None = None) -> Options:
    """Parse the command line into :class:`Options`."""
    parser = argparse.ArgumentParser(
        prog="python -m observer.demo.service",
        description="Demo service with the runtime-observer agent embedded.",
    )
    parser.add_argument("--bind", default="127.0.0.1:0", help="agent address (HOST:PORT)")
    parser.add_argument(
        "--keys",
        type=Path,
        default=None,
        help="directory with agent.crt, agent.key, viewer.token, operator.token "
        "(without it: loopback only, no TLS, no tokens)",
    )
    parser.add_argument("--name", default="demo", help="service name shown by the observer")
    parser.add_argument("--http-bind", default="127.0.0.1:0", help="HTTP address (HOST:PORT)")
    parser.add_argument("--children", type=int, default=2, help="child worker processes")
    parser.add_argument(
        "--pool", type=int, default=2, help="forked HTTP worker processes (gunicorn-style)"
    )
    parser.add_argument("--workers", type=int, default=3, help="asyncio worker tasks")
    parser.add_argument(
        "--cache-max", type=int, default=DEFAULT_MAX_ENTRIES, help="cache size bound"
    )
    parser.add_argument(
        "--crash-rate", type=float, default=0.0, help="fraction of jobs that crash their worker"
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (stderr)")
    parser.add_argument(
        "--export-every",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="export a report on the event loop every SECONDS, a ~300 ms stall on purpose "
        "(the first after 15 s; 0: never; GET /export does one now)",
    )
    ns = parser.parse_args(argv)
    for flag in ("children", "pool", "workers", "cache_max", "export_every"):
        if getattr(ns, flag) < 0:
            parser.error(f"--{flag.replace('_', '-')} must be >= 0")
    for flag in ("bind", "http_bind"):
        try:
            split_hostport(getattr(ns, flag))
        except ValueError as exc:
            parser.error(str(exc))
    return Options(
        bind=ns.bind,
        keys=ns.keys,
        name=ns.name,
        http_bind=ns.http_bind,
        children=ns.children,
        pool=ns.pool,
        workers=ns.workers,
        cache_max=ns.cache_max,
        crash_rate=ns.crash_rate,
        log_level=ns.log_level.upper(),
        export_every=ns.export_every,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the demo service until SIGTERM/SIGINT; return the exit status."""
    options = parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=options.log_level,
        format="%(asctime)s %(levelname)s [%(threadName)s] %(message)s",
    )
    if options.keys is not None:
        missing = [
            n
            for n in ("agent.crt", "agent.key", "viewer.token", "operator.token")
            if not (options.keys / n).is_file()
        ]
        if missing:
            log.error("%s lacks %s", options.keys, ", ".join(missing))
            return 2
    service = DemoService(options)
    try:
        return asyncio.run(service.run())
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were installed
        return 0


if __name__ == "__main__":
    sys.exit(main())
