"""Incremental snapshots: after the first, a refresh carries only what changed, every
observer's merged view equals a fresh complete listing, and ids stay the tasks' own.

Most tests drive a real host (tests/hosts/churn.py) through the real client; the table's
own properties (id reuse, waiter reuse, shared passes) are checked in-process on a real
event loop in a thread.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import itertools
import json
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.collect.tasks import TaskRegistry
from agent.collect.tasktable import NEAR
from agent.compat import AWAITED_BY
from agent.schema import Snapshot, TaskInfo
from observer.client import Node, connect
from observer.gcpause import gc_paused
from tests.helpers import HostProcess, LoopThread, echo_ok, line_value, wait_until

CHURN = Path(__file__).parent / "hosts" / "churn.py"
_SOURCE = CHURN.read_text().splitlines()
PARKED_LINE = next(i for i, text in enumerate(_SOURCE, 1) if "# PARKED-LINE" in text)
MOVED_LINE = next(i for i, text in enumerate(_SOURCE, 1) if "# MOVED-LINE" in text)


@dataclass
class Churn:
    process: HostProcess
    address: str
    echo: str
    keys: Any

    def connect(self) -> Node:
        return connect(
            self.address, token_file=self.keys.operator_token, fingerprint=self.keys.fingerprint
        )

    def do(self, command: str, event: str = "") -> None:
        """Send a command and wait for the host to say it is done."""
        mark = self.process.mark()
        self.process.send(command)
        self.process.wait_line(rf"^event: {event or command}$", start=mark)


def start_churn(keys: Any, tasks: int) -> Churn:
    argv = [sys.executable, "-m", "tests.hosts.churn", str(keys.directory), "--tasks", str(tasks)]
    proc = HostProcess(argv)
    proc.wait_line(r"^echo: ")
    return Churn(proc, line_value(proc, "agent"), line_value(proc, "echo"), keys)


@pytest.fixture
def churn(keys: Any) -> Iterator[Churn]:
    host = start_churn(keys, 300)
    yield host
    host.process.stop()


def view(snap: Snapshot) -> dict[str, tuple[Any, ...]]:
    """What a snapshot says of each task, leaving out what moves by itself (age, current)."""
    return {
        t.id: (t.name, t.state, t.coroutine, t.function, t.file, t.line, t.loop, t.awaiting)
        for t in snap.tasks
    }


def until(node: Node, check: Callable[[Snapshot], Any], message: str) -> Snapshot:
    """Refresh until a snapshot passes ``check`` (the agent shares a pass among requests
    within a quarter second, so a change shows on a refresh soon after, not at once)."""

    def attempt() -> Snapshot | None:
        snap = node.snapshot()
        return snap if check(snap) else None

    return wait_until(attempt, message=message)


def named(snap: Snapshot, name: str) -> TaskInfo | None:
    return next((t for t in snap.tasks if t.name == name), None)


# ---------------------------------------------------------------- through a real host


def test_a_refresh_after_the_first_carries_only_what_changed(churn):
    with churn.connect() as node:
        first = node.snapshot()
        full = node.last_listing
        assert full is not None and full.base == 0 and full.rows == len(first.tasks) >= 300
        assert node.snapshot().tasks and node.last_listing.rows <= 3  # nothing moved
        churn.do("spawn alpha", "spawned alpha")
        second = until(node, lambda s: named(s, "alpha"), "alpha listed")
        delta = node.last_listing
        assert delta.base != 0 and delta.rows <= 3 and delta.chunks == 1
        assert delta.size < full.size / 3  # what is left is process, threads and loops
        assert len(second.tasks) == len(first.tasks) + 1
        assert set(view(first).items()) < set(view(second).items())
        assert echo_ok(churn.echo)


def test_created_moved_and_cancelled_tasks_show_up(churn):
    with churn.connect() as node:
        node.snapshot()
        churn.do("spawn alpha", "spawned alpha")
        alpha = wait_until(lambda: named(node.snapshot(), "alpha"), message="alpha listed")
        assert (alpha.function, alpha.line, alpha.state) == ("parked", PARKED_LINE, "pending")
        churn.do("move alpha", "moved alpha")
        moved = wait_until(
            lambda: (t := named(node.snapshot(), "alpha")) and t.line == MOVED_LINE and t,
            message="alpha at MOVED-LINE",
        )
        assert moved.id == alpha.id and node.last_listing.base != 0
        churn.do("cancel alpha", "cancelled alpha")
        gone = until(node, lambda s: named(s, "alpha") is None, "alpha gone")
        assert node.last_listing.removed >= 1 and node.last_listing.base != 0
        with churn.connect() as fresh:
            assert view(fresh.snapshot()) == view(gone)


def test_two_observers_and_a_fresh_one_agree_after_every_change(churn):
    with churn.connect() as one, churn.connect() as two:
        one.snapshot()
        two.snapshot()
        alive: set[str] = set()
        for step in range(5):
            churn.do(f"spawn t{step}", f"spawned t{step}")
            alive.add(f"t{step}")
            if step % 2:
                churn.do(f"move t{step}", f"moved t{step}")
            if step >= 2:
                churn.do(f"cancel t{step - 2}", f"cancelled t{step - 2}")
                alive.discard(f"t{step - 2}")
            if step % 2 == 0:
                one.snapshot()  # one observer refreshes more often than the other

            def agree(expected: set[str] = frozenset(alive)) -> bool:
                views = [view(one.snapshot()), view(two.snapshot())]
                with churn.connect() as fresh:
                    views.append(view(fresh.snapshot()))
                names = [{row[0] for row in v.values() if row[0].startswith("t")} for v in views]
                return views[0] == views[1] == views[2] and all(n == expected for n in names)

            wait_until(agree, message=f"both observers agree with a fresh one at step {step}")
        assert one.last_listing.base != 0 and two.last_listing.base != 0


def test_an_observer_too_far_behind_gets_a_complete_listing(churn):
    churn.do("log 2")
    with churn.connect() as slow, churn.connect() as fast:
        slow.snapshot()
        for step in range(4):  # four new versions: more than the agent keeps
            churn.do(f"spawn s{step}", f"spawned s{step}")
            wait_until(lambda step=step: named(fast.snapshot(), f"s{step}"), message="listed")
            assert fast.last_listing.base != 0  # one version behind: still a delta
        caught_up = slow.snapshot()
        assert slow.last_listing.base == 0 and slow.last_listing.rows == len(caught_up.tasks)
        assert view(caught_up) == view(fast.snapshot())
        assert slow.snapshot() and slow.last_listing.base != 0  # deltas again from there


def test_a_delta_for_another_table_is_never_applied(churn):
    """A node holding versions of another agent's table (one that restarted) gets a
    complete listing, not rows that would be merged into the wrong tasks."""
    with churn.connect() as node:
        before = node.snapshot()
        node._tasks.epoch += 1  # as if the agent behind the address had restarted
        after = node.snapshot()
        assert node.last_listing.base == 0 and view(after) == view(before)


def test_a_listing_larger_than_a_chunk_arrives_whole(keys):
    host = start_churn(keys, 20_000)
    try:
        with host.connect() as small, host.connect() as whole:
            small.chunk_rows = 1000
            snap = small.snapshot()
            stats = small.last_listing
            assert stats.chunks >= 20 and stats.rows == len(snap.tasks) >= 20_000
            ids = [t.id for t in snap.tasks]
            assert len(set(ids)) == len(ids)
            assert view(whole.snapshot()) == view(snap) and whole.last_listing.chunks <= 2
            listing = small.task_list()  # tasks() listings are chunked and merged the same way
            assert {t.id for t in listing.tasks} == set(ids) and small.last_listing.base != 0
            filtered = small.task_list(match="bulk-1999")  # and bulk-19990..19999
            assert sorted(t.name for t in filtered.tasks)[:2] == ["bulk-1999", "bulk-19990"]
            assert filtered.total == len(filtered.tasks) == 11 and small.last_listing.base == 0
        assert echo_ok(host.echo)
    finally:
        host.process.stop()


# ---------------------------------------------------------------- the table in-process


@pytest.fixture(scope="module")
def lt() -> Iterator[LoopThread]:
    loop_thread = LoopThread("incremental-loop")
    yield loop_thread
    loop_thread.stop()


async def forever() -> None:
    await asyncio.sleep(3600)


def rows_by_serial(registry: TaskRegistry) -> dict[int, list[Any]]:
    answer = registry.table.answer()
    return {row[0]: row for row in (json.loads(text) for text in answer.listing.rows)}


def churn_step(lt: LoopThread, live: list[asyncio.Task[None]], create: int, cancel: int) -> None:
    """Cancel ``cancel`` of the live tasks (dropping them), then create ``create`` new ones:
    freed tasks' addresses are the first a new task gets."""

    async def step() -> None:
        doomed = [live.pop() for _ in range(min(cancel, len(live)))]
        for task in doomed:
            task.cancel()
        await asyncio.gather(*doomed, return_exceptions=True)
        doomed.clear()
        live.extend(asyncio.create_task(forever()) for _ in range(create))
        await asyncio.sleep(0)

    lt.run(step)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 12), st.integers(0, 12)), min_size=1, max_size=8))
def test_a_new_task_never_inherits_an_old_id(lt, steps):
    registry = TaskRegistry()
    table = registry.table
    live: list[asyncio.Task[None]] = []
    owners: dict[int, Any] = {}  # serial -> the task that had it (held weakly by the test)
    try:
        for create, cancel in steps:
            churn_step(lt, live, create, cancel)
            table.refresh(max_age=0)
            listed = rows_by_serial(registry)
            for task in live:
                serial = int(table.task_id(task)[0][5:])
                assert serial in listed
                owner = owners.setdefault(serial, weakref.ref(task))
                assert owner() is task, f"task-{serial} now names another task"
            mine = {int(table.task_id(t)[0][5:]) for t in live}
            assert len(mine) == len(live)
    finally:
        churn_step(lt, live, 0, len(live))


def test_a_freed_tasks_address_taken_by_a_new_task_gets_a_new_id(lt):
    """The case the property test is about, made to happen: CPython hands a freed task's
    memory to one of the next objects made, so a later task often has a dead one's id()."""
    registry = TaskRegistry()
    table = registry.table
    live: list[asyncio.Task[None]] = []
    dead: dict[int, str] = {}  # id() of a task that was freed -> the id the agent gave it
    reused = 0
    for _ in range(300):
        churn_step(lt, live, 1, 0)
        table.refresh(max_age=0)
        address, task_id = id(live[0]), table.task_id(live[0])[0]
        if address in dead:
            reused += 1
            assert task_id != dead[address], f"a new task inherited {task_id}"
            assert dead[address] not in {f"task-{s}" for s in rows_by_serial(registry)}
        dead[address] = task_id
        churn_step(lt, live, 0, 1)
        if reused >= 5:
            break
    assert reused, "no address was ever reused: the test did not test anything"


async def pacer(box: list[Any], moved: threading.Event) -> None:
    """Parks at three lines in turn, each time on a new future (created after the one
    before was let go), and says so after each move."""
    loop = asyncio.get_running_loop()
    while True:
        box.append(loop.create_future())
        await box[0]  # LINE-A
        box.clear()
        moved.set()
        box.append(loop.create_future())
        await box[0]  # LINE-B
        box.clear()
        moved.set()
        box.append(loop.create_future())
        await box[0]  # LINE-C
        box.clear()
        moved.set()


def test_a_task_that_moved_shows_its_new_line_even_on_a_reused_future_address(lt):
    """Two steps between passes bring the pacer onto a future at the address of the one
    it waited on at the last pass (CPython hands out the memory freed a step before), at
    another line: a check of the future's id() would take that for "no move". The table
    holds the future it saw, so that address cannot come back while it looks."""
    box: list[Any] = []
    moved = threading.Event()

    async def start() -> asyncio.Task[None]:
        task = asyncio.create_task(pacer(box, moved), name="pacer")
        await asyncio.sleep(0)
        return task

    def advance() -> None:
        moved.clear()
        lt.loop.call_soon_threadsafe(lambda: box[0].set_result(None))
        assert moved.wait(10)

    source = Path(__file__).read_text().splitlines()
    lines = [
        next(i for i, text in enumerate(source, 1) if text.endswith(f"# LINE-{mark}"))
        for mark in "ABC"
    ]
    task = lt.run(start)
    try:
        # nobody holds the futures: two steps on, an address comes back; when depends on
        # the allocator (pymalloc: at once; 3.15's builds here: every so many steps)
        reused = 0
        for _ in range(3000):
            before = id(box[0])
            advance()
            advance()
            reused += id(box[0]) == before
            if reused >= 2:
                break
        assert reused, "no future took the address of an earlier one: nothing to tell apart"
        registry = TaskRegistry()
        table = registry.table
        table.refresh(max_age=0)
        place = [i for i, line in enumerate(lines) if line == task.get_coro().cr_frame.f_lineno]
        for _ in range(30):
            table.refresh(max_age=0)
            serial = int(table.task_id(task)[0][5:])
            assert rows_by_serial(registry)[serial][4] == lines[place[0]]
            advance()
            advance()
            place[0] = (place[0] + 2) % 3
    finally:
        lt.run(lambda: _cancel(task))


def test_a_table_nobody_asks_lets_go_of_the_futures_it_holds(lt):
    """Holding the future a task waited on keeps it (and its result) alive after the task
    moved on, until the next pass; when no pass comes, expire lets go of it."""
    box: list[Any] = []
    moved = threading.Event()

    async def start() -> asyncio.Task[None]:
        task = asyncio.create_task(pacer(box, moved), name="pacer")
        await asyncio.sleep(0)
        return task

    task = lt.run(start)
    registry = TaskRegistry()
    table = registry.table
    try:
        table.refresh(max_age=0)
        held = weakref.ref(box[0])
        moved.clear()
        lt.loop.call_soon_threadsafe(lambda: box[0].set_result(None))
        assert moved.wait(10)
        gc.collect()
        assert held() is not None  # the pacer has moved on: only the table holds it
        table.expire(idle=3600)
        gc.collect()
        assert held() is not None  # a pass ran just now: not yet
        table.expire(idle=0.0)
        gc.collect()
        assert held() is None
        table.refresh(max_age=0)  # walked again from scratch, and right
        line = rows_by_serial(registry)[int(table.task_id(task)[0][5:])][4]
        assert Path(__file__).read_text().splitlines()[line - 1].endswith("# LINE-B")
    finally:
        lt.run(lambda: _cancel(task))


async def one_wait() -> None:
    await asyncio.sleep(3600)  # ONE-WAIT


async def two_waits() -> None:
    await asyncio.sleep(0)
    await asyncio.sleep(3600)  # SECOND-WAIT


def test_a_listing_makes_no_frame_for_a_coroutine_with_one_place_to_wait(lt):
    """3.11+ makes a frame object the first time a coroutine's cr_frame is read, and the GC
    counts each as an allocation (100k of them start collections in the host): where the
    code has a single yield line, the row's line comes from the code alone."""
    live: list[asyncio.Task[None]] = []

    async def make() -> None:
        live.extend(asyncio.create_task(c) for c in (one_wait(), two_waits()))
        await asyncio.sleep(0.01)

    lt.run(make)
    registry = TaskRegistry()
    try:
        registry.table.refresh(max_age=0)
        rows = rows_by_serial(registry)
        source = Path(__file__).read_text().splitlines()
        for task, mark, framed in ((live[0], "ONE-WAIT", False), (live[1], "SECOND-WAIT", True)):
            row = rows[int(registry.table.task_id(task)[0][5:])]
            assert source[row[4] - 1].endswith(f"# {mark}")
            frames = [r for r in gc.get_referents(task.get_coro()) if type(r) is FrameType]
            if sys.version_info >= (3, 11):  # before, every coroutine has its frame anyway
                assert bool(frames) == framed
    finally:
        churn_step(lt, live, 0, len(live))


async def _cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def test_observers_asking_together_share_one_pass(lt):
    live: list[asyncio.Task[None]] = []
    churn_step(lt, live, 50, 0)
    registry = TaskRegistry()
    table = registry.table
    table.share_seconds = 60.0
    try:
        barrier = threading.Barrier(4)

        def observer() -> None:
            barrier.wait()
            table.refresh()

        threads = [threading.Thread(target=observer) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert table.passes == 1
        table.refresh()
        assert table.passes == 1
        table.refresh(max_age=0)
        assert table.passes == 2 and len(rows_by_serial(registry)) >= 50
    finally:
        churn_step(lt, live, 0, len(live))


@pytest.mark.skipif(sys.version_info < (3, 11), reason="TaskGroup is 3.11+")
def test_a_sleeping_group_owner_follows_the_children_it_awaits(lt):
    """A TaskGroup's owner sleeps in __aexit__ on one future while its children come and
    go: each refresh's row for it lists the children it awaits then (3.14+: the children
    record their awaiter and the owner is walked again only when that set moved)."""
    box: dict[str, Any] = {}

    async def owner() -> None:
        async with asyncio.TaskGroup() as group:
            box["group"] = group
            box["a"] = group.create_task(forever(), name="child-a")
            box["inside"].set()  # the owner reaches __aexit__ in this same step

    async def start() -> None:
        box["inside"] = asyncio.Event()
        box["owner"] = asyncio.create_task(owner(), name="group-owner")
        await box["inside"].wait()

    async def add_b() -> None:
        box["b"] = box["group"].create_task(forever(), name="child-b")
        await asyncio.sleep(0)

    async def drop_a() -> None:
        await _cancel(box["a"])

    registry = TaskRegistry()
    table = registry.table

    def awaited() -> set[int]:
        table.refresh(max_age=0)
        rows = rows_by_serial(registry)
        row = rows[int(table.task_id(box["owner"])[0][5:])]
        return set(row[7])  # TaskRow.awaiting

    def serial(name: str) -> int:
        return int(table.task_id(box[name])[0][5:])

    try:
        lt.run(start)
        assert awaited() == {serial("a")}
        lt.run(add_b)
        assert awaited() == {serial("a"), serial("b")}
        lt.run(drop_a)
        assert awaited() == {serial("b")}
        assert table.passes == 3
    finally:
        lt.run(lambda: _cancel(box["owner"]))


_NAMES = itertools.count(1)


async def _mover(first: asyncio.Event, second: asyncio.Event, third: asyncio.Event) -> None:
    await first.wait()
    await second.wait()
    await third.wait()
    await forever()


class Groups:
    """TaskGroup owners asleep in __aexit__ on the test loop, whose children the test adds
    and cancels from outside (an owner with a child left never runs meanwhile), and tasks
    that several waiters await together. Every task has a name of its own, so the rows of
    two tables can be compared."""

    def __init__(self, lt: LoopThread) -> None:
        self.lt = lt
        self.owners: list[asyncio.Task[None]] = []
        self.groups: dict[int, Any] = {}
        self.children: list[list[asyncio.Task[None]]] = []
        self.others: list[asyncio.Task[None]] = []
        self.movers: list[tuple[asyncio.Task[None], list[asyncio.Event]]] = []

    def _name(self, kind: str) -> str:
        return f"{kind}-{next(_NAMES)}"  # unique across examples: finished tasks linger

    def owner(self) -> None:
        index = len(self.owners)
        self.children.append([])

        async def owner(ready: asyncio.Event) -> None:
            async with asyncio.TaskGroup() as group:
                self.groups[index] = group
                self.children[index].append(group.create_task(forever(), name=self._name("c")))
                ready.set()  # the owner reaches __aexit__ in this same step

        async def make() -> None:
            ready = asyncio.Event()
            self.owners.append(asyncio.create_task(owner(ready), name=self._name("owner")))
            await ready.wait()

        self.lt.run(make)

    def add(self, index: int) -> None:
        index %= len(self.owners)

        async def add() -> None:
            task = self.groups[index].create_task(forever(), name=self._name("c"))
            self.children[index].append(task)
            await asyncio.sleep(0)

        self.lt.run(add)

    def drop(self, index: int) -> None:
        """Cancel one child of an owner that has another (so the owner sleeps on)."""
        kids = self.children[index % len(self.owners)]
        if len(kids) > 1:
            self.lt.run(lambda: _cancel(kids.pop(0)))

    def shared(self, waiters: int) -> None:
        """A task ``waiters`` tasks await, each on its own: it is listed by all their rows."""

        async def make() -> None:
            target = asyncio.create_task(forever(), name=self._name("shared"))

            async def waiter() -> None:
                await target

            self.others.append(target)
            for _ in range(waiters):
                self.others.append(asyncio.create_task(waiter(), name=self._name("waiter")))
            await asyncio.sleep(0)

        self.lt.run(make)

    def end_shared(self) -> None:
        """Cancel the oldest shared task: its waiters wake and fail."""
        targets = [t for t in self.others if t.get_name().startswith("shared") and not t.done()]
        if targets:
            self.lt.run(lambda: _cancel(targets[0]))

    def mover(self) -> None:
        """A task that waits on one event, then the next (each on a line of its own)."""

        async def make() -> None:
            events = [asyncio.Event() for _ in range(3)]
            task = asyncio.create_task(_mover(*events), name=self._name("mover"))
            self.movers.append((task, events))
            await asyncio.sleep(0)

        self.lt.run(make)

    def poke(self, index: int) -> None:
        """Move a mover on to its next wait: it runs, and no task comes or goes."""
        if not self.movers:
            return
        events = self.movers[index % len(self.movers)][1]
        waiting = [event for event in events if not event.is_set()]

        async def poke() -> None:
            if waiting:
                waiting[0].set()
            for _ in range(3):
                await asyncio.sleep(0)  # it reaches its next wait

        self.lt.run(poke)

    def close(self) -> None:
        everything = [*self.owners, *self.others, *(task for task, _ in self.movers)]
        self.lt.run(lambda: asyncio.gather(*(_cancel(t) for t in everything)))


def rows_by_name(registry: TaskRegistry) -> dict[str, tuple[Any, ...]]:
    """Every row as (state, site, line, names of the tasks it awaits), by task name: rows
    of two tables compared without their serials or site numbers."""
    answer = registry.table.answer()
    rows = [json.loads(text) for text in answer.listing.rows]
    names = {row[0]: row[1] for row in rows}
    return {
        row[1]: (row[2], answer.sites[row[3]], row[4], sorted(names.get(s, "?") for s in row[7]))
        for row in rows
    }


STEPS = st.lists(
    st.one_of(
        st.just(("owner", 0)),
        st.tuples(st.sampled_from(["add", "drop", "shared", "poke"]), st.integers(0, 4)),
        st.just(("mover", 0)),
        st.just(("end_shared", 0)),
    ),
    min_size=1,
    max_size=10,
)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="TaskGroup is 3.11+")
@pytest.mark.parametrize("near", [NEAR, 1], ids=["near-default", "every-pass-near"])
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=STEPS)
def test_rows_kept_across_passes_are_the_rows_a_fresh_table_makes(lt, near, steps):
    """Whatever comes, goes or moves between passes (group children added and cancelled
    under sleeping owners, tasks several await, those ending), a table kept up to date
    pass after pass says what a table made from scratch says: by full passes, and by near
    ones (``near`` 1: any share of the tasks may come or go and the pass stays near)."""
    groups = Groups(lt)
    kept = TaskRegistry()
    kept.table.near = near
    try:
        groups.owner()
        kept.table.refresh(max_age=0)
        for action, index in steps:
            if action == "owner":
                groups.owner()
            elif action == "shared":
                groups.shared(1 + index % 3)
            elif action in ("end_shared", "mover"):
                getattr(groups, action)()
            else:
                getattr(groups, action)(index)
            gc.collect()  # tasks of earlier examples die now, not between the two passes
            with gc_paused():
                kept.table.refresh(max_age=0)
                fresh = TaskRegistry()
                fresh.table.refresh(max_age=0)
            assert rows_by_name(kept) == rows_by_name(fresh), (action, index)
    finally:
        groups.close()


def test_a_pass_over_the_same_tasks_is_a_quick_one_that_sees_every_move(lt):
    """While no task comes or goes, a pass compares each task's waiter with the one held
    in C loops (a quick pass) and walks the tasks that moved; a pass in which a task came
    or went retires and adds those and looks at the rest the same way (a near pass)."""
    groups = Groups(lt)
    registry = TaskRegistry()
    table = registry.table

    def line_of(index: int) -> int:
        return rows_by_name(registry)[groups.movers[index][0].get_name()][2]

    def movers_listed() -> int:
        names = {task.get_name() for task, _ in groups.movers}
        return len(names & set(rows_by_name(registry)))

    gc.collect()  # tasks earlier tests left to the collector go now, not between passes
    try:
        for _ in range(40):
            groups.mover()
        table.refresh(max_age=0)
        first = line_of(7)
        table.refresh(max_age=0)
        assert table.quick_passes == 1 and table.walked <= 1  # the rotating REWALK share
        if AWAITED_BY:  # 3.14+: a pass where nothing moved walks none (so makes no map)
            assert table.walked == 0
        groups.poke(7)
        table.refresh(max_age=0)
        assert table.quick_passes == 2 and 1 <= table.walked <= 2
        assert line_of(7) == first + 1
        groups.mover()
        table.refresh(max_age=0)
        assert (table.quick_passes, table.near_passes) == (2, 1) and movers_listed() == 41
        table.refresh(max_age=0)
        assert table.quick_passes == 3
        gone = groups.movers[3][0].get_name()
        # the popped task's last reference goes with the partial: up to 3.13 a finished
        # task is listed while anything holds it
        lt.run(functools.partial(_cancel, groups.movers.pop(3)[0]))
        table.refresh(max_age=0)
        assert (table.quick_passes, table.near_passes) == (3, 2) and movers_listed() == 40
        assert gone not in rows_by_name(registry)
        assert table.walked <= 2  # the near pass walked no task that held still
    finally:
        groups.close()


@pytest.mark.skipif(not AWAITED_BY, reason="tasks record who awaits them from Python 3.14")
def test_a_pass_looks_again_only_at_the_parents_of_what_moved(lt):
    """3.14+: a sleeping parent is compared with the awaiting map only when one of the
    tasks it awaits came, finished or went: a pass over 100 sleeping group owners looks at
    none of them, and at one when one of its children comes or goes."""
    groups = Groups(lt)
    registry = TaskRegistry()
    table = registry.table

    def awaited(index: int) -> list[str]:
        return rows_by_name(registry)[groups.owners[index].get_name()][3]

    try:
        for index in range(100):
            groups.owner()
            groups.add(index)
        table.refresh(max_age=0)
        table.refresh(max_age=0)
        assert table.parents_looked == 0
        groups.add(37)
        table.refresh(max_age=0)
        assert table.parents_looked == 1
        assert awaited(37) == sorted(t.get_name() for t in groups.children[37])
        groups.drop(37)
        table.refresh(max_age=0)
        assert table.parents_looked == 1
        assert awaited(37) == sorted(t.get_name() for t in groups.children[37])
        assert len(awaited(37)) == 2
    finally:
        groups.close()


def test_a_sleeping_task_renamed_shows_its_new_name_within_a_rotation(lt):
    """set_name is the one change a task's row can see while it sleeps on the same future:
    the rotating name check finds it within ROTATE passes, without walking every task."""
    from agent.collect.tasktable import ROTATE

    live: list[asyncio.Task[None]] = []
    churn_step(lt, live, 300, 0)
    registry = TaskRegistry()
    table = registry.table
    try:
        table.refresh(max_age=0)
        target = live[17]
        serial = int(table.task_id(target)[0][5:])

        async def rename() -> None:
            target.set_name("renamed-while-asleep")

        lt.run(rename)
        walked = []
        for _ in range(ROTATE):
            table.refresh(max_age=0)
            walked.append(table.walked)
            if rows_by_serial(registry)[serial][1] == "renamed-while-asleep":
                break
        else:
            raise AssertionError(f"the new name did not show in {ROTATE} passes")
        assert max(walked) < 300 // 4  # a pass walks a few tasks, not all of them
    finally:
        churn_step(lt, live, 0, len(live))


def test_first_sight_rows_are_the_rows_a_full_walk_makes(lt):
    """The fast first-sight rows (plain waits, a task awaiting a task, 3.14+'s awaiting
    map) equal what walking each task in full makes: after release() every task is walked
    again, and no row's text changes (shapes: leaf, parent of a task, gather, shield,
    wait, TaskGroup)."""
    live: list[asyncio.Task[Any]] = []

    async def make() -> None:
        async def leaf() -> None:
            await asyncio.sleep(3600)

        async def parent() -> None:
            await asyncio.create_task(leaf(), name="child")

        async def fan() -> None:
            await asyncio.gather(leaf(), leaf())

        async def shielded() -> None:
            await asyncio.shield(asyncio.create_task(leaf()))

        async def waits() -> None:
            await asyncio.wait([asyncio.create_task(leaf())])

        async def group() -> None:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(leaf())

        shapes = [leaf, parent, fan, shielded, waits]
        if hasattr(asyncio, "TaskGroup"):
            shapes.append(group)
        live.extend(asyncio.create_task(shape(), name=shape.__name__) for shape in shapes)
        for _ in range(5):
            await asyncio.sleep(0)  # every task reaches its wait (not a timing sleep)

    lt.run(make)
    registry = TaskRegistry()
    table = registry.table
    try:
        table.refresh(max_age=0)
        before = rows_by_serial(registry)
        assert len(before) >= 10
        table.release()
        table.refresh(max_age=0)
        after = rows_by_serial(registry)
        assert {serial: before[serial] for serial in after} == after
        assert all(registry.table.task_id(task)[0][5:].isdigit() for task in live)
    finally:
        churn_step(lt, live, 0, len(live))
