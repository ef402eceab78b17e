"""The task table: every asyncio task's wire row, kept between passes, so a refresh costs
one cheap look at each task plus the work of what changed.

Change detection is exact and cheap: the table holds the future each suspended task waits
on (its ``_fut_waiter``). While the table holds it, no other object can take its address,
so ``task waits on the very object held`` means the task has not run a step since, and
nothing its row shows (state, await chain, location) can have moved. Tasks that ran, new
tasks, ready or running ones (no waiter), tasks awaiting a TaskGroup (its children come
and go while the owner sleeps) are walked again; of the rest, a rotating 1/ROTATE have their
name compared (set_name is the one change a sleeping task's row can see) and, as a safety
net, 1/REWALK are walked again; a walked row counts as changed only when its JSON text
differs. Holding a
waiter keeps that future (and its result) alive until the next pass looks again, or
until ``release`` (no observer for a while).

Most passes meet the very tasks the last one did. A pass first checks that (the registries
list as many as the table holds, each of them among those listed: set operations in C);
then it compares every slot's waiter with the held one in C loops, a block of slots at a
time, and walks only the tasks that moved: about half the cost of looking at each listed
task in Python. On a busy server some tasks come and go between any two passes: while
they are a few (1/NEAR of those held, each way), a near pass finds the tasks gone and the
tasks new with set operations in C, retires and adds those and looks at the rest the same
way; only a larger change makes a full pass look at each listed task in Python. From 3.14
these passes make the awaiting map only when a task moved or came (the REWALK safety net
waits for such a pass).

Each pass that changes something is a new version; an observer holding version S gets
the rows changed after S and the ids of the tasks gone since, or everything when S is
too old. Rows are cached as JSON text and handed out in chunks (see Listing).

The host's GC: per-task state lives in arrays and in lists of host objects and str; a
task is told apart from a later one at the same address by asyncio's own weak reference
to it (compat.registered_refs), not one of ours; a row's line comes from its code when
the code has one place to wait (no frame object made, see _place). So a pass leaves no
GC-tracked object per task behind, and a first listing of 100k tasks does not drive
the host's collector into a full collection. The id -> slot map is spread over many
dicts, so none grows in one long step; the GIL is handed over every few milliseconds.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import logging
import operator
import os
import random
import threading
import time
import types
import weakref
from array import array
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import compress, repeat
from json.encoder import encode_basestring_ascii
from typing import TYPE_CHECKING, Any

from agent import compat
from agent.collect.births import created
from agent.collect.frames import MAX_FRAMES as MAX_CHAIN
from agent.collect.frames import chain_step
from agent.collect.inherited import any_dead, live, live_refs
from agent.collect.pacing import hand_over, slice_end
from agent.collect.source import note_reported

if TYPE_CHECKING:
    from agent.collect.tasks import TaskRegistry

log = logging.getLogger("agent")
_ASYNCIO_DIR = os.path.dirname(asyncio.__file__) + os.sep
_MAX_AWAITED = 64
_MAX_NAME = 1000  # characters of a task name kept: a row's size stays bounded
# asyncio frames whose locals name the tasks they wait on (wait_for's fut, wait's fs, ...)
_WAITING_FRAMES = frozenset({"wait", "_wait", "wait_for", "__aexit__", "_aexit"})
_GROUP_FRAMES = frozenset({"__aexit__", "_aexit"})

ROTATE = 50  # a task that looks unchanged has its name compared at least every ROTATE passes
REWALK = 4 * ROTATE  # and is walked again at least every REWALK passes (a safety net)
SHARE_SECONDS = 0.25  # observers asking within this long of a pass share it
HOLD_SECONDS = 30.0  # waiters are let go when no pass ran for this long (see expire)
LOG_VERSIONS = 4096  # versions a delta can reach back
LOG_MIN_ENTRIES = 50_000  # changed rows + removed ids kept for deltas, at least
CHUNK_ROWS = 20_000  # rows per reply chunk
CHUNK_BYTES = 4 * 1024 * 1024  # and at most about this much row text per chunk
MAX_CODES = 20_000  # code objects whose names are cached
_GROW = 4096  # slots added at a time, at least
_GROW_MAX = 65536  # and at most: every step of the table's growth is a short one
_SHARDS = 256  # dicts the id -> slot map is spread over (_scan has it as a literal)

_FREE, _PENDING, _DONE, _CANCELLED, _UNKNOWN, _FAILED = 0, 1, 2, 3, 4, 5
_STATE_TEXT = ("", "pending", "done", "cancelled", "unknown", "failed")
_EXACT_TEXT = ("false", "true")
_CORO, _GEN, _AGEN = types.CoroutineType, types.GeneratorType, types.AsyncGeneratorType
_ALWAYS = object()  # held in place of a waiter: the task is walked on every pass
_BLOCK = 256  # slots a quick pass looks at in one go: a few C loops, ~0.03 ms quiet (a busy
# core beside it makes them several times slower, and a host request waits that long)
# Python loops check the slice's end every few tasks: as many as take ~0.1 ms quiet
_CHECK_RENDERS = 15  # rows rendered (a mask: every 16th)
_CHECK_FIRST = 3 * 64  # fresh entries between checks in _first_sight (3 per task)
_SCAN_RUN = 32  # tasks _scan looks at between checks
# a pass is a quick one also while at most 1/NEAR of the tasks held came or went since the
# last (a server's connections and requests come and go all the time; see _near_tasks)
NEAR = 8
_deref = weakref.ref.__call__  # a weak reference's referent, as map() can call it


class _Gone:
    """What _NO_TASK referred to, gone at once."""


_NO_TASK = weakref.ref(_Gone())  # a free slot's reference: answers None, as a dead one
_FUTURE = asyncio.Future  # the C future: gather() makes a subclass, shield() a plain one


def _frame_of(link: Any) -> types.FrameType | None:
    """The frame of one link of an await chain (None once it finished)."""
    kind = type(link)
    if kind is _CORO:
        return link.cr_frame
    if kind is _GEN:
        return link.gi_frame
    if kind is _AGEN:
        return link.ag_frame
    return chain_step(link)[0]


def _tasks_in(value: Any, out: list[Any]) -> None:
    """Tasks held directly, or in a small container, by one value."""
    if compat.is_task(value):
        out.append(value)
    elif type(value) in (set, frozenset, list, tuple):
        for item in list(value)[:_MAX_AWAITED]:
            if compat.is_task(item):
                out.append(item)


def waiter_tasks(waiter: Any, out: list[Any]) -> None:
    """Tasks a task suspended on ``waiter`` waits for: the waiter itself, gather()'s
    children, shield()'s inner task (up to 3.13, where tasks keep no parent links)."""
    if compat.is_task(waiter):
        out.append(waiter)
        return
    children = compat.gather_children(waiter) if type(waiter) is not _FUTURE else None
    if children:
        _tasks_in(children, out)
    inner = compat.shielded(waiter)
    if inner is not None:
        _tasks_in(inner, out)


def frame_tasks(link: Any, frame: types.FrameType, out: list[Any]) -> bool:
    """Tasks an asyncio waiting frame (wait, wait_for, TaskGroup.__aexit__) holds; True when
    that set can change while the task sleeps (a TaskGroup's children come and go)."""
    for value in compat.local_values(link, frame):
        members = compat.taskgroup_tasks(value)
        if members:
            _tasks_in(members, out)
        else:
            _tasks_in(value, out)
    return frame.f_code.co_name in _GROUP_FRAMES


def _ends_chain(kind: type) -> bool:
    """True for awaitables that are never a link with a frame (futures, their iterators):
    the walk stops there without asking chain_step."""
    if kind in _TERMINAL:
        return True
    if any(hasattr(kind, attr) for attr in ("cr_frame", "gi_frame", "ag_frame")):
        return False
    if len(_TERMINAL) < 1000:
        _TERMINAL.add(kind)
    return True


_TERMINAL: set[type] = set()


def walk_task(
    task: Any, waiter: Any, awaiting: dict[int, list[Any]] | None
) -> tuple[Any, list[Any], bool]:
    """One pass down a task's await chain: (the link whose frame is its location, the
    tasks it awaits, whether those can change while it sleeps).

    The location is the innermost link outside asyncio itself (``sleep`` or ``Queue.get``
    say less than the caller awaiting them). From 3.14 awaited tasks come from
    ``awaiting`` (see awaiting_map); before, from the waiter and asyncio's waiting
    frames. Frames are touched only where needed (3.11+ makes one per coroutine on first
    access; not GC-tracked, but each costs memory).
    """
    found: list[Any] = []
    watch = False
    if awaiting is not None:
        children = awaiting.get(id(task))
        if children:
            found.extend(children)
    elif waiter is not None:
        waiter_tasks(waiter, found)
    try:
        link = task.get_coro()
    except Exception:
        link = None
    location = None
    depth = 0
    asyncio_dir = _ASYNCIO_DIR
    while link is not None and depth < MAX_CHAIN:
        kind = type(link)  # a pending task's links are live: their frames are not read
        if kind is _CORO:
            code, following = link.cr_code, link.cr_await
        elif kind is _GEN:
            code, following = link.gi_code, link.gi_yieldfrom
        elif kind is _AGEN:
            code, following = link.ag_code, link.ag_await
        elif kind in _TERMINAL or _ends_chain(kind):
            break
        else:
            frame, following = chain_step(link)
            if frame is None:
                break
            code = frame.f_code
        if code.co_filename.startswith(asyncio_dir):
            if location is None:
                location = link
            if awaiting is None and code.co_name in _WAITING_FRAMES:
                frame = _frame_of(link)
                if frame is not None and frame_tasks(link, frame, found):
                    watch = True
        else:
            location = link
        link = following
        depth += 1
    if found:
        if len(found) > 1:
            unique: dict[int, Any] = {}
            for child in found:
                unique.setdefault(id(child), child)
            found = list(unique.values())[:_MAX_AWAITED]
        found = [t for t in found if t is not task]
    return location, found, watch


def _state_of(task: Any) -> int:
    try:
        if not task.done():
            return _PENDING
        return _CANCELLED if task.cancelled() else _DONE
    except Exception:
        return _UNKNOWN


@dataclass
class Listing:
    """The rows of one answer, fixed when it was made: later chunks come from here even
    when a newer pass has changed the table since."""

    id: int
    rows: list[str]

    def chunk(self, offset: int, rows: int = CHUNK_ROWS, limit_bytes: int = CHUNK_BYTES):
        """Rows from ``offset``: at most ``rows`` of them and about ``limit_bytes`` of text
        (always at least one)."""
        out = self.rows[offset : offset + max(1, rows)]
        size = 0
        for index, text in enumerate(out):
            size += len(text)
            if size > limit_bytes and index > 0:
                return out[:index]
        return out


@dataclass
class Answer:
    """A task listing as the table answers it (see TaskTable.answer)."""

    epoch: int
    version: int
    base: int  # 0 = complete; else the version this delta follows
    time: float  # wall clock now: a row's age is time - first_seen
    sites_from: int
    sites: list[tuple[str, str, str]]
    removed: list[int]
    current: list[int]
    total: int
    truncated: bool
    listing: Listing
    loop_counts: dict[int, int]  # loop serial -> tasks


_listing_ids = itertools.count(1)


class TaskTable:
    """Task ids, rows and versions for one agent; thread-safe (one lock, held by a pass
    across its short GIL yields, so observers asking meanwhile wait and share it)."""

    def __init__(self, registry: TaskRegistry) -> None:
        self._registry = registry
        self._lock = threading.RLock()
        self.epoch = random.getrandbits(52) + 1  # JSON-safe; a since of another table is moot
        self.version = 0
        self.share_seconds = SHARE_SECONDS
        self.log_versions = LOG_VERSIONS
        self.log_min_entries = LOG_MIN_ENTRIES
        self.passes = 0
        self.walked = 0  # tasks walked by the last pass (a debug figure for tests/bench)
        self.parents_looked = 0  # parents _rewalk_parents compared in the last pass (same)
        self.quick_passes = 0  # passes that found the same tasks listed (see _same_tasks)
        self.near_passes = 0  # quick passes over a few tasks come and gone (_near_tasks)
        self.near = NEAR  # ... while at most 1/near of the tasks held came or went, each way
        self._churning = True  # the last pass met tasks come or gone
        self._next_serial = 1
        self._phase = 1  # what seen[] holds for slots met in the running pass (1 or 2)
        self._done_at = -1e9  # monotonic end of the last pass
        self._released = True  # no waiter is held (none yet, or let go: see expire)
        self._now = round(time.time(), 3)  # first-seen time given in the running pass
        self._current: list[int] = []  # serials running a step at the last pass
        # id(task) -> slot, in _SHARDS dicts by id: one dict of 1M entries would stop the
        # world (the GIL) for ~100 ms each time it grows
        self._ids: list[dict[int, int]] = [{} for _ in range(_SHARDS)]
        self._live = 0
        self._refs: list[Any] = []  # slot -> weak reference to its task (_NO_TASK: free)
        self._held: list[Any] = []  # slot -> the waiter it was suspended on when walked
        self._rows: list[str | None] = []  # slot -> JSON text of the task's wire row
        self._names: list[str | None] = []  # slot -> the task's name (for match)
        self._awaits: list[str | None] = []  # slot -> its row's awaited serials, as text
        # 3.14+: serial -> the slot (int) or slots (set) whose rows list it as awaited,
        # so a pass re-examines only the parents of the tasks that moved (_rewalk_parents)
        self._listers: dict[int, Any] = {}
        self._serial = array("q")  # slot -> serial, 0 when free
        self._key = array("q")  # slot -> id(task) when it was registered
        self._first = array("d")  # slot -> wall time created (exact) or first seen
        self._exact = bytearray()  # slot -> 1 when _first is the creation time
        self._state = array("b")  # slot -> _PENDING/_DONE/...; _FREE when free
        self._loop = array("q")  # slot -> loop serial
        self._site = array("q")  # slot -> site index
        self._walked_in = array("q")  # slot -> the pass that last walked it
        self._seen = bytearray()  # slot -> phase of the last pass that met it, 0 when free
        self._free: list[int] = []
        self._loop_counts: dict[int, int] = {}
        self._loop_cache: dict[int, int] = {}  # id(loop) -> serial, for one pass
        self._codes: dict[int, tuple[Any, str]] = {}  # id(code) -> (code, qualified name)
        self._first_text = (0.0, "0.0")  # the last first-seen time written, and its text
        self._noted: tuple[str, int] = ("", 0)  # the last location noted as reported
        self._sites: dict[tuple[str, str, str], int] = {}
        self._site_list: list[tuple[str, str, str]] = []
        self._site_version: list[int] = []
        # (version, changed slots, removed serials) per version, oldest first
        self._log: deque[tuple[int, array[int], array[int]]] = deque()
        self._log_entries = 0
        self._floor = 0  # deltas can follow any version >= floor (> 0)
        self._pending_changed = array("q")  # slots registered outside a pass
        self._pending_removed = array("q")

    # ------------------------------------------------------------ ids

    # A slot's serial is written last when it is taken and cleared first when it is freed,
    # so a reader that finds the same serial before and after reading the slot's other
    # cells read that one registration's: lookups need not wait for a pass holding the lock.

    def task_id(self, task: Any) -> tuple[str, float]:
        """A task's id and first-seen wall time, registering it if new."""
        slot = self._ids[(id(task) >> 4) % _SHARDS].get(id(task), -1)
        if slot >= 0:
            serial, ref, first = self._serial[slot], self._refs[slot], self._first[slot]
            if serial and serial == self._serial[slot] and ref() is task:
                return f"task-{serial}", first
        with self._lock:
            slot = self._lookup(task)
            if slot < 0:
                self._now = round(time.time(), 3)
                slot = self._add(task, None, self._pending_changed, self._pending_removed)
            return f"task-{self._serial[slot]}", self._first[slot]

    def find_task(self, task_id: str) -> Any | None:
        """The live task behind an id printed earlier, or None (without waiting for a pass)."""
        if not task_id.startswith("task-"):
            return None
        try:
            serial = int(task_id[5:])
        except ValueError:
            return None
        if serial <= 0:
            return None
        try:
            slot = self._serial.index(serial)
        except ValueError:
            return None
        ref = self._refs[slot]
        if self._serial[slot] != serial:
            return None
        return ref()  # None once it died (a free slot's too)

    def _lookup(self, task: Any) -> int:
        """The slot of this very task, or -1 (never one of a dead task at the same id)."""
        key = id(task)
        slot = self._ids[(key >> 4) % _SHARDS].get(key, -1)
        if slot >= 0:
            held = self._refs[slot]
            if held() is not task:
                return -1
        return slot

    def release(self) -> None:
        """Stop holding the futures tasks waited on (and with them their results): the next
        pass walks every pending task again. In slices, like a pass."""
        with self._lock:
            held = self._held
            for start in range(0, len(held), 4096):
                for slot in range(start, min(start + 4096, len(held))):
                    if held[slot] is not None:
                        held[slot] = _ALWAYS
                hand_over()
            self._released = True

    def expire(self, idle: float = HOLD_SECONDS) -> None:
        """Release (see release) once no pass has run for ``idle`` seconds: nobody looks."""
        if not self._released and time.monotonic() - self._done_at > idle:
            self.release()

    # ------------------------------------------------------------ slots

    def _grow(self) -> None:
        start = len(self._serial)
        grow = min(max(_GROW, start // 2), _GROW_MAX)
        zeros = bytes(8 * grow)
        for column in (self._serial, self._key, self._loop, self._site, self._walked_in):
            column.frombytes(zeros)
        self._first.frombytes(zeros)
        self._state.frombytes(zeros[:grow])
        self._seen.extend(zeros[:grow])
        self._exact.extend(zeros[:grow])
        nones = [None] * grow
        for cells in (self._held, self._rows, self._names, self._awaits):
            cells.extend(nones)
        self._refs.extend([_NO_TASK] * grow)
        self._free.extend(range(start + grow - 1, start - 1, -1))

    def _register(self, task: Any, ref: Any, removed: array[int]) -> int:
        """A slot for a task the table has not seen (retiring a dead one at its id), with
        its serial, first-seen time and loop; no row yet."""
        key = id(task)
        ids = self._ids[(key >> 4) % _SHARDS]
        old = ids.get(key, -1)
        if old >= 0:  # the id belonged to a task that has died since: it is gone
            removed.append(self._serial[old])
            self._retire(old)
        free = self._free
        if not free:
            self._grow()
        slot = free.pop()
        ids[key] = slot
        self._live += 1
        self._key[slot] = key
        self._refs[slot] = ref if ref is not None else weakref.ref(task)
        born = created(task)  # stamped by the agent's task factory (see births)
        self._first[slot] = self._now if born is None else round(born, 3)
        self._exact[slot] = born is not None
        self._seen[slot] = 3 - self._phase  # met by this pass only when the pass reaches it
        try:
            loop = task.get_loop()
        except Exception:
            loop = compat.task_loop(task)
        loop_serial = self._loop_cache.get(id(loop))
        if loop_serial is None:
            loop_serial = self._registry.loop_serial(loop) if loop is not None else 0
            self._loop_cache[id(loop)] = loop_serial
        self._loop[slot] = loop_serial
        counts = self._loop_counts
        counts[loop_serial] = counts.get(loop_serial, 0) + 1
        serial = self._next_serial
        self._next_serial = serial + 1
        self._serial[slot] = serial  # last: see task_id
        return slot

    def _add(
        self,
        task: Any,
        ref: Any,
        changed: array[int],
        removed: array[int],
        waiter: Any = None,
        awaiting_of: dict[int, list[Any]] | None = None,
    ) -> int:
        """Register a task the table has not seen and render its row. ``waiter``: the
        task's _fut_waiter when the caller has read it; ``awaiting_of``: the pass's."""
        if waiter is None:
            waiter = compat.fut_waiter(task)
        slot = self._register(task, ref, removed)
        if not self._render_plain(slot, task, waiter, awaiting_of, changed, removed):
            self._render(slot, task, waiter, awaiting_of, changed, removed, True)
        return slot

    def _first_sight(
        self,
        fresh: list[Any],
        awaiting_of: dict[int, list[Any]] | None,
        changed: array[int],
        removed: array[int],
    ) -> None:
        """Register every task a pass met for the first time (``fresh``: task, registry
        ref, waiter, ...), then render each: awaited tasks are found registered, so no
        row is made twice and no weak reference of ours is made for them. Sliced."""
        phase, seen, register = self._phase, self._seen, self._register
        shards, refs = self._ids, self._refs
        slots: list[int] = []
        clock = time.perf_counter
        slice_ends = slice_end()
        for index in range(0, len(fresh), 3):
            if index % _CHECK_FIRST == 0 and clock() > slice_ends:
                slice_ends = hand_over()
            task = fresh[index]
            try:
                key = id(task)
                slot = shards[(key >> 4) % 256].get(key, -1)  # as _lookup, inlined
                if slot < 0 or refs[slot]() is not task:
                    slot = register(task, fresh[index + 1], removed)
                    slots.append(slot)
                else:
                    slots.append(-1)  # listed twice, or already added as an awaited task
                seen[slot] = phase  # a registry listed it in this pass: it is not gone
            except Exception:  # one odd task must not cost the others their rows
                slots.append(-1)
        plain, render = self._render_plain, self._render
        for index, slot in enumerate(slots):
            if index & _CHECK_RENDERS == 0 and clock() > slice_ends:
                slice_ends = hand_over()
            if slot < 0:
                continue
            task, waiter = fresh[3 * index], fresh[3 * index + 2]
            try:
                if not plain(slot, task, waiter, awaiting_of, changed, removed):
                    render(slot, task, waiter, awaiting_of, changed, removed, True)
            except Exception:
                continue

    def _render_plain(
        self,
        slot: int,
        task: Any,
        waiter: Any,
        awaiting_of: dict[int, list[Any]] | None,
        changed: array[int],
        removed: array[int],
    ) -> bool:
        """The first sight of the most common tasks, fast: native coroutines all the way
        down to a plain future that is not a shield() (awaiting no task) or to another
        task (awaiting that one; 3.14+: the tasks recorded as awaiting it). Exactly what
        _render would make of it; False (nothing done) for any other task."""
        kind = type(waiter)
        if kind is _FUTURE:
            if compat.shielded(waiter) is not None:
                return False
            awaits = ""
        elif kind is not _CORO and waiter is not None and compat.is_task(waiter):
            awaits = None  # filled in below, once the task is known to be a plain one
        else:
            return False
        children = None
        if awaiting_of is not None:
            children = awaiting_of.get(id(task))
            awaits = None if children else ""
        coro = task.get_coro()
        if type(coro) is not _CORO:
            return False
        location = None
        link = coro
        depth = 0
        asyncio_dir = _ASYNCIO_DIR
        while type(link) is _CORO and depth < MAX_CHAIN:
            code = link.cr_code
            if code.co_filename.startswith(asyncio_dir):
                if code.co_name in _WAITING_FRAMES:
                    return False  # tasks in wait(), wait_for(), TaskGroup: the general walk
                if location is None:
                    location = link
            else:
                location = link
            link = link.cr_await
            depth += 1
        if link is not None and not _ends_chain(type(link)):
            return False  # a generator-based or foreign link below: the general walk
        if location is None:
            return False
        name = task.get_name()
        if type(name) is not str or len(name) > _MAX_NAME:
            return False
        coroutine = coro.__qualname__
        place = self._place(location, coroutine)
        if place is None:
            return False
        if children:
            awaits = self._awaited_text(task, children, changed, removed)
        elif awaits is None:
            awaits = "" if waiter is task else str(self._serial_of(waiter, changed, removed))
        file, line, function = place
        key = (coroutine, function, file)
        site = self._sites.get(key)
        if site is None:
            site = self._site_of(key)
        self.walked += 1
        self._names[slot] = name
        self._set_awaits(slot, awaits)
        self._state[slot] = _PENDING
        self._site[slot] = site
        self._held[slot] = waiter
        first = self._first[slot]
        if first == self._first_text[0]:
            first_text = self._first_text[1]
        else:
            first_text = repr(first)
            self._first_text = (first, first_text)
        self._rows[slot] = (
            f"[{self._serial[slot]},{encode_basestring_ascii(name)},"
            f'"pending",{site},{line},{self._loop[slot]},{first_text},[{awaits}],'
            f'{_EXACT_TEXT[self._exact[slot]]},""]'
        )
        changed.append(slot)
        return True

    def _retire(self, slot: int) -> None:
        """Free a slot whose task is gone."""
        self._serial[slot] = 0  # first: see task_id
        loop_serial = self._loop[slot]
        left = self._loop_counts.get(loop_serial, 1) - 1
        if left > 0:
            self._loop_counts[loop_serial] = left
        else:
            self._loop_counts.pop(loop_serial, None)
        key = self._key[slot]
        ids = self._ids[(key >> 4) % _SHARDS]
        if ids.get(key) == slot:
            del ids[key]
        self._live -= 1
        self._held[slot] = self._rows[slot] = self._names[slot] = None
        self._refs[slot] = _NO_TASK
        self._set_awaits(slot, None)
        self._state[slot] = _FREE
        self._seen[slot] = 0
        self._free.append(slot)

    # ------------------------------------------------------------ rows

    def _code_entry(self, code: Any) -> tuple[Any, str, int]:
        """(code, qualified name, the one line its coroutines can be suspended at or 0),
        kept per code object (held, so its id cannot name another while cached)."""
        entry = self._codes.get(id(code))
        if entry is None or entry[0] is not code:
            if len(self._codes) >= MAX_CODES:
                self._codes.clear()
            line = 0
            if compat.FRAMES_ON_DEMAND:
                lines = compat.suspension_lines(code)
                line = next(iter(lines)) if len(lines) == 1 else 0
            entry = self._codes[id(code)] = (code, compat.code_name(code), line)
        return entry

    def _place(self, link: Any, coroutine: str) -> tuple[str, int, str] | None:
        """(file, line, function) of a task's location link, or None once it finished.

        A suspended coroutine whose code has one yield line is at that line: its frame is
        not made (3.11+ makes a frame object per coroutine on first access, and the GC
        counts each as an allocation: 100k of them start collections in the host).
        """
        if type(link) is _CORO:
            code = link.cr_code
            entry = self._code_entry(code)
            if entry[2] and link.cr_suspended:  # entry[2] is only set where it exists
                line = entry[2]
            else:
                frame = link.cr_frame
                if frame is None:
                    return None
                line = frame.f_lineno or 0
        else:
            frame = _frame_of(link)
            if frame is None:
                return None
            code = frame.f_code
            entry = self._code_entry(code)
            line = frame.f_lineno or 0
        file = code.co_filename
        if line != self._noted[1] or file is not self._noted[0]:
            note_reported(file, line)
            self._noted = (file, line)
        return file, line, entry[1] or coroutine

    def _site_of(self, key: tuple[str, str, str]) -> int:
        index = self._sites.get(key)
        if index is None:
            index = len(self._site_list)
            self._sites[key] = index
            self._site_list.append(key)
            self._site_version.append(self.version + 1)
        return index

    def _awaited_text(
        self, task: Any, children: list[Any], changed: array[int], removed: array[int]
    ) -> str:
        """A row's awaited serials from 3.14+'s awaiting map, as walk_task and _render make
        them (first of each, at most _MAX_AWAITED, never the task itself)."""
        if len(children) > 1:
            unique: dict[int, Any] = {}
            for child in children:
                unique.setdefault(id(child), child)
            children = list(unique.values())[:_MAX_AWAITED]
        serial_of = self._serial_of
        return ",".join([str(serial_of(c, changed, removed)) for c in children if c is not task])

    def _serial_of(self, task: Any, changed: array[int], removed: array[int]) -> int:
        """The serial of an awaited task, registered (and rendered) if new."""
        slot = self._lookup(task)
        if slot < 0:
            slot = self._add(task, None, changed, removed)
        return self._serial[slot]

    def _render(
        self,
        slot: int,
        task: Any,
        waiter: Any,
        awaiting_of: dict[int, list[Any]] | None,
        changed: array[int],
        removed: array[int],
        force: bool = False,
    ) -> None:
        """Walk one task and (re)make its row; note the slot as changed if its text did."""
        self.walked += 1
        state = _PENDING if waiter is not None else _state_of(task)
        try:
            name = task.get_name()
            if type(name) is not str:
                name = str(name)
        except Exception:
            name = "?"
        self._names[slot] = name
        if len(name) > _MAX_NAME:
            name = name[: _MAX_NAME - 1] + "…"
        try:
            coro = task.get_coro()
            coroutine = coro.__qualname__ if type(coro) is _CORO else compat.coroutine_name(coro)
        except Exception:
            coroutine = ""
        line = 0
        function, file = coroutine, ""
        watch = False
        awaits = ""
        if state == _PENDING:
            location, awaited, watch = walk_task(task, waiter, awaiting_of)
            place = self._place(location, coroutine) if location is not None else None
            if place is not None:
                file, line, function = place
            if awaited:
                awaits = ",".join([str(self._serial_of(t, changed, removed)) for t in awaited])
        self._set_awaits(slot, awaits)
        key = (coroutine, function, file)
        site = self._sites.get(key)
        if site is None:
            site = self._site_of(key)
        self._state[slot] = state
        self._site[slot] = site
        if state != _PENDING:
            self._held[slot] = None  # a finished task's row is final
        elif watch or waiter is None:
            self._held[slot] = _ALWAYS
        else:
            self._held[slot] = waiter
        error = compat.task_error_type(task) if state == _DONE else ""
        if error:
            state = self._state[slot] = _FAILED
        if not self._exact[slot]:  # an eager task can be met before its factory stamped it
            born = created(task)
            if born is not None:
                self._first[slot], self._exact[slot] = round(born, 3), True
        first = self._first[slot]
        if first == self._first_text[0]:
            first_text = self._first_text[1]
        else:
            first_text = repr(first)
            self._first_text = (first, first_text)
        text = (
            f"[{self._serial[slot]},{encode_basestring_ascii(name)},"
            f'"{_STATE_TEXT[state]}",{site},{line},{self._loop[slot]},{first_text},[{awaits}],'
            f"{_EXACT_TEXT[self._exact[slot]]},{encode_basestring_ascii(error)}]"
        )
        if force or text != self._rows[slot]:
            self._rows[slot] = text
            changed.append(slot)

    # ------------------------------------------------------------ passes

    def refresh(self, max_age: float | None = None, share: bool = True) -> None:
        """Bring the table up to date, unless a pass ended less than ``max_age`` ago
        (observers asking together share one pass; not one made with ``share`` False)."""
        if max_age is None:
            max_age = self.share_seconds
        with self._lock:
            if time.monotonic() - self._done_at < max_age:
                return
            try:
                self._pass()
            except Exception:  # a bug, not a task: rows may have changed unlogged
                log.exception("runtime-observer agent: a task table pass failed")
                self._relist()  # a pass cut short may have left awaited serials unlisted
                self.version += 1
                self._floor = self.version  # every observer gets a complete listing next
            if share:
                self._done_at = time.monotonic()
            self._released = False  # (a pass not shared is let go at the next expire)

    def _pass(self) -> None:
        self.passes += 1
        self.walked = self.parents_looked = 0
        self._now = round(time.time(), 3)
        self._loop_cache.clear()
        changed = self._pending_changed
        removed = self._pending_removed
        self._pending_changed, self._pending_removed = array("q"), array("q")
        refs, strong = compat.registered_refs()
        if any_dead():  # a forked child: not the tasks of the loops its parent ran
            refs, strong = live_refs(refs), live(strong)
        loops = [loop for loop, _ident in self._registry.loops()]
        if compat.TASKS_PER_THREAD:
            for loop in loops:
                strong.extend(compat.loop_tasks(loop))
        awaiting_of: dict[int, list[Any]] | None = None
        # while tasks come and go pass after pass, the check for the very same tasks would
        # fail each time: straight to the near pass then
        tasks = None if self._churning else self._same_tasks(refs, strong)
        gone: list[int] = []
        new: list[Any] = []
        if tasks is None:
            tasks, gone, new = self._near_tasks(refs, strong) or (None, gone, new)
        if gone or new:
            self.near_passes += 1
            awaiting_of = self._come_and_gone(gone, new, refs, strong, changed, removed)
        elif tasks is not None:
            self.quick_passes += 1
        self._churning = tasks is None or bool(gone or new)
        del new
        if tasks is not None:
            awaiting_of = self._rescan(tasks, refs, strong, changed, removed, awaiting_of)
        else:
            awaiting_of = _awaiting_map(refs, strong) if compat.AWAITED_BY else None
            self._phase = phase = 3 - self._phase
            fresh: list[Any] = []
            self._scan(refs, True, awaiting_of, changed, removed, fresh)
            self._scan(strong, False, awaiting_of, changed, removed, fresh)
            self._first_sight(fresh, awaiting_of, changed, removed)
            del fresh
            self._retire_unseen(3 - phase, removed)
        del tasks
        if compat.AWAITED_BY and (changed or removed):
            if awaiting_of is None:
                awaiting_of = _awaiting_map(refs, strong)
            self._rewalk_parents(awaiting_of, changed, removed)
        self._current = self._current_serials(loops)
        self._loop_cache.clear()
        if changed or removed:
            self.version += 1
            self._log.append((self.version, changed, removed))
            self._log_entries += len(changed) + len(removed)
            self._trim_log()

    def _held_and_listed(
        self, refs: list[Any], strong: list[Any], by_task: bool
    ) -> tuple[list[Any], set[Any], float]:
        """Each slot's task (None where free or dead), the set of what the registries list
        (tasks; or, ``by_task`` False, asyncio's own weak references: no task touched), and
        when the caller's slice ends; a block of slots at a time."""
        tasks: list[Any] = []
        listed: set[Any] = set()
        own = self._refs
        clock = time.perf_counter
        slice_ends = slice_end()
        for start in range(0, max(len(own), len(refs), len(strong)), _BLOCK):
            if clock() > slice_ends:
                slice_ends = hand_over()
            end = start + _BLOCK
            tasks += map(_deref, own[start:end])
            if by_task:
                listed.update(map(_deref, refs[start:end]))
                listed.update(strong[start:end])
            else:
                listed.update(refs[start:end])
        listed.discard(None)
        return tasks, listed, slice_ends

    def _same_tasks(self, refs: list[Any], strong: list[Any]) -> list[Any] | None:
        """Each slot's task (None where free), when the registries list exactly the tasks
        the table holds, alive: then no task came or went, and a pass need only look for
        moves, slot by slot, in C loops (_rescan). None otherwise, or on any surprise."""
        live = self._live
        if not live or len(refs) + len(strong) < live:
            return None
        try:
            # up to 3.13 the registries' own references are compared (no task touched);
            # tasks where tasks are listed (3.14+, eager tasks mid-step)
            tasks, listed, slice_ends = self._held_and_listed(refs, strong, bool(strong))
            if len(listed) != live:
                return None  # one came or went
            own, clock = self._refs, time.perf_counter
            states, compared, free = self._state, own if not strong else tasks, 0
            for start in range(0, len(own), _BLOCK):
                if clock() > slice_ends:
                    slice_ends = hand_over()
                end = start + _BLOCK
                free += tasks[start:end].count(None)
                if not listed.issuperset(compress(compared[start:end], states[start:end])):
                    return None  # one held left the registries (alive, or dead and gone)
            return tasks if free == len(own) - live else None  # else one held died
        except Exception:  # an odd registry member: the full pass copes with each alone
            return None

    def _near_tasks(
        self, refs: list[Any], strong: list[Any]
    ) -> tuple[list[Any], list[int], list[Any]] | None:
        """When a few tasks came or went since the last pass (at most 1/NEAR of those
        held, each way): each slot's task (None where free or gone), the slots of the tasks
        gone (dead, or listed by no registry) and the tasks new. The pass retires and adds
        those, then looks at the rest as a quick pass does: C loops over sets of tasks
        instead of _scan's Python loop over every task. None otherwise, or on any surprise."""
        live = self._live
        bound = live // self.near
        if not bound:
            return None
        try:
            tasks, listed, slice_ends = self._held_and_listed(refs, strong, True)
            states, clock = self._state, time.perf_counter
            if abs(len(listed) - live) > bound:
                return None
            gone: list[int] = []
            for start in range(0, len(tasks), _BLOCK):
                if clock() > slice_ends:
                    slice_ends = hand_over()
                end = start + _BLOCK
                present = bytearray(
                    map(listed.__contains__, compress(tasks[start:end], states[start:end]))
                )
                at = present.find(0)
                if at >= 0:
                    slots = list(compress(range(start, end), states[start:end]))
                    while at >= 0:
                        gone.append(slots[at])
                        at = present.find(0, at + 1)
                    if len(gone) > bound:
                        return None
            for start in range(0, len(tasks), _BLOCK):  # what is left listed is new
                if clock() > slice_ends:
                    slice_ends = hand_over()
                listed.difference_update(tasks[start : start + _BLOCK])
            listed.discard(None)
            if len(listed) > bound:
                return None
            for slot in gone:
                tasks[slot] = None
            return tasks, gone, list(listed)
        except Exception:  # an odd registry member: the full pass copes with each alone
            return None

    def _come_and_gone(
        self,
        gone: list[int],
        new: list[Any],
        refs: list[Any],
        strong: list[Any],
        changed: array[int],
        removed: array[int],
    ) -> dict[int, list[Any]] | None:
        """A near pass's tasks gone retired and its new ones added, before the rest is
        looked at (_rescan); 3.14+'s awaiting map when it was needed for them. The new
        come as tasks, so each gets a weak reference of the table's own, not asyncio's
        (finding asyncio's would cost a look at every registry entry): a few a pass."""
        for slot in gone:
            removed.append(self._serial[slot])
            self._retire(slot)
        if not new:
            return None
        awaiting_of = _awaiting_map(refs, strong) if compat.AWAITED_BY else None
        fresh: list[Any] = []
        self._scan(new, False, awaiting_of, changed, removed, fresh)
        self._first_sight(fresh, awaiting_of, changed, removed)
        return awaiting_of

    def _rescan(
        self,
        tasks: list[Any],
        refs: list[Any],
        strong: list[Any],
        changed: array[int],
        removed: array[int],
        awaiting_of: dict[int, list[Any]] | None = None,
    ) -> dict[int, list[Any]] | None:
        """A pass over the same tasks as the last (see _same_tasks; or those left of them
        once a near pass retired and added the few that went and came): the slots whose task
        waits on another object than the one held are walked, found in C loops a block at
        a time; of the rest, the rotating 1/ROTATE have their name compared, as _scan does.
        3.14+'s awaiting map (of ``refs`` and ``strong``) is made only if a task is walked,
        and returned. Tasks registered meanwhile (awaited, yet listed nowhere) are left
        unmet, so the next full pass retires them unless a registry lists them by then.
        ``awaiting_of``: the map when the pass made it already."""
        lazy = compat.AWAITED_BY  # 3.14+: the map is made at the first walk
        first_new = self._next_serial
        held, names, attr = self._held, self._names, compat.FUT_WAITER
        render = self._render
        rotate, rewalk = self.passes % ROTATE, self.passes % REWALK
        clock = time.perf_counter
        slice_ends = slice_end()
        for start in range(0, len(tasks), _BLOCK):
            if clock() > slice_ends:
                slice_ends = hand_over()
            block = tasks[start : start + _BLOCK]
            try:
                waiters = list(map(getattr, block, repeat(attr), repeat(None)))
            except Exception:  # a task whose waiter cannot be read: each alone
                waiters = [compat.fut_waiter(task) if task is not None else None for task in block]
            same = bytearray(map(operator.is_, waiters, held[start : start + _BLOCK]))
            walk = []  # moved since the last pass, then the rotation's share of the rest
            at = same.find(0)
            while at >= 0:
                walk.append(at)
                at = same.find(0, at + 1)
            walk += [at for at in range((rotate - start) % ROTATE, len(block), ROTATE) if same[at]]
            for count, at in enumerate(walk):
                if count & _CHECK_RENDERS == _CHECK_RENDERS and clock() > slice_ends:
                    slice_ends = hand_over()
                task = block[at]
                if task is None:
                    continue
                slot = start + at
                try:
                    # the REWALK safety net is left to passes where something moved, from
                    # 3.14: it would need the awaiting map made for nothing
                    if (
                        same[at]
                        and (slot % REWALK != rewalk or (lazy and awaiting_of is None))
                        and task.get_name() == names[slot]
                    ):
                        continue
                    if lazy and awaiting_of is None:
                        awaiting_of = _awaiting_map(refs, strong)
                    render(slot, task, waiters[at], awaiting_of, changed, removed)
                except Exception:  # one odd task must not cost the others their rows
                    continue
        serials, seen, phase = self._serial, self._seen, self._phase
        for slot in changed:
            if serials[slot] >= first_new:
                seen[slot] = phase  # met by no registry: the next full pass retires it
        return awaiting_of

    def _scan(
        self,
        items: list[Any],
        are_refs: bool,
        awaiting_of: dict[int, list[Any]] | None,
        changed: array[int],
        removed: array[int],
        fresh: list[Any],
    ) -> None:
        """Look at each task once: keep rows whose task still waits on the held future,
        walk the others; a task not in the table is added at once when it waits on a
        plain future (it awaits no task), else goes to ``fresh`` (task, registry ref,
        waiter) for _first_sight, once every task met is registered. In runs of _SCAN_RUN
        tasks, handing the GIL over between runs at each slice's end (agent.collect.pacing)."""
        shards, refs, seen, held = self._ids, self._refs, self._seen, self._held
        phase = self._phase
        rotate, rewalk, names = self.passes % ROTATE, self.passes % REWALK, self._names
        waiter_of, attr = getattr, compat.FUT_WAITER  # as compat.fut_waiter, without a call
        render, add = self._render, self._add
        # a task on a plain future awaits none (3.14+: unless the awaiting map says so)
        plain_now = awaiting_of is None
        clock = time.perf_counter
        slice_ends = slice_end()
        for start in range(0, len(items), _SCAN_RUN):
            if clock() > slice_ends:
                slice_ends = hand_over()
            for item in items[start : start + _SCAN_RUN]:
                try:
                    task = item() if are_refs else item
                    if task is None:
                        continue
                    key = id(task)
                    slot = shards[(key >> 4) % 256].get(key, -1)
                    if slot >= 0:
                        ref = refs[slot]
                        if ref is not item and ref() is not task:  # a dead task's address
                            slot = -1
                    if slot < 0:
                        waiter = waiter_of(task, attr, None)
                        if type(waiter) is _FUTURE and (plain_now or key not in awaiting_of):
                            ref = item if are_refs else None
                            seen[add(task, ref, changed, removed, waiter, awaiting_of)] = phase
                        else:
                            fresh += (task, item if are_refs else None, waiter)
                        continue
                    if seen[slot] == phase:
                        continue  # listed twice (an eager task moving between registries)
                    seen[slot] = phase
                    waiter = waiter_of(task, attr, None)
                    if waiter is held[slot]:  # suspended on the same future since: only
                        if slot % ROTATE != rotate:  # its name can have moved
                            continue
                        if slot % REWALK != rewalk and task.get_name() == names[slot]:
                            continue
                    render(slot, task, waiter, awaiting_of, changed, removed)
                except Exception:  # one odd task must not cost the others their rows
                    continue

    def _rewalk_parents(
        self, awaiting_of: dict[int, list[Any]], changed: array[int], removed: array[int]
    ) -> None:
        """3.14+: a task's awaited set is recorded on its children, so it moves while the
        task sleeps when a child comes, finishes or goes (or when the task runs, which the
        scan sees). So the parents of the tasks whose rows changed or that went in this
        pass (as the awaiting map and the rows listing them say) are walked again when
        the serials they await differ from their row's (made as walk_task makes them);
        the rest are not looked at. A parent walked in this pass has the map's already."""
        refs, awaits_of, lookup, serials = self._refs, self._awaits, self._lookup, self._serial
        listers, walked, this_pass = self._listers, self._walked_in, self.passes
        candidates: set[int] = set()
        for serial in removed:
            _add_slots(candidates, listers.pop(serial, None))
        if self.walked >= self._live and walked.count(this_pass) >= self._live:
            return  # every task was walked in this pass (a first one), with this map
        clock = time.perf_counter
        slice_ends = slice_end()
        for count, slot in enumerate(list(changed)):
            if count & _CHECK_RENDERS == _CHECK_RENDERS and clock() > slice_ends:
                slice_ends = hand_over()
            serial = serials[slot]
            if not serial:
                continue
            _add_slots(candidates, listers.get(serial))
            task = refs[slot]()
            if task is not None:
                for parent in compat.awaited_by(task):
                    at = lookup(parent)
                    if at >= 0:
                        candidates.add(at)
        for count, slot in enumerate(sorted(candidates)):
            if count & _CHECK_RENDERS == _CHECK_RENDERS and clock() > slice_ends:
                slice_ends = hand_over()
            if walked[slot] == this_pass or not serials[slot]:
                continue
            task = refs[slot]()
            if task is None:
                continue
            self.parents_looked += 1
            try:
                unique: dict[int, Any] = {}
                for child in awaiting_of.get(id(task), ()):
                    unique.setdefault(id(child), child)
                text: list[str] | None = []
                for child in list(unique.values())[:_MAX_AWAITED]:
                    if child is task:
                        continue
                    at = lookup(child)
                    if at < 0:
                        text = None
                        break
                    text.append(str(serials[at]))
                if text is not None and ",".join(text) == (awaits_of[slot] or ""):
                    continue
                self._render(slot, task, compat.fut_waiter(task), awaiting_of, changed, removed)
            except Exception:
                continue

    # ------------------------------------------------------------ who lists whom (3.14+)

    def _set_awaits(self, slot: int, awaits: str | None) -> None:
        """A slot's awaited serials as its row has them (None: freed); from 3.14 also kept
        the other way round in _listers, for _rewalk_parents."""
        old = self._awaits[slot]
        self._awaits[slot] = awaits
        if awaits is not None:
            self._walked_in[slot] = self.passes
        if compat.AWAITED_BY and awaits != old:
            listers = self._listers
            if old:
                for serial in map(int, old.split(",")):
                    value = listers.get(serial)
                    if value == slot:
                        del listers[serial]
                    elif type(value) is set:
                        value.discard(slot)
                        if len(value) == 1:
                            listers[serial] = value.pop()
            if awaits:
                for serial in map(int, awaits.split(",")):
                    value = listers.get(serial)
                    if value is None:
                        listers[serial] = slot
                    elif type(value) is set:
                        value.add(slot)
                    elif value != slot:
                        listers[serial] = {value, slot}  # a task more than one awaits

    def _relist(self) -> None:
        """_listers made again from every row (after a pass that failed part way)."""
        self._listers = {}
        for slot, awaits in enumerate(self._awaits):
            if awaits:
                self._awaits[slot] = None
                self._set_awaits(slot, awaits)

    def _retire_unseen(self, unseen: int, removed: array[int]) -> None:
        """Slots no registry listed in this pass belong to tasks that are gone."""
        seen = self._seen
        mark = bytes((unseen,))
        index = seen.find(mark)
        while index >= 0:
            removed.append(self._serial[index])
            self._retire(index)
            index = seen.find(mark, index + 1)

    def _current_serials(self, loops: Iterable[Any]) -> list[int]:
        out = []
        for loop in loops:
            task = compat.current_task(loop)
            if task is not None:
                slot = self._lookup(task)
                if slot >= 0:
                    out.append(self._serial[slot])
        return out

    def _trim_log(self) -> None:
        budget = max(self.log_min_entries, 2 * self._live)
        while self._log and (len(self._log) > self.log_versions or self._log_entries > budget):
            version, changed, removed = self._log.popleft()
            self._log_entries -= len(changed) + len(removed)
            self._floor = version

    # ------------------------------------------------------------ answers

    def answer(
        self, *, since: int = 0, epoch: int = 0, limit: int = 1 << 62, match: str = ""
    ) -> Answer:
        """The listing an observer holding version ``since`` of table ``epoch`` needs:
        the rows changed since then and the ids gone, or every row (pending first, up to
        ``limit``, filtered by ``match``) when it has nothing usable or asks a filter."""
        with self._lock:
            live = self._live
            delta = (
                not match
                and epoch == self.epoch
                and self._floor <= since <= self.version
                and since > 0
                and live <= limit
            )
            if delta:
                slots, removed = self._changes_since(since)
                delta = len(slots) <= max(100, live // 2)
            if delta:
                rows = [self._rows[s] for s in slots]
                total, truncated, base = live, False, since
                sites_from = bisect.bisect_right(self._site_version, since)
            else:
                rows, total = self._full_rows(limit, match)
                truncated = total > limit
                removed, sites_from, base = [], 0, 0
            return Answer(
                epoch=self.epoch,
                version=self.version,
                base=base,
                time=round(time.time(), 3),
                sites_from=sites_from,
                sites=self._site_list[sites_from:],
                removed=list(removed),
                current=list(self._current),
                total=total,
                truncated=truncated,
                listing=Listing(next(_listing_ids), rows),  # type: ignore[arg-type]
                loop_counts=dict(self._loop_counts),
            )

    def _changes_since(self, since: int) -> tuple[list[int], list[int]]:
        """Live slots changed and serials removed in the versions after ``since``."""
        marks: set[int] = set()
        slots: list[int] = []
        removed: list[int] = []
        for version, changed, gone in reversed(self._log):
            if version <= since:
                break
            removed.extend(gone)
            for slot in changed:
                if slot not in marks:
                    marks.add(slot)
                    slots.append(slot)
        rows = self._rows
        return [s for s in slots if rows[s] is not None], removed

    def _full_rows(self, limit: int, match: str) -> tuple[list[str], int]:
        """Every row (pending first, up to ``limit``) matching ``match``, and how many
        matched; sliced, like a pass, so the host's loops keep running."""
        needle = match.lower()
        states, rows, names, sites = self._state, self._rows, self._names, self._site
        site_list = self._site_list
        pending: list[str] = []
        finished: list[str] = []
        total = 0
        clock = time.perf_counter
        slice_ends = slice_end()
        for slot, row in enumerate(rows):
            if slot & 255 == 255 and clock() > slice_ends:
                slice_ends = hand_over()
            if row is None:
                continue
            if needle:
                hay = f"{names[slot]} {site_list[sites[slot]][0]}".lower()
                if needle not in hay:
                    continue
            total += 1
            (pending if states[slot] == _PENDING else finished).append(row)
        if finished:
            pending.extend(finished)
        if len(pending) > limit:
            del pending[limit:]
        return pending, total

    def __len__(self) -> int:
        return self._live


def awaiting_map(tasks: list[Any]) -> dict[int, list[Any]] | None:
    """3.14+: id(task) -> the tasks it awaits, inverted from each task's ``awaited_by``
    (plain awaits, gather, wait, shield and TaskGroup all record it). None before 3.14."""
    if not compat.AWAITED_BY:
        return None
    children: dict[int, list[Any]] = {}
    for task in tasks:
        for parent in compat.awaited_by(task):
            children.setdefault(id(parent), []).append(task)
    return children


def _awaiting_map(refs: list[Any], extra: list[Any]) -> dict[int, list[Any]]:
    """awaiting_map of every task a pass met: registry references and tasks."""
    tasks = [task for task in (ref() for ref in refs) if task is not None] if refs else []
    return awaiting_map(tasks + extra) or {}


def _add_slots(into: set[int], listed: int | set[int] | None) -> None:
    """Add one _listers value (a slot, a set of slots, or None) to ``into``."""
    if type(listed) is int:
        into.add(listed)
    elif listed:
        into.update(listed)
