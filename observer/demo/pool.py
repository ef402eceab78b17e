"""A gunicorn-style worker pool for the demo: forked processes serving one shared socket.

The master binds a listening socket, forks ``http-worker-1..N`` (multiprocessing's fork
start method, so with ``agent.start(..., workers=True)`` each gets an agent of its own,
reached through the master's port) and replaces any worker that exits with a new one in
the same slot: a new pid under the same name, as gunicorn's arbiter does. Each worker
runs its own event loop: an HTTP server on the shared socket (tasks ``http-conn-<n>``)
and a ``heartbeat`` task that ends the worker if the master is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import time
import warnings
from typing import Any

from .httpd import HttpServer, Request, Response
from .supervision import RestartIntensity

log = logging.getLogger("observer.demo")

SLOT_PREFIX = "http-worker-"
HEARTBEAT = 1.0


def _worker_main(sock: socket.socket, slot: str, master: int) -> None:
    """The body of a forked worker: forget the master's signal plumbing, serve until
    SIGTERM or until the master is gone."""
    signal.set_wakeup_fd(-1)  # the master loop's self-pipe: a signal here must not wake it
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    asyncio.run(_serve(sock, slot, master))


async def _serve(sock: socket.socket, slot: str, master: int) -> None:
    import agent

    started = time.time()
    stats: dict[str, Any] = {"slot": slot, "pid": os.getpid(), "requests": 0}
    agent.expose("worker", stats)

    async def handle(request: Request) -> Response:
        stats["requests"] += 1
        if request.path == "/work":
            await asyncio.sleep(0.01)
        return Response.json(
            {"pid": os.getpid(), "worker": slot, "uptime_s": round(time.time() - started, 1)}
        )

    http = HttpServer("", 0, handle, sock=sock)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    serving = asyncio.create_task(http.serve(), name="http-server")
    beat = asyncio.create_task(_heartbeat(master, stop), name="heartbeat")
    await stop.wait()
    for task in (serving, beat):
        task.cancel()
    await asyncio.gather(serving, beat, return_exceptions=True)


async def _heartbeat(master: int, stop: asyncio.Event) -> None:
    """End the worker once its master died (it was handed to another parent)."""
    while os.getppid() == master:
        await asyncio.sleep(HEARTBEAT)
    log.warning("worker %d: the master is gone; exiting", os.getpid())
    stop.set()


class WorkerPool:
    """``size`` forked HTTP workers on one socket, each replaced when it exits."""

    def __init__(self, size: int, host: str = "127.0.0.1", port: int = 0) -> None:
        self.size = size
        self.host, self.port = host, port
        self.intensity = RestartIntensity()
        self.procs: dict[str, multiprocessing.process.BaseProcess] = {}
        self.started = asyncio.Event()
        self._sock: socket.socket | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def restarts(self) -> int:
        return self.intensity.total

    def bind(self) -> None:
        """Listen now (before any worker forks, so every worker accepts on it)."""
        sock = socket.create_server((self.host, self.port), backlog=128)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        self._sock = sock

    def pids(self) -> dict[str, int]:
        return {n: p.pid for n, p in self.procs.items() if p.pid and p.exitcode is None}

    def _spawn(self, slot: str) -> multiprocessing.process.BaseProcess:
        assert self._sock is not None
        proc = multiprocessing.get_context("fork").Process(
            target=_worker_main, args=(self._sock, slot, os.getpid()), name=slot, daemon=True
        )
        with warnings.catch_warnings():  # 3.12+: "multi-threaded, fork() may deadlock":
            warnings.simplefilter("ignore", DeprecationWarning)  # the child starts afresh
            proc.start()
        self.procs[slot] = proc
        log.info("worker-pool: started %s (pid %s)", slot, proc.pid)
        return proc

    async def run(self) -> None:
        """Start the workers and replace any that exits, until cancelled; then stop them."""
        if self._sock is None:
            self.bind()
        loop = asyncio.get_running_loop()
        exited: asyncio.Queue[str] = asyncio.Queue()

        def watch(slot: str) -> None:
            proc = self._spawn(slot)
            loop.add_reader(proc.sentinel, self._on_exit, proc, slot, exited)

        try:
            for k in range(1, self.size + 1):
                watch(f"{SLOT_PREFIX}{k}")
            self.started.set()
            while True:
                slot = await exited.get()
                delay = self.intensity.admit()
                log.info(
                    "worker-pool: %s exited with code %s; replacing it (restart #%d)",
                    slot,
                    self.procs[slot].exitcode,
                    self.intensity.total,
                )
                if delay:
                    await asyncio.sleep(delay)
                watch(slot)
        finally:
            await asyncio.to_thread(self.stop_all)

    def _on_exit(
        self,
        proc: multiprocessing.process.BaseProcess,
        slot: str,
        exited: asyncio.Queue[str],
    ) -> None:
        asyncio.get_running_loop().remove_reader(proc.sentinel)
        # reap it: the sentinel fires when the child's descriptors close, a moment before
        # it is a zombie, and join(0) then (waitpid WNOHANG) left about one in seven
        # killed workers unreaped for good; with a timeout join waits in waitpid, which
        # returns as soon as the exit completes
        proc.join(1.0)
        exited.put_nowait(slot)

    def stop_all(self, timeout: float = 5.0) -> None:
        """SIGTERM every worker, wait, SIGKILL the stragglers; close the socket."""
        live = [p for p in self.procs.values() if p.exitcode is None]
        for proc in live:
            with contextlib.suppress(OSError, ValueError):
                proc.terminate()
        deadline = time.monotonic() + timeout
        for proc in live:
            proc.join(max(deadline - time.monotonic(), 0.0))
            if proc.exitcode is None:
                proc.kill()
                proc.join()
        if self._sock is not None:
            self._sock.close()
