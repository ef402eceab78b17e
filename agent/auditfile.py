"""An append-only JSON-lines copy of the audit, so the trail outlives a restart.

The file is the operator's choice (``audit_file=`` / OBSERVER_AGENT_AUDIT_FILE). It is
opened with O_APPEND|O_NOFOLLOW, created 0600 and refused at start when it is not a
regular file owned by this user with no group/other permission bits: a trail others can
write (or read) is not a trail. It is rotated by size (``path.1`` .. ``path.N``).

Writing never blocks or breaks the host: records go through a bounded queue to one
writer thread; when the queue is full or the disk fails, records are dropped, counted
and the trouble is logged once (and once more when writing works again).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import stat
import threading
import time
from collections.abc import Callable
from typing import Any

from agent.security import ConfigError

log = logging.getLogger("agent.audit")

MAX_BYTES = 10 * 1024 * 1024
KEEP = 3
QUEUE = 10_000
RETRY = 5.0  # seconds between attempts to reopen a file that failed
_STOP = object()
_FLAGS = (
    os.O_WRONLY
    | os.O_APPEND
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)


def open_audit_file(path: str, *, create_new: bool = False) -> int:
    """An O_APPEND descriptor on ``path`` after checking it is ours alone; ConfigError if not."""
    flags = _FLAGS | os.O_CREAT | (os.O_EXCL if create_new else 0)
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        if os.path.islink(path):
            raise ConfigError(f"audit file {path} is a symbolic link: refusing it") from exc
        raise ConfigError(f"cannot open audit file {path}: {exc.strerror or exc}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"audit file {path} is not a regular file")
        if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
            raise ConfigError(f"audit file {path} belongs to uid {st.st_uid}, not this user")
        if os.name == "posix" and st.st_mode & 0o077:
            raise ConfigError(
                f"audit file {path} has mode {stat.S_IMODE(st.st_mode):04o}: others may read "
                f"or change the trail; `chmod 600 {path}` or name a new file"
            )
    except BaseException:
        os.close(fd)
        raise
    return fd


class AuditFile:
    """One writer thread appending queued records to a size-rotated JSON-lines file."""

    def __init__(
        self,
        path: str,
        *,
        max_bytes: int = MAX_BYTES,
        keep: int = KEEP,
        on_thread: Callable[[int], None] | None = None,
    ) -> None:
        self.path = os.path.abspath(path)
        self.max_bytes = max(1024, max_bytes)
        self.keep = max(1, keep)
        self._fd: int | None = open_audit_file(self.path)
        self._size = os.fstat(self._fd).st_size
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=QUEUE)
        self._on_thread = on_thread
        self._failing = False  # logged once; logged again when writing works again
        self._failed_at = 0.0
        self.dropped = 0
        self._closed = False
        self._thread = threading.Thread(
            target=self._run, name="observer-agent-audit-file", daemon=True
        )
        self._thread.start()

    # ------------------------------------------------------------ any thread

    def write(self, entry: dict[str, Any], wait: float = 0.0) -> None:
        """Queue one record and wait at most ``wait`` seconds for the writer to append it;
        never raises, never blocks longer (a full queue drops the record)."""
        if self._closed:
            return
        done = threading.Event() if wait > 0 else None
        try:
            self._queue.put_nowait((entry, done))
        except queue.Full:
            self._drop("the writer is behind (disk slow or full)")
            return
        if done is not None:
            done.wait(wait)

    def close(self, timeout: float = 2.0) -> None:
        """Write what is queued (waiting at most ``timeout``), then close the file."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(queue.Full):
            self._queue.put(_STOP, timeout=timeout)
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    # ------------------------------------------------------------ writer thread

    def _run(self) -> None:
        if self._on_thread is not None:
            with contextlib.suppress(Exception):
                self._on_thread(threading.get_ident())
        while True:
            item = self._queue.get()
            if item is _STOP:
                break
            entry, done = item
            try:
                self._append(entry)
            except Exception as exc:  # contained: the host never sees the audit file fail
                self._fail(exc)
            if done is not None:
                done.set()
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def _append(self, entry: dict[str, Any]) -> None:
        data = (json.dumps(entry, ensure_ascii=True, separators=(",", ":")) + "\n").encode()
        if self._fd is None:
            if time.monotonic() - self._failed_at < RETRY:
                self._drop("the file could not be written")
                return
            self._fd = open_audit_file(self.path)
            self._size = os.fstat(self._fd).st_size
        if self._size and self._size + len(data) > self.max_bytes:
            self._rotate()
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self._size += len(data)
        if self._failing:
            self._failing = False
            log.warning(
                "runtime-observer agent: audit file %s is written again (%d records lost)",
                self.path,
                self.dropped,
            )

    def _rotate(self) -> None:
        """path -> path.1 -> ... -> path.N (the oldest is dropped); a fresh path is made."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        for index in range(self.keep - 1, 0, -1):
            older = f"{self.path}.{index}"
            if os.path.lexists(older):
                os.replace(older, f"{self.path}.{index + 1}")
        os.replace(self.path, f"{self.path}.1")
        self._fd = open_audit_file(self.path, create_new=True)
        self._size = 0

    def _fail(self, exc: BaseException) -> None:
        self.dropped += 1
        self._failed_at = time.monotonic()
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        if not self._failing:
            self._failing = True
            log.warning(
                "runtime-observer agent: cannot write audit file %s: %s (records are dropped "
                "until it works again; the in-memory audit is unaffected)",
                self.path,
                exc,
            )

    def _drop(self, why: str) -> None:
        self.dropped += 1
        if not self._failing:
            self._failing = True
            log.warning(
                "runtime-observer agent: audit file %s: %s; dropping records",
                self.path,
                why,
            )
