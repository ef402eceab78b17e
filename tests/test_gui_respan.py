"""Tasks ending in scattered places under one parent (a churning worker's loop): the tree
model redoes the span at once (two signals, not one per run), still shows exactly what
a fresh model shows (QAbstractItemModelTester on every signal), keeps a task that has
children expanded, and the Processes tab puts the current row back."""

from __future__ import annotations

import itertools

import pytest

pytest.importorskip("PyQt6")
pytest.importorskip("pytestqt")

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PyQt6.QtTest import QAbstractItemModelTester
from PyQt6.QtWidgets import QTreeView

from observer.gui.delta import Shadow, diff, tree_from
from observer.gui.models import SCATTERED, TreeModel
from tests.test_gui_delta import LOOP, Signals, World, canonical, shown


def applied(model: TreeModel, shadow: Shadow, world: World) -> bool:
    delta, full = diff(shadow, iter(world.records()))
    if full:
        delta.full = tree_from(shadow.rows)
    model.apply(delta)
    return full


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    size=st.integers(12, 30),
    picks=st.sets(st.integers(0, 10_000), min_size=SCATTERED + 1, max_size=16),
    nested=st.booleans(),
    added=st.integers(0, 10),
)
def test_scattered_removals_show_what_a_fresh_tree_shows(qtbot, qtlog, size, picks, nested, added):
    world = World()
    tasks = [world.add(LOOP) for _ in range(size)]
    inner = world.add(tasks[-1]) if nested else None  # a kept task with a child: no respan
    shadow, model = Shadow(), TreeModel()
    tester = QAbstractItemModelTester(model, QAbstractItemModelTester.FailureReportingMode.Warning)
    view = QTreeView()
    view.setModel(model)
    assert applied(model, shadow, world)
    view.expandAll()
    gone = sorted(
        {tasks[p % (size - 1)] for p in picks}, key=lambda t: int(t[5:])
    )  # never the last (inner's parent)
    kept = next(t for t in tasks if t not in gone)
    view.setCurrentIndex(model.index_of(kept))
    for target in gone:
        world.remove(target)
    for _ in range(added):
        world.add(LOOP)
    signals = Signals(model)
    assert not applied(model, shadow, world)
    fresh, fresh_shadow = TreeModel(), Shadow()
    applied(fresh, fresh_shadow, world)
    assert canonical(shown(model)) == canonical(shown(fresh))
    if inner is not None:  # its parent was not taken out and put back: still expanded
        assert view.isExpanded(model.index_of(tasks[-1]))
    runs = sum(1 for a, b in itertools.pairwise(gone) if int(b[5:]) != int(a[5:]) + 1) + 1
    if not nested and runs > SCATTERED:
        assert signals.counts["removed"] == 1 and signals.counts["reset"] == 0
    failures = [r.message for r in qtlog.records if "FAIL" in r.message]
    assert tester is not None and not failures
