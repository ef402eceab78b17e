"""DNS names in the window, resolved on one background thread (getaddrinfo can block).

Each name the user gave (``api.internal:7330``) has its own ``observer.resolve.Roster``;
every roster is touched only by the resolver's single worker thread, so adding, removing
and re-resolving names never race. What a round found is handed to the GUI thread as a
``Change`` through a queued signal. A name that was removed (or replaced by an edit)
while one of its rounds was in flight is ignored when that round's answer arrives, so a
stale answer never brings back nodes the user just removed.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from PyQt6.QtCore import QObject, pyqtSignal

from observer.nodesfile import NodeSpec
from observer.resolve import Change, Roster

log = logging.getLogger(__name__)


class Resolver(QObject):
    """The window's DNS names and the nodes each stands for."""

    changed = pyqtSignal(str, object)  # (the name's address, Change), on the GUI thread
    _answered = pyqtSignal(str, int, object)  # (address, generation, Change) from the worker

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._rosters: dict[str, tuple[int, Roster]] = {}  # worker thread only
        self._current: dict[str, int] = {}  # GUI thread: each name's live generation
        self._generations = itertools.count(1)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="observer-resolve")
        self._answered.connect(self._deliver)

    @property
    def names(self) -> list[str]:
        """The names being followed (GUI thread)."""
        return list(self._current)

    def add(self, spec: NodeSpec) -> None:
        """Follow ``spec``'s name (replacing an earlier spec of that address) and resolve it."""
        generation = next(self._generations)
        self._current[spec.address] = generation
        self._submit(self._add, spec, generation)

    def remove(self, address: str) -> None:
        """Stop following a name; answers still in flight for it are dropped."""
        self._current.pop(address, None)
        self._submit(self._remove, address)

    def resolve_all(self) -> None:
        """Resolve every name again; each name's Change arrives through ``changed``."""
        if self._current:
            self._submit(self._resolve_all)

    def close(self) -> None:
        self._current.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------ worker thread

    def _submit(self, fn: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # shut down: the window is closing
            self._pool.submit(fn, *args)

    def _add(self, spec: NodeSpec, generation: int) -> None:
        roster = Roster([spec])
        self._rosters[spec.address] = (generation, roster)
        self._update(spec.address, generation, roster)

    def _remove(self, address: str) -> None:
        self._rosters.pop(address, None)

    def _resolve_all(self) -> None:
        for address, (generation, roster) in list(self._rosters.items()):
            self._update(address, generation, roster)

    def _update(self, address: str, generation: int, roster: Roster) -> None:
        try:
            change = roster.update()
        except Exception as exc:  # a bug must not kill the resolver thread
            log.exception("resolving %s failed", address)
            change = Change(errors=[f"resolving {address} failed: {exc!r}"])
        with contextlib.suppress(RuntimeError):  # the QObject is gone at exit
            self._answered.emit(address, generation, change)

    # ------------------------------------------------------------ GUI thread

    def _deliver(self, address: str, generation: int, change: Change) -> None:
        if self._current.get(address) == generation:
            self.changed.emit(address, change)
