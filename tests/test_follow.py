"""Refreshes that follow what changed (Node.changes, observer.gui.follow): after any
sequence of task changes, the rows a tab holds, and what its Qt model shows, are what a
fresh complete listing walked whole gives; a steady refresh touches only the changed
tasks. The property tests feed generated agent listings (rows on the wire form) through
the real TaskCache; the live tests drive a real host through the real client; the last
one sends hostile listing arguments to a real agent.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

pytest.importorskip("PyQt6")
pytest.importorskip("pytestqt")

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.schema import (
    LoopInfo,
    ProcessInfo,
    SnapshotUpdate,
    TaskListing,
    TaskSite,
    ThreadInfo,
)
from observer import rpc
from observer.client import changes_from
from observer.errors import BadRequest
from observer.gui.delta import BORN_SLACK, Shadow, table_delta, tree_delta, tree_from
from observer.gui.follow import follow_of, table_follow, tree_follow
from observer.gui.models import TableModel, TreeModel
from observer.taskcache import LOG_VERSIONS, TaskCache
from tests.attack.raw import Attacker, stock_request
from tests.helpers import echo_ok, wait_until
from tests.test_gui_delta import canonical, shown
from tests.test_incremental import Churn, start_churn

NOW = 1000.0
SITES = (TaskSite("job", "sleep", "/app/jobs.py"), TaskSite("main", "wait", "/app/main.py"))


def process(now: float) -> ProcessInfo:
    return ProcessInfo(
        "n", 1, 0, "host", (), "3.11", "CPython", "py", "h", 100.0, now - 100.0, 0.0, 2,
        0, 0, 1, None, None, (), (), "0.1", 5, 0, 1, (), "viewer", (),
    )  # fmt: skip


THREADS = (
    ThreadInfo(
        "thread-1", 1, 11, "MainThread", False, True, "sleeping", 0.5, "run", "/a.py", 3,
        True, False, "loop-1",
    ),
)  # fmt: skip


def loops(second: bool) -> tuple[LoopInfo, ...]:
    out = [LoopInfo("loop-1", "asyncio.Loop", 1, "MainThread", True, False, 0, 0.001)]
    if second:
        out.append(LoopInfo("loop-2", "asyncio.Loop", None, None, False, False, 0, None))
    return tuple(out)


class World:
    """An agent's tasks as its table lists them: rows by serial, and the versions."""

    def __init__(self) -> None:
        self.rows: dict[int, list[Any]] = {}
        self.serial = 0
        self.version = 0
        self.second_loop = False

    def add(self, awaiting: list[int], loop: int) -> int:
        self.serial += 1
        born = NOW - 500 + self.serial
        self.rows[self.serial] = [
            self.serial, f"job-{self.serial}", "pending", self.serial % 2, 10 + self.serial,
            loop, born, awaiting, True, "",
        ]  # fmt: skip
        return self.serial

    def listing(self, base: int, rows: list[list[Any]], removed: list[int]) -> Any:
        """(SnapshotUpdate, rows) of version ``self.version`` following ``base`` (0: all)."""
        now = NOW + self.version
        rows = [[*row[:7], list(row[7]), *row[8:]] for row in rows]
        tasks = TaskListing(
            7, self.version, base, now, 0 if not base else len(SITES), SITES if not base else (),
            tuple(removed), (), len(self.rows), False, len(rows), 1, tuple(),
        )  # fmt: skip
        update = SnapshotUpdate(process(now), THREADS, loops(self.second_loop), (), 0.01, tasks)
        return update, rows


def full(world: World) -> Any:
    """A fresh consumer's view: a complete listing of the world, walked whole."""
    cache = TaskCache()
    update, rows = world.listing(0, list(world.rows.values()), [])
    cache.apply(update.tasks, rows)
    return changes_from(update, cache, (0, 0)).snapshot()


step = st.tuples(
    st.lists(st.tuples(st.lists(st.integers(0, 50), max_size=3), st.integers(1, 2)), max_size=4),
    st.lists(st.integers(0, 50), max_size=3),  # finish
    st.lists(st.integers(0, 50), max_size=3),  # gone
    st.lists(st.integers(0, 50), max_size=2),  # rename
    st.lists(st.tuples(st.integers(0, 50), st.lists(st.integers(0, 50), max_size=3)), max_size=3),
    st.booleans(),  # a second loop listed
)


def mutate(world: World, change: tuple) -> tuple[list[int], list[int]]:
    """Apply one step; the serials changed (new ones among them) and those gone."""
    adds, finishes, gone, renames, points, second = change
    changed: set[int] = set()
    removed: list[int] = []

    def pick(index: int) -> int | None:
        serials = sorted(world.rows)
        return serials[index % len(serials)] if serials else None

    for awaits, loop in adds:
        targets = [s for s in map(pick, awaits) if s is not None]
        changed.add(world.add([*targets, world.serial + 5], loop))  # one not listed yet
    for index in finishes:
        if (serial := pick(index)) is not None:
            world.rows[serial][2] = "done"
            changed.add(serial)
    for index, awaits in points:  # cycles and self-awaits included
        if (serial := pick(index)) is not None:
            world.rows[serial][7] = [s for s in map(pick, awaits) if s is not None]
            changed.add(serial)
    for index in renames:
        if (serial := pick(index)) is not None:
            world.rows[serial][1] += "x"
            changed.add(serial)
    for index in gone:
        if (serial := pick(index)) is not None:
            del world.rows[serial]
            changed.discard(serial)
            removed.append(serial)
    world.second_loop = second
    return sorted(changed), removed


def same_rows(followed: Shadow, fresh: Shadow) -> None:
    assert followed.rows.keys() == fresh.rows.keys()
    for target, record in fresh.rows.items():
        mine = followed.rows[target]
        assert mine[:3] == record[:3], target
        assert (mine[3] is None) == (record[3] is None), target
        assert mine[3] is None or abs(mine[3] - record[3]) < BORN_SLACK


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(first=st.integers(0, 12), steps=st.lists(step, min_size=1, max_size=6))
def test_followed_tree_and_table_are_what_a_fresh_walk_shows(qtbot, first, steps):
    world = World()
    for i in range(first):
        world.add([i - 1] if i % 3 else [], 1)  # chains of three
    tree, table = Shadow(), Shadow()
    tree_model, table_model = TreeModel(), TableModel()
    world.version = 1
    cache = TaskCache()  # the node's one copy, shared by both tabs
    update, rows = world.listing(0, list(world.rows.values()), [])
    cache.apply(update.tasks, rows)
    tree_model.apply(tree_follow(changes_from(update, cache, follow_of(tree).cursor), tree))
    table_model.apply(table_follow(changes_from(update, cache, follow_of(table).cursor), table))
    for number, change in enumerate(steps):
        changed, removed = mutate(world, change)
        world.version += 1
        update, rows = world.listing(world.version - 1, [world.rows[s] for s in changed], removed)
        cache.apply(update.tasks, rows)
        changes = changes_from(update, cache, follow_of(tree).cursor)
        assert not changes.full and sorted(int(t.id[5:]) for t in changes.tasks) == changed
        tree_delta_ = tree_follow(changes, tree)
        tree_model.apply(tree_delta_)
        if number % 2 and number + 1 < len(steps):
            continue  # the table refreshes every other step: it catches up over two deltas
        table_model.apply(table_follow(changes_from(update, cache, follow_of(table).cursor), table))
        snap = full(world)
        fresh_tree, fresh_table = Shadow(), Shadow()
        tree_delta(snap, fresh_tree)
        table_delta(snap, fresh_table)
        same_rows(tree, fresh_tree)
        same_rows(table, fresh_table)
        fresh_model = TreeModel()
        whole = tree_delta(snap, Shadow())
        whole.full = tree_from(dict(fresh_tree.rows))
        fresh_model.apply(whole)
        assert canonical(shown(tree_model)) == canonical(shown(fresh_model))
        assert sorted(shown(table_model)) == sorted(
            (t, r[2][0], []) for t, r in fresh_table.rows.items()
        )
        if tree_delta_.full is None:
            touched = len(changed) + len(removed)
            assert tree_delta_.size <= touched + sum(len(world.rows[s][7]) for s in changed) + 64


def test_a_steady_refresh_touches_only_what_changed():
    """10k tasks, 5 renamed: the followed refresh builds rows for those five only."""
    world = World()
    for i in range(10_000):
        world.add([i] if i % 3 else [], 1)
    shadow = Shadow()
    cache = TaskCache()
    world.version = 1
    update, rows = world.listing(0, list(world.rows.values()), [])
    cache.apply(update.tasks, rows)
    tree_follow(changes_from(update, cache, (0, 0)), shadow)
    assert shadow.follow.valid
    for serial in (5, 500, 5000, 9000, 9999):
        world.rows[serial][1] += "-renamed"
    world.version = 2
    update, rows = world.listing(1, [world.rows[s] for s in (5, 500, 5000, 9000, 9999)], [])
    cache.apply(update.tasks, rows)
    changes = changes_from(update, cache, follow_of(shadow).cursor)
    assert len(changes.tasks) == 5 and not changes.full
    delta = tree_follow(changes, shadow)
    assert delta.full is None
    assert sorted(t for t, _ in delta.changed) == sorted(
        f"task-{s}" for s in (5, 500, 5000, 9000, 9999)
    )
    assert not delta.new and not delta.gone and not delta.moved
    assert delta.counts["task"] == 10_000


# ---------------------------------------------------------------- through a real host


@pytest.fixture
def churn(keys: Any):
    host = start_churn(keys, 300)
    yield host
    host.process.stop()


_names = itertools.count()  # task names unique across examples (one host serves them all)


def _tasks_view(rows: dict) -> dict:
    return {t: r[:3] for t, r in rows.items() if r[1] == "task"}


@settings(
    max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(script=st.lists(st.sampled_from(["spawn", "move", "cancel"]), min_size=3, max_size=7))
def test_a_followed_view_equals_a_fresh_listing_after_every_change(churn: Churn, script):
    with churn.connect() as node:
        shadow = Shadow()
        tree_follow(node.changes(follow_of(shadow).cursor), shadow)
        alive: list[str] = []
        moved: set[str] = set()
        for action in script:
            if action == "spawn" or not alive:
                name = f"f{next(_names)}"
                churn.do(f"spawn {name}", f"spawned {name}")
                alive.append(name)
            elif action == "move" and set(alive) - moved:
                name = sorted(set(alive) - moved)[0]
                churn.do(f"move {name}", f"moved {name}")
                moved.add(name)
            else:
                name = alive.pop(0)
                churn.do(f"cancel {name}", f"cancelled {name}")

            def agree() -> bool:
                changes = node.changes(follow_of(shadow).cursor)
                tree_follow(changes, shadow)
                with churn.connect() as fresh:
                    whole = Shadow()
                    tree_delta(fresh.snapshot(), whole)
                return _tasks_view(shadow.rows) == _tasks_view(whole.rows)

            wait_until(agree, message=f"followed view agrees after {action}")
        assert shadow.follow.valid  # followed, not walked whole, at the end
        for name in alive:
            churn.do(f"cancel {name}", f"cancelled {name}")
    assert echo_ok(churn.echo)


BAD = [
    ("since", -1, None),  # negative: a complete listing
    ("since", 2**80, None),  # beyond any version: a complete listing
    ("epoch", -(2**70), None),
    ("since", 1.5, "since must be int"),
    ("since", "7", "since must be int"),
    ("epoch", None, "epoch must be int"),
    ("epoch", [1], "epoch must be int"),
    ("since", True, "since must be int"),
]


def test_hostile_listing_arguments_are_refused_or_answered_whole(churn: Churn):
    """A peer sends the listing call version numbers that are negative, huge or of the
    wrong type: the agent refuses the wrong types with a clear error, answers the rest
    with a complete listing (never rows merged into another table), and keeps serving."""
    peer = Attacker.login(churn.address, churn.keys, "operator")  # stock rpyc
    with churn.connect() as node:
        complete = node.snapshot()
        for name, value, refused in BAD:
            args = {"limit": 100_000, "match": "", "since": 0, "epoch": 0, "chunk": 20_000}
            args[name] = value
            if not rpc.dumpable(tuple(args.values())):  # by reference: a stock rpyc peer's
                with pytest.raises(BadRequest, match=refused):
                    node._open(stock_request(node, peer, "snapshot", tuple(args.values())))
            elif refused:
                with pytest.raises(BadRequest, match=refused):
                    node._raw("snapshot", *args.values())
            else:
                data = node._raw("snapshot", *args.values())
                listing = data[5]  # SnapshotUpdate.tasks
                assert listing[2] == 0  # base 0: a complete listing
                assert listing[10] == len(complete.tasks)  # count: every row
        assert node.snapshot().tasks and node.last_listing.base != 0  # deltas as before
    peer.rpyc().close()
    assert echo_ok(churn.echo)


def test_a_consumer_too_far_behind_the_nodes_log_gets_every_task():
    """The node keeps a bounded log of the deltas it applied: a consumer within it gets
    what changed since its cursor (merged over several deltas), one behind it all tasks,
    and a cursor of another cache (the node replaced its copy) all tasks too."""
    world = World()
    for _ in range(10):
        world.add([], 1)
    cache = TaskCache()
    world.version = 1
    update, rows = world.listing(0, list(world.rows.values()), [])
    cache.apply(update.tasks, rows)
    first = changes_from(update, cache, (0, 0))
    assert first.full and len(first.tasks) == 10
    cursors = [first.cursor]
    for _ in range(LOG_VERSIONS + 5):
        serial = world.add([], 1)
        world.version += 1
        update, rows = world.listing(world.version - 1, [world.rows[serial]], [serial - 10])
        del world.rows[serial - 10]
        cache.apply(update.tasks, rows)
        cursors.append(changes_from(update, cache, cursors[-1]).cursor)
    recent = changes_from(update, cache, cursors[-4])
    assert not recent.full and [t.id for t in recent.tasks] == [
        f"task-{world.serial - 2}",
        f"task-{world.serial - 1}",
        f"task-{world.serial}",
    ]
    assert len(recent.gone) == 3
    assert changes_from(update, cache, cursors[0]).full
    assert changes_from(update, TaskCache(), cursors[-1]).full
    assert not changes_from(update, cache, cursors[-1]).tasks  # nothing since: nothing
