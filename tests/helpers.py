"""Test helpers: run real host processes and wait on real conditions (no fixed sleeps)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def wait_until(check: Callable[[], T], timeout: float = 15.0, message: str = "") -> T:
    """Poll ``check`` until it returns something truthy; fail with ``message`` on timeout."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # the condition may not be checkable yet
            last_exc = exc
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {message or check}: last error {last_exc!r}")


def freeze(pid: int) -> None:
    """SIGSTOP ``pid`` and wait until the kernel shows it stopped: kill() only queues the
    signal, and on a busy machine a thread of it may still answer a request or two."""
    import psutil

    os.kill(pid, signal.SIGSTOP)
    wait_until(
        lambda: psutil.Process(pid).status() == psutil.STATUS_STOPPED,
        message=f"pid {pid} stopped",
    )


class LoopThread:
    """A real event loop in its own thread, driven with run_coroutine_threadsafe (for the
    in-process tests of the agent's task probes)."""

    def __init__(self, name: str = "test-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name)
        self.thread.start()

    def run(self, make: Callable[[], Any], timeout: float = 30.0) -> Any:
        """Run ``make()`` (a coroutine factory) on the loop and return its result."""

        async def call() -> Any:
            return await make()

        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(timeout)

    def stop(self) -> None:
        """Cancel every task left, stop and close the loop, join the thread."""

        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.run(cancel_all)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class HostProcess:
    """A real subprocess whose stdout lines are collected for the test to wait on."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        full_env = dict(os.environ, PYTHONUNBUFFERED="1")
        full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
        if env:
            full_env.update(env)
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=full_env,
            stdin=subprocess.PIPE,  # hosts that read commands get them via send()
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.stderr: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        self._cond = threading.Condition()
        threading.Thread(target=self._pump, args=(self.proc.stdout, True), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, False), daemon=True).start()

    def _pump(self, stream: Any, is_stdout: bool) -> None:
        with stream:  # closed at EOF: an unclosed pipe is a ResourceWarning from 3.14 on
            for line in stream:
                with self._cond:
                    (self.lines if is_stdout else self.stderr).append(line.rstrip("\n"))
                    self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_line(self, pattern: str, timeout: float = 20.0, start: int = 0) -> re.Match[str]:
        """Wait for a stdout line (from index ``start``) matching ``pattern``."""
        return self._wait(pattern, timeout, start)[1]

    def wait_line_index(self, pattern: str, timeout: float = 20.0, start: int = 0) -> int:
        """Like wait_line, but the matching line's index (to wait for the next one after it)."""
        return self._wait(pattern, timeout, start)[0]

    def _wait(self, pattern: str, timeout: float, start: int) -> tuple[int, re.Match[str]]:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for index in range(start, len(self.lines)):
                    match = regex.search(self.lines[index])
                    if match:
                        return index, match
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not self._more()):
                    raise AssertionError(
                        f"no line matching {pattern!r}; stdout={self.lines[-20:]} "
                        f"stderr={self.stderr[-20:]}"
                    )
                self._cond.wait(min(remaining, 0.5))

    def _more(self) -> bool:
        return False

    def send(self, command: str) -> None:
        """Write one command line to the host's stdin."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def mark(self) -> int:
        """Index to pass as ``start`` to only see lines printed after now."""
        with self._cond:
            return len(self.lines)

    def stop(self) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start_test_host(keys: Path, *args: str, env: dict[str, str] | None = None) -> HostProcess:
    """Start tests/hosts/app.py and wait until its agent and echo server listen."""
    host = HostProcess([sys.executable, "-m", "tests.hosts.app", str(keys), *args], env=env)
    host.wait_line(r"^echo: ")
    return host


def line_value(host: HostProcess, key: str) -> str:
    return host.wait_line(rf"^{key}: (\S+)").group(1)


def echo_ok(address: str) -> bool:
    """True if the host's echo server answers: the host is still serving."""
    hostname, port = address.rsplit(":", 1)
    with socket.create_connection((hostname, int(port)), timeout=5) as sock:
        sock.sendall(b"ping\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(100)
            if not chunk:
                break
            data += chunk
    return data == b"pong ping\n"


@dataclass
class Leaky:
    process: HostProcess
    address: str
    echo: str
    file: str
    keys: Any

    def connect(self, role: str = "operator") -> Any:
        from observer.client import connect

        token = self.keys.operator_token if role == "operator" else self.keys.viewer_token
        return connect(self.address, token_file=token, fingerprint=self.keys.fingerprint)

    def creds(self, role: str = "operator") -> list[str]:
        token = self.keys.operator_token if role == "operator" else self.keys.viewer_token
        return ["--token-file", str(token), "--fingerprint", self.keys.fingerprint]

    def pause(self) -> dict[str, int]:
        """Stop leaking; the host's exact totals at that moment."""
        mark = self.process.mark()
        self.process.send("pause")
        line = self.process.wait_line(r"^event: paused (.*)", start=mark).group(1)
        return {k: int(v) for k, v in (word.split("=") for word in line.split())}

    def leak_for(self, ticks: int) -> None:
        """Let it leak for at least ``ticks`` more ticks (waits on the host's own reports)."""
        mark = self.process.mark()
        self.process.send("resume")
        self.process.wait_line(r"^event: resumed", start=mark)
        for _ in range(max(1, ticks // 25) + 1):
            mark = self.process.wait_line_index(r"^event: leaked ticks=", start=mark) + 1

    def line_of(self, marker: str) -> int:
        with open(self.file) as fh:
            return next(i for i, text in enumerate(fh, 1) if f"# {marker}" in text)


def start_leaky(keys: Any) -> Leaky:
    """Start tests/hosts/leaky.py (a host leaking on purpose) and wait until it serves."""
    proc = HostProcess([sys.executable, "-m", "tests.hosts.leaky", str(keys.directory)])
    proc.wait_line(r"^echo: ")
    return Leaky(
        proc, line_value(proc, "agent"), line_value(proc, "echo"), line_value(proc, "file"), keys
    )


def node_spec(address: str, keys: Any, token: str = "operator", **kw: Any) -> Any:
    """A NodeSpec for ``address`` with the test's fingerprint and the ``token`` role's
    token file (``role=`` in ``kw`` is what the nodes file asks the agent for)."""
    from observer.nodesfile import NodeSpec

    path = keys.operator_token if token == "operator" else keys.viewer_token
    return NodeSpec(address=address, token_file=str(path), fingerprint=keys.fingerprint, **kw)


class Agents:
    """Test hosts on chosen loopback addresses; never left frozen, stopped at the end."""

    def __init__(self, keys: Any) -> None:
        self.keys = keys
        self.hosts: list[HostProcess] = []

    def start(self, bind: str = "127.0.0.1:0", name: str = "test-host") -> tuple[HostProcess, str]:
        host = start_test_host(self.keys.directory, "--bind", bind, "--name", name)
        self.hosts.append(host)
        return host, line_value(host, "agent")

    def stop(self) -> None:
        for host in self.hosts:
            with contextlib.suppress(ProcessLookupError):  # SIGSTOPped by a test
                os.kill(host.proc.pid, signal.SIGCONT)
            host.stop()
