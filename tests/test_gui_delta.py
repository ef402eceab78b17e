"""Refreshes as deltas: the Qt models change only the rows that changed, and after any
sequence of refreshes show exactly what a model built from scratch shows.

The property tests drive the models with generated trees (no agent): tasks come, go,
move under another task and get renamed, with and without a filter, checked by Qt's own
QAbstractItemModelTester on every signal. The live tests run a real agent.
"""

from __future__ import annotations

import pytest

pytest.importorskip("PyQt6")
pytest.importorskip("pytestqt")

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PyQt6.QtCore import QEvent, QModelIndex, QObject
from PyQt6.QtTest import QAbstractItemModelTester
from PyQt6.QtWidgets import QApplication

from agent import compat
from observer.gui.delta import BULK, Record, Shadow, diff, table_from, tree_from
from observer.gui.models import ID_ROLE, TableModel, TreeModel
from observer.gui.rows import FUNCTION, ID, KIND, NAME, STATE, TARGET, WIDTH

# Up to 3.13 a cancelled task stays listed (greyed) while the host holds it; from 3.14
# asyncio lists only pending tasks, so it leaves the listing and its row goes.
FINISHED_LISTED = not compat.TASKS_PER_THREAD

LOOP = "loop-1"


def text(target: str, kind: str, name: str, function: str = "") -> tuple[str, ...]:
    """A row's cells as node_values gives them (every hidden cell too), the Age blank."""
    cells = [""] * WIDTH
    cells[NAME], cells[KIND], cells[ID], cells[STATE] = name, kind, target, "pending"
    cells[FUNCTION], cells[TARGET] = function, target
    return tuple(cells)


class World:
    """A process -> thread -> loop -> tasks tree that changes between refreshes."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}
        self.name: dict[str, str] = {}
        self.serial = 0

    def add(self, parent: str) -> str:
        self.serial += 1
        target = f"task-{self.serial}"
        self.parent[target] = parent
        self.name[target] = f"job-{self.serial}"
        return target

    def records(self) -> list[tuple[str, Record]]:
        """Rows in tree order, as the worker walks them."""
        out: list[tuple[str, Record]] = [
            ("pid-1", ("", "process", text("pid-1", "process", "host"), 100.0)),
            ("thread-1", ("pid-1", "thread", text("thread-1", "thread", "MainThread"), None)),
            (LOOP, ("thread-1", "loop", text(LOOP, "loop", "loop"), None)),
        ]
        children: dict[str, list[str]] = {}
        for target in sorted(self.parent, key=lambda t: int(t[5:])):
            children.setdefault(self.parent[target], []).append(target)
        stack = list(reversed(children.get(LOOP, [])))
        while stack:
            target = stack.pop()
            row = text(target, "task", self.name[target], "sleep")
            out.append((target, (self.parent[target], "task", row, 50.0)))
            stack.extend(reversed(children.get(target, [])))
        return out

    def remove(self, target: str) -> None:
        """A task ends: the tasks it awaited move up to its parent."""
        parent = self.parent.pop(target)
        self.name.pop(target)
        for other, up in self.parent.items():
            if up == target:
                self.parent[other] = parent

    def ancestors(self, target: str) -> set[str]:
        out = set()
        while target in self.parent:
            target = self.parent[target]
            out.add(target)
        return out


def shown(model: TreeModel | TableModel, parent: QModelIndex | None = None) -> list:
    """What a view sees: (id, name, children) per row, through the Qt API only."""
    parent = parent or QModelIndex()
    out = []
    for row in range(model.rowCount(parent)):
        index = model.index(row, 0, parent)
        below = []
        if isinstance(model, TreeModel):
            assert model.parent(index) == parent
            below = shown(model, index)
        out.append((index.data(ID_ROLE), model.index(row, NAME, parent).data(), below))
    return out


def canonical(rows: list) -> list:
    """Rows in id order at every level: new and moved rows come last under their parent,
    where a fresh tree has them in the agent's order."""
    return sorted((target, name, canonical(below)) for target, name, below in rows)


class Signals:
    """Counts of a model's structural and data signals."""

    def __init__(self, model: TreeModel | TableModel) -> None:
        self.counts = dict.fromkeys(("inserted", "removed", "changed", "reset", "layout"), 0)
        self.rows = 0  # rows inserted, removed or changed
        model.rowsInserted.connect(lambda _p, a, b: self._add("inserted", b - a + 1))
        model.rowsRemoved.connect(lambda _p, a, b: self._add("removed", b - a + 1))
        model.dataChanged.connect(lambda a, b, _r=None: self._add("changed", b.row() - a.row() + 1))
        model.modelReset.connect(lambda: self._add("reset", 0))
        model.layoutChanged.connect(lambda *_: self._add("layout", 0))

    def _add(self, kind: str, rows: int) -> None:
        self.counts[kind] += 1
        self.rows += rows

    def clear(self) -> None:
        self.counts = dict.fromkeys(self.counts, 0)
        self.rows = 0


step = st.tuples(
    st.lists(st.integers(0, 10_000), max_size=4),  # remove (index into the tasks)
    st.lists(st.integers(0, 10_000), max_size=4),  # add under (index; 0 is the loop)
    st.lists(st.integers(0, 10_000), max_size=3),  # rename
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 10_000)), max_size=2),  # move
)


def mutate(world: World, change: tuple) -> None:
    removes, adds, renames, moves = change
    for pick in removes:
        tasks = sorted(world.parent)
        if tasks:
            world.remove(tasks[pick % len(tasks)])
    for pick in adds:
        parents = [LOOP, *sorted(world.parent)]
        world.add(parents[pick % len(parents)])
    for pick in renames:
        tasks = sorted(world.parent)
        if tasks:
            target = tasks[pick % len(tasks)]
            world.name[target] += "x" if pick % 2 else "-job"
    for pick, under in moves:
        tasks = sorted(world.parent)
        if tasks:
            target = tasks[pick % len(tasks)]
            parents = [p for p in [LOOP, *tasks] if p != target]
            parents = [p for p in parents if target not in world.ancestors(p)]
            world.parent[target] = parents[under % len(parents)]


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    first=st.integers(0, 12),
    steps=st.lists(step, min_size=1, max_size=6),
    needle=st.sampled_from(["", "job", "job-1", "x", "-job", "sleep", "zzz"]),
)
def test_tree_deltas_show_what_a_fresh_tree_shows(qtbot, qtlog, first, steps, needle):
    world = World()
    for i in range(first):
        world.add(LOOP if i % 3 == 0 else f"task-{i}")
    shadow = Shadow()
    model = TreeModel()
    tester = QAbstractItemModelTester(model, QAbstractItemModelTester.FailureReportingMode.Warning)
    model.set_filter(needle)
    delta, full = diff(shadow, iter(world.records()))
    assert full
    delta.full = tree_from(shadow.rows)
    model.apply(delta)
    signals = Signals(model)
    for change in steps:
        mutate(world, change)
        delta, full = diff(shadow, iter(world.records()))
        if full:
            delta.full = tree_from(shadow.rows)
        signals.clear()
        model.apply(delta)
        fresh = TreeModel()
        fresh.set_filter(needle)
        fresh_delta, _ = diff(Shadow(), iter(world.records()))
        fresh_delta.full = tree_from(dict(world.records()))
        fresh.apply(fresh_delta)
        assert canonical(shown(model)) == canonical(shown(fresh))
        assert model.hits == fresh.hits
        if not full:
            assert signals.counts["reset"] == signals.counts["layout"] == 0
            assert signals.rows <= 3 * delta.size + 2 * len(world.parent)  # moves carry rows
            if not delta.size:
                assert signals.rows == 0
    failures = [r.message for r in qtlog.records if "FAIL" in r.message]
    assert tester is not None and not failures


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    first=st.integers(0, 12),
    steps=st.lists(step, min_size=1, max_size=6),
    needle=st.sampled_from(["", "job", "job-1", "x", "zzz"]),
    column=st.sampled_from([-1, NAME, 2]),
    descending=st.booleans(),
)
def test_table_deltas_show_what_a_fresh_table_shows(
    qtbot, qtlog, first, steps, needle, column, descending
):
    from PyQt6.QtCore import Qt

    order = Qt.SortOrder.DescendingOrder if descending else Qt.SortOrder.AscendingOrder
    world = World()
    for _ in range(first):
        world.add(LOOP)
    shadow = Shadow()

    def table_records() -> list[tuple[str, Record]]:
        return [(t, ("", *r[1:])) for t, r in world.records() if r[1] != "loop"]

    model = TableModel()
    tester = QAbstractItemModelTester(model, QAbstractItemModelTester.FailureReportingMode.Warning)
    model.sort(column, order)
    model.set_filter(needle)
    delta, _ = diff(shadow, iter(table_records()))
    delta.full = table_from(shadow.rows, {})
    model.apply(delta)
    signals = Signals(model)
    for change in steps:
        mutate(world, change)
        delta, full = diff(shadow, iter(table_records()))
        if full:
            delta.full = table_from(shadow.rows, {})
        signals.clear()
        model.apply(delta)
        fresh = TableModel()
        fresh.sort(column, order)
        fresh.set_filter(needle)
        fresh_delta, _ = diff(Shadow(), iter(table_records()))
        fresh_delta.full = table_from(dict(table_records()), {})
        fresh.apply(fresh_delta)
        if column < 0:  # agent order: new rows come last, so compare as sets
            assert sorted(shown(model)) == sorted(shown(fresh))
        else:
            assert shown(model) == shown(fresh)
        assert len(model.rows) == len(table_records())
        if not full:
            assert signals.counts["reset"] == signals.counts["layout"] == 0
            assert signals.rows <= 2 * delta.size
    failures = [r.message for r in qtlog.records if "FAIL" in r.message]
    assert tester is not None and not failures


def test_a_large_change_is_one_reset_not_thousands_of_signals(qtbot):
    world = World()
    for _ in range(10):
        world.add(LOOP)
    shadow = Shadow()
    model = TreeModel()
    delta, _ = diff(shadow, iter(world.records()))
    delta.full = tree_from(shadow.rows)
    model.apply(delta)
    signals = Signals(model)
    for _ in range(BULK + 1):
        world.add(LOOP)
    delta, full = diff(shadow, iter(world.records()))
    assert full and delta.seq == 2
    delta.full = tree_from(shadow.rows)
    model.apply(delta)
    assert signals.counts["reset"] == 1 and signals.counts["inserted"] == 0
    assert model.rowCount(model.index_of(LOOP)) == BULK + 11


# ------------------------------------------------------------------ truthful cells

NOW = 1000.0  # the agent's clock at the first refresh


def truth_tree(shift: float, late_done: bool = False, default_name: str = "Task-7"):
    """A process -> thread -> loop -> tasks tree as observer.tree builds it, ``shift``
    seconds after the first refresh: an age known only as a lower bound, an exact one, a
    default-named task shown as its coroutine, a finished task (and ``late`` finished)."""
    from observer.format import task_label
    from observer.tree import TreeNode

    def task(target: str, name: str, age: float, **kw) -> TreeNode:
        coroutine = kw.pop("coroutine", "job")
        return TreeNode(
            "task",
            target,
            task_label(name, coroutine),
            kw.pop("state", "pending"),
            "",
            age + shift,
            "sleep",
            "app.py:3",
            real_name=name,
            coroutine=coroutine,
            **kw,
        )

    tasks = [
        task("task-1", "early", 30.0, age_exact=False),
        task("task-2", "late", 5.0, **({"state": "done", "finished": True} if late_done else {})),
        task("task-3", default_name, 12.0, coroutine="outer_job"),
        task("task-4", "finished-ok", 20.0, state="done", finished=True),
    ]
    loop = TreeNode("loop", LOOP, "loop", children=tasks)
    thread = TreeNode("thread", "thread-1", "MainThread", children=[loop])
    return TreeNode("process", "pid-1", "host", age=100.0 + shift, children=[thread])


def truth_refresh(shadow: Shadow, table: bool, **kw):
    """One refresh of the truth tree, as the worker makes it (tree_delta / table_delta)."""
    from observer.gui.delta import table_records, walk_records

    shift = kw.pop("shift", 0.0)
    now = NOW + shift
    top = truth_tree(shift, **kw)
    if table:
        delta, full = diff(shadow, table_records(top, {}, now))
        if full:
            delta.full = table_from(shadow.rows, {})
    else:
        delta, full = diff(shadow, walk_records(top, {}, now))
        if full:
            delta.full = tree_from(shadow.rows)
    delta.now = now
    return delta


@pytest.mark.parametrize("table", [False, True], ids=["tree", "table"])
def test_truthful_cells_survive_deltas_and_ages_count_on_screen(qtbot, table):
    """Lower bounds keep their '>= ' and tooltip as they age on screen without a signal;
    a finished task has no age and is greyed; a default name shows the coroutine with the
    real name in the tooltip and the filter; a task that finishes, or whose hidden real
    name alone changes, is a changed row; an age sort puts the oldest first, bound or not,
    finished tasks last."""
    from PyQt6.QtCore import Qt
    from PyQt6.QtGui import QColor

    from observer.format import AGE_BOUND_NOTE
    from observer.gui.models import FOREGROUND, TOOLTIP
    from observer.gui.rows import AGE, COROUTINE

    shadow = Shadow()
    model = TableModel() if table else TreeModel()
    tester = QAbstractItemModelTester(model, QAbstractItemModelTester.FailureReportingMode.Fatal)

    def cell(target: str, column: int, role=Qt.ItemDataRole.DisplayRole):
        if table:
            return model.index(model.row_of(target), column).data(role)
        return model.index_of(target, column).data(role)

    model.apply(truth_refresh(shadow, table))
    assert cell("task-1", AGE) == ">= 30.0s"
    assert cell("task-1", AGE, TOOLTIP) == AGE_BOUND_NOTE
    assert (cell("task-2", AGE), cell("task-2", AGE, TOOLTIP)) == ("5.0s", None)
    assert cell("task-4", AGE) == "" and cell("task-4", AGE, TOOLTIP) is None
    assert isinstance(cell("task-4", NAME, FOREGROUND), QColor)  # greyed
    assert cell("task-3", NAME) == "outer_job" and cell("task-3", COROUTINE) == "outer_job"
    assert "Task-7" in cell("task-3", NAME, TOOLTIP)

    signals = Signals(model)
    delta = truth_refresh(shadow, table, shift=2.0)  # everything two seconds older
    assert delta.full is None and delta.size == 0
    model.apply(delta)
    assert signals.rows == 0, signals.counts
    assert cell("task-1", AGE) == ">= 32.0s" and cell("task-2", AGE) == "7.0s"

    delta = truth_refresh(shadow, table, shift=3.0, late_done=True, default_name="Task-9")
    assert sorted(target for target, _ in delta.changed) == ["task-2", "task-3"]
    model.apply(delta)
    assert signals.counts["reset"] == signals.counts["layout"] == 0, signals.counts
    assert signals.counts["changed"] >= 1 and signals.rows <= 2 * 2, signals.counts
    assert cell("task-2", AGE) == "" and isinstance(cell("task-2", NAME, FOREGROUND), QColor)
    assert "Task-9" in cell("task-3", NAME, TOOLTIP)
    model.set_filter("task-9")  # the real name finds the row that shows its coroutine
    assert cell("task-3", NAME) == "outer_job"
    model.set_filter("task-7")
    if table:
        assert model.rowCount() == 0
        model.set_filter("")
        model.sort(AGE, Qt.SortOrder.DescendingOrder)
        order = [model.index(row, ID).data() for row in range(model.rowCount())]
        tasks = [target for target in order if target.startswith("task-")]
        assert tasks[:2] == ["task-1", "task-3"]  # the bound is the oldest
        assert set(tasks[2:]) == {"task-2", "task-4"}  # finished: no age, last
    else:
        assert not model.index_of("task-3").isValid()
    assert tester is not None


# ------------------------------------------------------------------ against a live agent

BULK_TASKS = 3000
WAIT = 30_000  # ms


def refreshed(qtbot, window, tab) -> None:
    """One refresh of the shown tab, drawn."""
    with qtbot.waitSignal(tab.applied, timeout=WAIT):
        window.refresh()


def task_ids_in(model: TreeModel | TableModel) -> set[str]:
    """Task ids the model holds (shown or not)."""
    if isinstance(model, TreeModel):
        return {t for t in model.data_.by_id if t.startswith("task-")}
    return {t for t in model.rows.ids if t.startswith("task-")}  # a free slot's id is ""


def bulk_ids(model: TreeModel | TableModel, count: int) -> list[str]:
    """Ids of ``count`` of the host's bulk-N tasks, as the model shows them."""
    if isinstance(model, TreeModel):
        rows = [(model.data_.row_values(i)[NAME], t) for t, i in model.data_.by_id.items()]
    else:
        rows = list(zip(model.rows.text[NAME], model.rows.ids, strict=True))
    return sorted(t for name, t in rows if name.startswith("bulk-"))[:count]


def state_of(model: TreeModel | TableModel, target: str) -> str:
    if isinstance(model, TreeModel):
        return model.data_.row_values(model.data_.by_id[target])[STATE]
    return model.rows.text[STATE][model.rows.ids.index(target)]


def worker_ids(node) -> set[str]:
    return {t.id for t in node.tasks() if t.name == "worker" and t.state == "pending"}


@pytest.mark.parametrize("key", ["processes", "table"])
def test_a_steady_refresh_signals_only_the_rows_that_changed(qtbot, window, make_host, keys, key):
    """Between two refreshes of 3000 tasks, five are cancelled and the supervised worker is
    cancelled and restarted: the model changes those rows (plus a few thread rows), resets
    nothing, and then holds exactly what the agent has."""
    from tests.helpers import node_spec

    host = make_host("--tasks", str(BULK_TASKS))
    window.set_paused(True)
    tab = window.show_tab(key)
    with qtbot.waitSignal(tab.applied, timeout=WAIT):
        window.add_link(node_spec(host.address, keys))
    qtbot.waitUntil(lambda: len(task_ids_in(tab.model)) > BULK_TASKS, timeout=WAIT)
    refreshed(qtbot, window, tab)  # steady from here
    signals = Signals(tab.model)
    victims = bulk_ids(tab.model, 5)
    with host.connect() as node:
        (worker,) = worker_ids(node)
        for target in [*victims, worker]:
            node.cancel(target)
        qtbot.waitUntil(lambda: bool(worker_ids(node) - {worker}), timeout=WAIT)
        states = {t.id: t.state for t in node.tasks()}
        ended = "cancelled" if FINISHED_LISTED else None
        assert all(states.get(v) == ended for v in victims), states
        refreshed(qtbot, window, tab)
        assert signals.counts["reset"] == signals.counts["layout"] == 0, signals.counts
        assert signals.counts["inserted"] >= 1, signals.counts  # the new worker
        assert signals.rows >= len(victims) + 1, signals.counts
        assert signals.rows <= len(victims) + 25, signals.counts  # and threads, loops
        if FINISHED_LISTED:
            assert all(state_of(tab.model, v) == "cancelled" for v in victims)
        else:
            assert not set(victims) & task_ids_in(tab.model)
        assert worker_ids(node) <= task_ids_in(tab.model)
        for _ in range(5):  # the old worker leaves the agent's table when the host frees it
            truth = {t.id for t in node.snapshot().tasks}
            if task_ids_in(tab.model) == truth:
                break
            refreshed(qtbot, window, tab)
        assert task_ids_in(tab.model) == truth  # nothing lost, nothing left over
    assert signals.counts["reset"] == signals.counts["layout"] == 0, signals.counts


def test_the_tree_filter_follows_refreshes_without_a_reset(qtbot, window, make_host, keys):
    """With a filter typed, the filter shows exactly the matches; a refresh that changes a
    match (cancelled) changes that row, resets nothing, keeps every match; clearing the
    filter makes every row reachable through the Qt API again."""
    from tests.helpers import node_spec

    host = make_host("--tasks", str(BULK_TASKS))
    window.set_paused(True)
    tab = window.show_tab("processes")
    with qtbot.waitSignal(tab.applied, timeout=WAIT):
        window.add_link(node_spec(host.address, keys))
    qtbot.waitUntil(lambda: len(task_ids_in(tab.model)) > BULK_TASKS, timeout=WAIT)
    model = tab.model
    qtbot.keyClicks(tab.filter, "bulk-12")
    expected = {
        t
        for t, item in model.data_.by_id.items()
        if "bulk-12" in model.data_.row_values(item)[NAME].lower()
    }
    assert len(expected) == 1 + 10 + 100  # bulk-12, bulk-120..129, bulk-1200..1299

    def matches_shown() -> set[str]:
        out, stack = set(), [QModelIndex()]
        while stack:
            parent = stack.pop()
            for row in range(model.rowCount(parent)):
                index = model.index(row, 0, parent)
                if "bulk-12" in (model.index(row, NAME, parent).data() or ""):
                    out.add(index.data(ID_ROLE))
                stack.append(index)
        return out

    assert matches_shown() == expected and model.hits == len(expected)
    signals = Signals(model)
    victim = sorted(expected)[0]
    with host.connect() as node:
        node.cancel(victim)
        qtbot.waitUntil(
            lambda: {t.id: t.state for t in node.tasks()}.get(victim) != "pending",
            timeout=WAIT,
        )
    refreshed(qtbot, window, tab)
    assert signals.counts["reset"] == signals.counts["layout"] == 0, signals.counts
    if FINISHED_LISTED:
        assert matches_shown() == expected  # still a match, now cancelled
        assert state_of(model, victim) == "cancelled"
    else:
        expected.discard(victim)  # no longer listed: its row went
        assert matches_shown() == expected
    assert model.hits == len(expected)
    tab.filter.clear()
    assert len(task_ids_in(model)) == len(
        [i for i in model.data_.by_id.values() if i.kind == "task"]
    )
    total = sum(1 for _ in model.data_.by_id)
    seen, stack = 0, [QModelIndex()]
    while stack:  # every row is reachable through the Qt API again
        parent = stack.pop()
        for row in range(model.rowCount(parent)):
            seen += 1
            stack.append(model.index(row, 0, parent))
    assert seen == total


class _Paints(QObject):
    """Counts the paint events a widget gets."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def eventFilter(self, watched: QObject | None, event: QEvent | None) -> bool:
        if event is not None and event.type() == QEvent.Type.Paint:
            self.count += 1
        return False


@pytest.mark.parametrize("key", ["processes", "table"])
def test_a_refresh_that_adds_and_removes_rows_draws_the_view_once(
    qtbot, window, make_host, keys, key
):
    """Tasks cancelled and a worker restarted between two refreshes: the view is painted
    once for the refresh. Qt's views lay themselves out at their next paint when rows come
    or go and ask for another paint from there: every such refresh drew the view twice,
    the second a full repaint of its own (~20 ms on a master's tree)."""
    from tests.helpers import node_spec

    host = make_host("--tasks", "200")
    window.set_paused(True)
    tab = window.show_tab(key)
    tab.columns.every = 3600.0  # no column fit (every 5 s, a resize repaints) in the count
    with qtbot.waitSignal(tab.applied, timeout=WAIT):
        window.add_link(node_spec(host.address, keys))
    qtbot.waitUntil(lambda: len(task_ids_in(tab.model)) > 200, timeout=WAIT)
    refreshed(qtbot, window, tab)
    paints = _Paints()
    tab.view.viewport().installEventFilter(paints)
    qtbot.waitUntil(lambda: paints.count >= 1, timeout=WAIT)  # the last refresh's drawing
    with host.connect() as node:
        (worker,) = worker_ids(node)
        for target in [*bulk_ids(tab.model, 3), worker]:
            node.cancel(target)
        qtbot.waitUntil(lambda: bool(worker_ids(node) - {worker}), timeout=WAIT)
    for _ in range(3):
        QApplication.processEvents()
    signals = Signals(tab.model)
    paints.count = 0
    refreshed(qtbot, window, tab)
    assert signals.counts["inserted"] >= 1, signals.counts  # rows came: a layout was due
    qtbot.waitUntil(lambda: paints.count >= 1, timeout=WAIT)
    for _ in range(3):  # whatever the first paint asked for is posted by now
        QApplication.processEvents()
    assert paints.count == 1
