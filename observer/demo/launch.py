"""Start the demo service as a subprocess: for ``observer demo``, tests and benchmarks.

Importable without ``cryptography``: it is imported only when demo keys must be generated.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any

from observer.keygen import KeyMaterial, generate, load

READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
TAIL_LINES = 200
PROJECT_ROOT = Path(__file__).resolve().parents[2]


class DemoError(RuntimeError):
    """The demo service could not be started (the message carries its stderr tail)."""


def default_keys_dir() -> Path:
    """Return ``$XDG_CONFIG_HOME/runtime-observer/demo-keys`` (``~/.config`` by default)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "runtime-observer" / "demo-keys"


def ensure_keys(directory: Path) -> KeyMaterial:
    """Reuse the demo keys in ``directory``, generating them when any file is missing."""
    return load(directory) or generate(directory, overwrite=True)


def service_env() -> dict[str, str]:
    """Return our environment with this checkout on PYTHONPATH, so ``-m observer...`` works."""
    env = dict(os.environ)
    paths = [str(PROJECT_ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


def _pump_stdout(stream: IO[bytes], lines: queue.Queue[str | None]) -> None:
    """Forward stdout lines to ``lines``; None marks EOF (the service is gone)."""
    with stream:
        for raw in iter(stream.readline, b""):
            lines.put(raw.decode(errors="replace").rstrip("\r\n"))
    lines.put(None)


def _pump_stderr(stream: IO[bytes], tail: deque[str], echo: bool) -> None:
    """Drain stderr so the service never blocks on it, keeping a tail and maybe echoing it."""
    with stream:
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace").rstrip("\r\n")
            tail.append(line)
            if echo:
                print(line, file=sys.stderr, flush=True)


@dataclass
class DemoProcess:
    """A running demo service and the addresses it announced."""

    proc: subprocess.Popen[bytes]
    agent_address: str
    http_address: str
    keys_dir: Path | None = None
    log_path: Path | None = None
    _stderr_tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))
    _stderr_thread: threading.Thread | None = None

    @property
    def pid(self) -> int:
        """Return the service's pid."""
        return self.proc.pid

    @property
    def http_url(self) -> str:
        """Return the base URL of the service's HTTP server."""
        return f"http://{self.http_address}/"

    def stderr_tail(self, lines: int = 40) -> str:
        """Return the last ``lines`` lines the service logged."""
        if self.log_path is not None:
            with contextlib.suppress(OSError):
                return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
            return ""
        return "\n".join(list(self._stderr_tail)[-lines:])

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM the service, wait up to ``timeout`` s, then SIGKILL; return its exit status."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._stderr_thread is not None:
            self._stderr_thread.join(timeout=2.0)
        return self.proc.returncode

    def __enter__(self) -> DemoProcess:
        """Use as a context manager that stops the service on exit."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the service."""
        self.stop()


def start_service(
    keys_dir: Path | None,
    extra_args: Sequence[str] = (),
    *,
    timeout: float = READY_TIMEOUT,
    echo_stderr: bool = False,
    log_path: Path | None = None,
    detach: bool = False,
    python: str = sys.executable,
) -> DemoProcess:
    """Start ``python -m observer.demo.service`` and wait for its ``agent:``/``http:`` lines.

    ``keys_dir`` None runs the agent without TLS or tokens (loopback only). ``log_path``
    sends the service's stderr to a file instead of a pipe; ``detach`` puts it in its own
    session so it outlives a Ctrl-C in our terminal. Raises :class:`DemoError` when the
    service dies or stays silent for ``timeout`` seconds.
    """
    cmd = [python, "-m", "observer.demo.service", "--bind", "127.0.0.1:0"]
    if keys_dir is not None:
        cmd += ["--keys", str(keys_dir)]
    cmd += list(extra_args)
    log_file = open(log_path, "ab") if log_path is not None else None  # noqa: SIM115
    try:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log_file if log_file is not None else subprocess.PIPE,
            env=service_env(),
            start_new_session=detach,
        )
    finally:
        if log_file is not None:
            log_file.close()
    demo = DemoProcess(proc, "", "", keys_dir=keys_dir, log_path=log_path)
    if proc.stderr is not None:
        demo._stderr_thread = threading.Thread(
            target=_pump_stderr,
            args=(proc.stderr, demo._stderr_tail, echo_stderr),
            name="demo-stderr",
            daemon=True,
        )
        demo._stderr_thread.start()
    lines: queue.Queue[str | None] = queue.Queue()
    assert proc.stdout is not None
    threading.Thread(
        target=_pump_stdout, args=(proc.stdout, lines), name="demo-stdout", daemon=True
    ).start()

    found: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while len(found) < 2:
        try:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.0))
        except queue.Empty:
            demo.stop()
            raise DemoError(
                f"demo service did not report its addresses within {timeout:.0f}s\n"
                + demo.stderr_tail()
            ) from None
        if line is None:
            code = demo.stop()
            raise DemoError(
                f"demo service exited with status {code} before it was ready\n" + demo.stderr_tail()
            )
        key, sep, value = line.partition(":")
        if sep and key in ("agent", "http"):
            found[key] = value.strip()
    demo.agent_address = found["agent"]
    demo.http_address = found["http"]
    return demo


def connect_help(demo: DemoProcess, keys: KeyMaterial) -> str:
    """Return the ready message with copy-pasteable CLI commands."""
    conn = (
        f"{demo.agent_address} --token-file {shlex.quote(str(keys.operator_token))}"
        f" --fingerprint {keys.fingerprint}"
    )
    return "\n".join(
        [
            f"demo service running: agent {demo.agent_address}, http {demo.http_url}"
            f" (pid {demo.pid})",
            f"  observer ps {conn}",
            f"  observer tree {conn}",
            f"  observer stack {conn} ID",
            f"  observer kill {conn} ID",
            f"  observer ps {conn} --process all    # the master and its pool workers",
            f"  observer chaos {conn} --kind process --match 'http-worker-*' --action kill",
            f"  observer stalls {conn}    # a report export blocks the loop once a minute",
            f"  curl {demo.http_url}export    # ... or now",
            f"  (read-only: --token-file {shlex.quote(str(keys.viewer_token))})",
        ]
    )


def run(args: argparse.Namespace) -> int:
    """The ``observer demo`` command: keys, start the service, explain, wait for Ctrl-C."""
    keys_arg = getattr(args, "keys", None)
    keys_dir = Path(keys_arg).expanduser() if keys_arg else default_keys_dir()
    no_wait = bool(getattr(args, "no_wait", False))
    try:
        keys = ensure_keys(keys_dir)
    except ImportError as exc:
        print(
            f"observer demo: generating demo keys needs 'cryptography' ({exc}); "
            "install runtime-observer[observer]",
            file=sys.stderr,
        )
        return 1
    except (OSError, ValueError) as exc:
        print(f"observer demo: cannot prepare keys in {keys_dir}: {exc}", file=sys.stderr)
        return 1
    log_path = keys_dir / "demo.log" if no_wait else None
    try:
        demo = start_service(keys_dir, echo_stderr=not no_wait, log_path=log_path, detach=no_wait)
    except (DemoError, OSError) as exc:
        print(f"observer demo: {exc}", file=sys.stderr)
        return 1
    print(connect_help(demo, keys))
    if no_wait:
        print(f"stop it with: kill {demo.pid}   (logs: {log_path})", flush=True)
        return 0
    if not getattr(args, "no_gui", False):
        code = _open_window(demo, keys)
        if code is not None:
            return code
    print("Ctrl-C stops it.", flush=True)
    previous = _interrupt_on_terminate()
    try:
        code = demo.proc.wait()
    except KeyboardInterrupt:
        print("\nstopping the demo service...", file=sys.stderr, flush=True)
        try:
            demo.stop()
        except KeyboardInterrupt:
            demo.proc.kill()
            demo.proc.wait()
        return 0
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    print(f"demo service exited with status {code}", file=sys.stderr)
    return 0 if code == 0 else 1


def _open_window(demo: DemoProcess, keys: KeyMaterial) -> int | None:
    """Show the observer window on the demo; stop the demo when it closes.

    Returns None when no window can open here: the reason has been printed and the
    caller keeps the service running for the CLI instead.
    """
    try:
        from observer.gui.qtcheck import window_problem
    except ImportError:
        return None
    problem = window_problem()
    if problem:
        print(f"observer demo: {problem}", file=sys.stderr, flush=True)
        return None
    from observer.gui.app import run_window
    from observer.nodesfile import NodeSpec, default_nodes_path

    spec = NodeSpec(
        address=demo.agent_address,
        name="demo",
        token_file=str(keys.operator_token),
        fingerprint=keys.fingerprint,
    )
    print("opening the observer window; closing it stops the demo.", flush=True)
    try:
        code = run_window([spec], nodes_file=default_nodes_path(), tab="processes")
    except KeyboardInterrupt:
        code = 0
    finally:
        demo.stop()
    return code


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    """Treat SIGTERM/SIGHUP like Ctrl-C, so the service is stopped rather than orphaned."""
    raise KeyboardInterrupt


def _interrupt_on_terminate() -> dict[int, Any]:
    """Install :func:`_raise_interrupt` for SIGTERM/SIGHUP; return the previous handlers."""
    previous: dict[int, Any] = {}
    if threading.current_thread() is not threading.main_thread():
        return previous
    for signum in (signal.SIGTERM, signal.SIGHUP):
        previous[signum] = signal.signal(signum, _raise_interrupt)
    return previous
