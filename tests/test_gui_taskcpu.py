"""CPU per task in the GUI against a real host (tests/hosts/taskcpu.py): an operator ticks
the box in the Tasks & threads tab and the CPU-bound task gets the top CPU figure, in that
tab and in the Processes tree; a viewer finds the box disabled with the reason; unticking
turns it off in the host."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

pytest.importorskip("PyQt6")
pytest.importorskip("pytestqt")

from observer.gui.rows import CPU, NAME
from observer.gui.tab import CPU_REASON
from tests.helpers import node_spec as spec
from tests.test_taskcpu import TOOL_ON, TOOLS_OFF, CpuHost

WAIT = 20_000  # ms


@pytest.fixture
def cpu_host(keys) -> Iterator[CpuHost]:
    host = CpuHost(keys)
    yield host
    host.process.stop()


def cpu_of(tab, name: str) -> float:
    """A row's CPU cell as a number (-1: empty), by its Name."""
    rows = tab.model.rows
    if rows is None:
        return -1.0
    for slot, text in enumerate(rows.text[NAME]):
        if text == name and rows.text[CPU][slot]:
            return float(rows.text[CPU][slot].rstrip("%"))
    return -1.0


@pytest.mark.skipif(sys.version_info < (3, 12), reason="sys.monitoring is 3.12+")
def test_operator_turns_it_on_and_the_cpu_bound_task_reads_highest(qtbot, window, cpu_host, keys):
    window.set_interval(1)
    table = window.show_tab("table")
    window.add_link(spec(cpu_host.address, keys, token="operator"))
    qtbot.waitUntil(lambda: table.cpu_box.isEnabled(), timeout=WAIT)
    assert not table.cpu_box.isChecked()
    mark = cpu_host.process.mark()
    table.cpu_box.setChecked(True)
    cpu_host.process.wait_line(TOOL_ON, start=mark)
    qtbot.waitUntil(lambda: cpu_of(table, "hot-task") > 10.0, timeout=WAIT)
    hot = cpu_of(table, "hot-task")
    others = [cpu_of(table, f"idle-{i}") for i in range(10)] + [cpu_of(table, "blocker-task")]
    assert all(value < hot for value in others)
    assert table.cpu_box.isChecked()
    tree = window.show_tab("processes")
    qtbot.waitUntil(
        lambda: any(
            item.values[NAME] == "hot-task" and item.values[CPU].endswith("%")
            for item in (tree.model.data_.by_id.values() if tree.model.data_ else ())
        ),
        timeout=WAIT,
    )
    window.show_tab("table")
    mark = cpu_host.process.mark()
    table.cpu_box.setChecked(False)
    cpu_host.process.wait_line(TOOLS_OFF, start=mark)
    qtbot.waitUntil(lambda: cpu_of(table, "hot-task") < 0, timeout=WAIT)


def test_a_viewer_finds_the_box_disabled_and_says_why(qtbot, window, cpu_host, keys):
    window.set_interval(1)
    table = window.show_tab("table")
    window.add_link(spec(cpu_host.address, keys, token="viewer"))
    qtbot.waitUntil(
        lambda: table.model.rows is not None and len(table.model.rows) > 0, timeout=WAIT
    )
    assert not table.cpu_box.isEnabled()
    assert table.cpu_box.toolTip() == CPU_REASON
