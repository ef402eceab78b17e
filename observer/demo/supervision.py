"""Erlang-style one-for-one supervisors for asyncio tasks, threads and child processes."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

log = logging.getLogger("observer.demo")

TaskFactory = Callable[[], Coroutine[Any, Any, None]]

MAX_RESTARTS = 20
RESTART_PERIOD = 10.0


class RestartIntensity:
    """Erlang's restart intensity: at most ``max_restarts`` per ``period`` seconds, then wait."""

    def __init__(self, max_restarts: int = MAX_RESTARTS, period: float = RESTART_PERIOD) -> None:
        """Start with an empty restart history."""
        self.max_restarts = max_restarts
        self.period = period
        self.total = 0
        self._times: deque[float] = deque()
        self._lock = threading.Lock()

    def admit(self) -> float:
        """Record one restart; return how long to wait before doing it (0 within the budget)."""
        with self._lock:
            now = time.monotonic()
            while self._times and now - self._times[0] >= self.period:
                self._times.popleft()
            delay = 0.0
            if len(self._times) >= self.max_restarts:
                delay = max(self._times[0] + self.period - now, 0.0)
            self._times.append(now + delay)
            self.total += 1
            return delay


def _exit_reason(task: asyncio.Task[Any]) -> str:
    """Describe how a finished task ended, retrieving its exception so asyncio does not warn."""
    if task.cancelled():
        return "was cancelled"
    exc = task.exception()
    if exc is None:
        return "returned"
    log.warning("task %s crashed", task.get_name(), exc_info=exc)
    return f"crashed with {exc!r}"


class TaskSupervisor:
    """One-for-one supervisor: restart any child task that ends, under the same name."""

    def __init__(
        self,
        name: str,
        children: Sequence[tuple[str, TaskFactory]],
        *,
        intensity: RestartIntensity | None = None,
        shutdown_timeout: float = 5.0,
    ) -> None:
        """Remember the child specs (name, coroutine factory) in start order."""
        self.name = name
        self._factories: dict[str, TaskFactory] = dict(children)
        self.intensity = intensity or RestartIntensity()
        self.shutdown_timeout = shutdown_timeout
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.started = asyncio.Event()

    @property
    def restarts(self) -> int:
        """Return how many restarts this supervisor has done."""
        return self.intensity.total

    def children(self) -> dict[str, asyncio.Task[None]]:
        """Return the current task of each child, by name."""
        return dict(self._tasks)

    def _spawn(self, name: str) -> None:
        """Start (or restart) the child called ``name`` as a task with that name."""
        self._tasks[name] = asyncio.create_task(self._factories[name](), name=name)

    def start(self) -> None:
        """Start every child, in order."""
        for name in self._factories:
            self._spawn(name)
        self.started.set()

    async def supervise(self) -> None:
        """Wait for any child to end, then restart it; never returns on its own."""
        if not self._tasks:
            await asyncio.get_running_loop().create_future()
        while True:
            done, _ = await asyncio.wait(
                set(self._tasks.values()), return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                name = next(n for n, t in self._tasks.items() if t is task)
                reason = _exit_reason(task)
                delay = self.intensity.admit()
                log.info(
                    "%s: %s %s; restarting it (restart #%d)",
                    self.name,
                    name,
                    reason,
                    self.intensity.total,
                )
                if delay:
                    log.warning("%s: restart intensity exceeded, waiting %.1fs", self.name, delay)
                    await asyncio.sleep(delay)
                self._spawn(name)

    async def shutdown(self) -> None:
        """Cancel the children in reverse start order, waiting for each, like Erlang does."""
        order = [self._tasks[n] for n in reversed(self._factories) if n in self._tasks]
        try:
            for task in order:
                task.cancel()
                await asyncio.wait({task}, timeout=self.shutdown_timeout)
        finally:
            for task in order:
                task.cancel()
                if task.done() and not task.cancelled():
                    task.exception()
            self._tasks.clear()

    async def run(self) -> None:
        """Start the children and supervise them until cancelled, then shut them down."""
        self.start()
        try:
            await self.supervise()
        finally:
            await self.shutdown()


class SupervisedThread(threading.Thread):
    """A daemon thread that records why its target ended instead of printing a traceback."""

    def __init__(self, name: str, target: Callable[[], None]) -> None:
        """Prepare (not start) a thread running ``target`` under ``name``."""
        super().__init__(name=name, daemon=True)
        self._work = target
        self.error: BaseException | None = None

    def run(self) -> None:
        """Run the target, keeping any exception (even SystemExit raised into us) for later."""
        try:
            self._work()
        except BaseException as exc:
            self.error = exc
            log.warning("thread %s died", self.name, exc_info=exc)


class ThreadSupervisor:
    """A thread that runs one named worker thread and restarts it, same name, whenever it dies."""

    def __init__(
        self,
        child_name: str,
        target: Callable[[threading.Event], None],
        *,
        name: str = "thread-supervisor",
        intensity: RestartIntensity | None = None,
    ) -> None:
        """Remember what to run; ``target`` gets the stop event and must return once it is set."""
        self.name = name
        self.child_name = child_name
        self._target = target
        self.intensity = intensity or RestartIntensity()
        self.stop_event = threading.Event()
        self.child: SupervisedThread | None = None
        self._thread: threading.Thread | None = None

    @property
    def restarts(self) -> int:
        """Return how many times the child thread was restarted."""
        return self.intensity.total

    def start(self) -> None:
        """Start the supervisor thread, which starts the child."""
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def _spawn(self) -> SupervisedThread:
        """Start a fresh child thread."""
        child = SupervisedThread(self.child_name, functools.partial(self._target, self.stop_event))
        self.child = child
        child.start()
        return child

    def _run(self) -> None:
        """Join the child; when it dies before we are stopped, log it and start a new one."""
        child = self._spawn()
        while True:
            child.join()
            if self.stop_event.is_set():
                return
            reason = f"died with {child.error!r}" if child.error is not None else "exited"
            delay = self.intensity.admit()
            log.info(
                "%s: %s %s; restarting it (restart #%d)",
                self.name,
                self.child_name,
                reason,
                self.intensity.total,
            )
            if delay and self.stop_event.wait(delay):
                return
            child = self._spawn()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the child to finish and wait for both threads."""
        self.stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.child is not None:
            self.child.join(timeout)


def _pidfd_open(pid: int) -> int | None:
    """Return a pidfd for ``pid`` (Linux >= 5.3), or None where unsupported."""
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None:
        return None
    try:
        return pidfd_open(pid)
    except OSError:
        return None


def _settle(fut: asyncio.Future[int], returncode: int) -> None:
    """Resolve an exit future unless it was cancelled meanwhile."""
    if not fut.done():
        fut.set_result(returncode)


def watch_exit(proc: subprocess.Popen[bytes], name: str) -> asyncio.Future[int]:
    """Return a future resolved with the exit code of ``proc``, without polling.

    Uses a pidfd on the event loop where available, else one waiting thread per process.
    """
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[int] = loop.create_future()
    pidfd = _pidfd_open(proc.pid)
    if pidfd is not None:
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                loop.remove_reader(pidfd)
                os.close(pidfd)

        def on_exit() -> None:
            release()
            _settle(fut, proc.wait())

        loop.add_reader(pidfd, on_exit)
        fut.add_done_callback(lambda _f: release())
        return fut

    def wait_in_thread() -> None:
        returncode = proc.wait()
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            loop.call_soon_threadsafe(_settle, fut, returncode)

    threading.Thread(target=wait_in_thread, name=f"waitpid-{name}", daemon=True).start()
    return fut


def _send(proc: subprocess.Popen[bytes], sig: int) -> None:
    """Signal ``proc`` unless it has already been reaped."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)


class ChildSupervisor:
    """Keep named child processes alive: restart any that exits, with a new pid, same name."""

    def __init__(
        self,
        names: Sequence[str],
        command: Callable[[str], list[str]],
        *,
        env: Mapping[str, str] | None = None,
        name: str = "child-supervisor",
        intensity: RestartIntensity | None = None,
        stop_timeout: float = 5.0,
    ) -> None:
        """Remember the children's names and how to build the command line for one of them."""
        self.name = name
        self.names = list(names)
        self._command = command
        self._env = dict(env) if env is not None else None
        self.intensity = intensity or RestartIntensity()
        self.stop_timeout = stop_timeout
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.started = asyncio.Event()

    @property
    def restarts(self) -> int:
        """Return how many children were restarted."""
        return self.intensity.total

    def pids(self) -> dict[str, int]:
        """Return the pid of each live child, by name."""
        return {n: p.pid for n, p in self.procs.items() if p.returncode is None}

    def _spawn(self, name: str) -> asyncio.Future[int]:
        """Start the child called ``name`` and return its exit future."""
        proc = subprocess.Popen(
            self._command(name),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            env=self._env,
            close_fds=True,
            start_new_session=True,  # the terminal's Ctrl-C goes to us; we stop the children
        )
        self.procs[name] = proc
        log.info("%s: started %s (pid %d)", self.name, name, proc.pid)
        return watch_exit(proc, name)

    async def run(self) -> None:
        """Start the children and restart any that exits, until cancelled; then stop them all."""
        waits: dict[asyncio.Future[int], str] = {}
        try:
            for name in self.names:
                waits[self._spawn(name)] = name
            self.started.set()
            if not waits:
                await asyncio.get_running_loop().create_future()
            while True:
                done, _ = await asyncio.wait(set(waits), return_when=asyncio.FIRST_COMPLETED)
                for fut in done:
                    name = waits.pop(fut)
                    pid = self.procs[name].pid
                    delay = self.intensity.admit()
                    log.info(
                        "%s: %s (pid %d) exited with code %s; restarting it (restart #%d)",
                        self.name,
                        name,
                        pid,
                        fut.result(),
                        self.intensity.total,
                    )
                    if delay:
                        log.warning(
                            "%s: restart intensity exceeded, waiting %.1fs", self.name, delay
                        )
                        await asyncio.sleep(delay)
                    waits[self._spawn(name)] = name
        finally:
            await self._stop_all(waits)

    async def _stop_all(self, waits: dict[asyncio.Future[int], str]) -> None:
        """SIGTERM every live child, wait for them, SIGKILL the stragglers."""
        pending = {fut for fut in waits if not fut.done()}
        for fut in pending:
            _send(self.procs[waits[fut]], signal.SIGTERM)
        try:
            if pending:
                _, pending = await asyncio.wait(pending, timeout=self.stop_timeout)
            for fut in pending:
                log.warning("%s: %s ignored SIGTERM; killing it", self.name, waits[fut])
                _send(self.procs[waits[fut]], signal.SIGKILL)
            if pending:
                _, pending = await asyncio.wait(pending, timeout=self.stop_timeout)
        finally:
            for fut in waits:
                fut.cancel()

    def kill_remaining(self, timeout: float = 5.0) -> None:
        """Synchronous last resort at exit: terminate, then kill, any child still alive."""
        live = [p for p in self.procs.values() if p.poll() is None]
        for proc in live:
            _send(proc, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in live:
            try:
                proc.wait(max(deadline - time.monotonic(), 0.0))
            except subprocess.TimeoutExpired:
                _send(proc, signal.SIGKILL)
                proc.wait()
