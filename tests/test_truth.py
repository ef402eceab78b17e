"""Truthful task values (issue 14) through a real host whose tasks are older than the agent.

tests/hosts/ages.py makes tasks before it starts the agent and prints its monotonic clock
then; the tests wait on that clock (not sleeps) and check what the real client, CLI and
GUI rows say: exact ages for tasks made after the agent hooked the loop, lower bounds
(``>= ``) before; default names shown as the coroutine; the coroutine a task runs apart
from where it is suspended; finished tasks as finished; host threads apart from the
agent's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent import compat
from agent.schema import Snapshot, TaskInfo
from observer.client import Node, connect
from observer.format import AGE_BOUND_NOTE
from tests.helpers import ROOT, HostProcess, echo_ok, line_value, wait_until

AGES = Path(__file__).parent / "hosts" / "ages.py"
INNER_LINE = next(
    i for i, text in enumerate(AGES.read_text().splitlines(), 1) if "# INNER-LINE" in text
)
HOOKS = compat.factory_keeps_task_names()  # False on 3.13.0: every age is a lower bound
OLD_FOR = 1.0  # seconds of the host's clock between its early tasks and the agent's start


@dataclass
class Ages:
    process: HostProcess
    keys: Any
    early: float  # the host's monotonic clock when it made its early tasks
    address: str = ""
    echo: str = ""

    def clock(self) -> float:
        mark = self.process.mark()
        self.process.send("clock")
        return float(self.process.wait_line(r"^event: clock mono=(\S+)$", start=mark).group(1))

    def do(self, command: str, pattern: str) -> str:
        mark = self.process.mark()
        self.process.send(command)
        return self.process.wait_line(pattern, start=mark).group(1)

    def connect(self) -> Node:
        return connect(
            self.address, token_file=self.keys.operator_token, fingerprint=self.keys.fingerprint
        )

    def creds(self) -> list[str]:
        return [
            self.address,
            "--token-file",
            str(self.keys.operator_token),
            "--fingerprint",
            self.keys.fingerprint,
        ]


def start_ages(keys: Any, *args: str, env: dict[str, str] | None = None) -> Ages:
    """The host with its early tasks OLD_FOR seconds old (by its own clock) when the agent
    starts."""
    argv = [sys.executable, "-m", "tests.hosts.ages", str(keys.directory), *args]
    proc = HostProcess(argv, env=env)
    early = float(proc.wait_line(r"^event: early mono=(\S+)$").group(1))
    proc.wait_line(r"^event: ready$")
    host = Ages(proc, keys, early)
    wait_until(lambda: host.clock() - early >= OLD_FOR, message="early tasks a second old")
    proc.send("start")
    host.address = line_value(proc, "agent")
    host.echo = line_value(proc, "echo")
    return host


@pytest.fixture
def ages(keys: Any) -> Iterator[Ages]:
    host = start_ages(keys)
    yield host
    host.process.stop()


def by_name(snap: Snapshot) -> dict[str, TaskInfo]:
    return {t.name: t for t in snap.tasks}


def late_listed(node: Node) -> Snapshot | None:
    """A snapshot once it lists the host's late tasks (a pass is shared for a moment)."""
    snap = node.snapshot()
    return snap if "late" in by_name(snap) else None


def coroutine_of(snap: Snapshot, coroutine: str) -> TaskInfo:
    return next(t for t in snap.tasks if t.coroutine == coroutine)


def table_of(snap: Snapshot) -> Any:
    """The Tasks & threads model as the GUI fills it: a first refresh worked out by the
    worker's delta (observer.gui.delta), applied to the model."""
    from observer.gui.delta import Shadow, table_delta
    from observer.gui.models import TableModel

    model = TableModel()
    model.apply(table_delta(snap, Shadow()))
    return model


def observer(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "observer", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_ages_are_exact_after_the_hook_and_lower_bounds_before(ages):
    with ages.connect() as node:
        node.snapshot()  # the agent has met the loop: its factory is in place
        late = float(ages.do("late", r"^event: late mono=(\S+)$"))
        wait_until(lambda: ages.clock() - late >= 0.5, message="late tasks half a second old")
        before = ages.clock()
        snap = wait_until(lambda: late_listed(node))
        after = ages.clock()
    tasks = by_name(snap)
    early, late_task = tasks["early"], tasks["late"]
    assert not early.age_exact and early.age is not None
    assert early.age <= after - ages.early + 0.01  # a lower bound of the true age...
    assert after - ages.early - early.age >= OLD_FOR - 0.3  # ...that says it is one
    assert late_task.age_exact is HOOKS and late_task.age is not None
    if HOOKS:
        assert before - late - 0.05 <= late_task.age <= after - late + 0.05  # the true age
    else:
        assert late_task.age <= after - late + 0.01
    assert echo_ok(ages.echo)
    assert ages.do("stop", r"^event: stopped factory=(\S+)$") == "none"  # taken out
    assert echo_ok(ages.echo)


def test_ps_and_gui_rows_say_which_ages_are_bounds_and_sort_the_oldest_first(ages):
    with ages.connect() as node:
        node.snapshot()
        ages.do("late", r"^event: late mono=(\S+)$")
        snap = wait_until(lambda: late_listed(node))
    text = observer("ps", *ages.creds())
    early_line = next(line for line in text.splitlines() if " early " in line)
    late_line = next(line for line in text.splitlines() if " late " in line)
    assert ">= " in early_line and (">= " in late_line) is not HOOKS
    assert AGE_BOUND_NOTE in text
    rows = json.loads(observer("ps", *ages.creds(), "--json"))["tasks"]
    flags = {t["name"]: t["age_exact"] for t in rows}
    assert flags["early"] is False and flags["late"] is HOOKS

    from PyQt6.QtCore import Qt

    from observer.gui.models import TOOLTIP
    from observer.gui.rows import AGE, NAME

    model = table_of(snap)
    model.sort(AGE, Qt.SortOrder.DescendingOrder)
    names = [model.index(r, NAME).data() for r in range(model.rowCount())]
    kinds = [model.index(r, 1).data() for r in range(model.rowCount())]
    tasks = [n for n, k in zip(names, kinds, strict=True) if k == "task"]
    assert tasks.index("early") < tasks.index("late")  # the older, though only a bound
    row = names.index("early")
    assert model.index(row, AGE).data().startswith(">= ")
    assert model.index(row, AGE).data(TOOLTIP) == AGE_BOUND_NOTE
    if HOOKS:
        assert model.index(names.index("late"), AGE).data(TOOLTIP) is None


def test_default_names_show_the_coroutine_and_stay_searchable(ages):
    with ages.connect() as node:
        node.snapshot()
        ages.do("late", r"^event: late mono=(\S+)$")
        snap = wait_until(lambda: late_listed(node))
    outer = coroutine_of(snap, "outer_job")
    assert outer.name.startswith("Task-")  # the real name, as --json gives it
    text = observer("ps", *ages.creds())
    line = next(line for line in text.splitlines() if line.startswith(outer.id + " "))
    assert line.split()[1] == "outer_job" and outer.name not in line
    tree = observer("tree", *ages.creds())
    assert any(f"task outer_job  ({outer.id})" in line for line in tree.splitlines())

    from observer.gui.models import TOOLTIP
    from observer.gui.rows import NAME

    model = table_of(snap)
    model.set_filter(outer.name)  # the real name still finds the row
    assert model.rowCount() == 1
    assert model.index(0, NAME).data() == "outer_job"
    assert outer.name in model.index(0, NAME).data(TOOLTIP)


def test_ps_tree_and_gui_show_the_coroutine_apart_from_where_it_is_suspended(ages):
    with ages.connect() as node:
        node.snapshot()
        ages.do("late", r"^event: late mono=(\S+)$")
        snap = wait_until(lambda: late_listed(node))
    outer = coroutine_of(snap, "outer_job")
    assert (outer.function, outer.line) == ("inner_wait", INNER_LINE)
    where = f"inner_wait at hosts/ages.py:{INNER_LINE}"
    text = observer("ps", *ages.creds())
    header = next(line for line in text.splitlines() if line.startswith("ID ") and "AGE" in line)
    assert "COROUTINE" in header and "SUSPENDED AT" in header
    line = next(line for line in text.splitlines() if line.startswith(outer.id + " "))
    assert "outer_job" in line and where in line
    tree = observer("tree", *ages.creds())
    line = next(line for line in tree.splitlines() if f"({outer.id})" in line)
    assert f"runs outer_job  suspended in {where}" in line

    from observer.gui.rows import COROUTINE, FUNCTION, LOCATION

    model = table_of(snap)
    model.set_filter("outer_job")
    assert model.rowCount() == 1
    assert model.index(0, COROUTINE).data() == "outer_job"
    assert model.index(0, FUNCTION).data() == "inner_wait"  # as a thread's: where it is
    assert model.index(0, LOCATION).data() == f"hosts/ages.py:{INNER_LINE}"


def test_finished_tasks_are_shown_as_finished_never_as_live(ages):
    with ages.connect() as node:
        node.snapshot()
        ages.do("late", r"^event: late mono=(\S+)$")
        snap = wait_until(lambda: late_listed(node))
    tasks = by_name(snap)
    if compat.TASKS_PER_THREAD:  # 3.14+: asyncio lists pending tasks only: left out
        assert not {"finished-ok", "finished-cancelled", "finished-failed"} & set(tasks)
        assert all(t.state == "pending" for t in snap.tasks)
        return
    assert (tasks["finished-ok"].state, tasks["finished-ok"].error) == ("done", "")
    assert tasks["finished-cancelled"].state == "cancelled"
    assert (tasks["finished-failed"].state, tasks["finished-failed"].error) == (
        "failed",
        "ValueError",
    )
    lines = observer("ps", *ages.creds()).splitlines()
    header = next(line for line in lines if line.startswith("ID ") and "AGE" in line)
    state_at, age_at, end = (header.index(c) for c in ("STATE", "AGE", "COROUTINE"))
    for name, state in (
        ("finished-ok", "done"),
        ("finished-cancelled", "cancelled"),
        ("finished-failed", "failed: ValueError"),
    ):
        line = next(line for line in lines if f" {name} " in line)
        assert line[state_at:age_at].strip() == state
        assert line[age_at:end].strip() == ""  # no live age

    from PyQt6.QtGui import QColor

    from observer.gui.models import FOREGROUND
    from observer.gui.rows import AGE, NAME, STATE

    model = table_of(snap)
    model.set_filter("finished-")
    assert model.rowCount() == 3
    for row in range(3):
        assert model.index(row, AGE).data() == ""  # no live age
        colour = model.index(row, NAME).data(FOREGROUND)
        assert isinstance(colour, QColor)  # the whole row greyed
        assert model.index(row, STATE).data() in ("done", "cancelled", "failed: ValueError")
    assert echo_ok(ages.echo)


def test_thread_counts_leave_out_the_agents_own_threads(ages):
    """Every connection is one more agent thread: the host's count must not move."""

    def sample_after(node: Node, moment: float) -> Any:
        def newer() -> Any:
            samples = [s for s in node.history(moment).samples if s.time > moment]
            return samples[-1] if samples else None

        return wait_until(newer, message="a sample after the connection")

    with ages.connect() as first:
        one = sample_after(first, first.history().samples[-1].time)
        with ages.connect() as second:
            second.snapshot()
            two = sample_after(first, one.time)
            assert two.threads == one.threads  # the host's threads: no saw-tooth
            assert two.agent_threads == one.agent_threads + 1
        again = wait_until(
            lambda: (
                sample_after(first, first.history().samples[-1].time).agent_threads
                == one.agent_threads
            ),
            message="the second connection's thread gone",
        )
        assert again
        last = first.history().samples[-1]
        assert last.threads == one.threads
        # the agent's threads are all named so (a thread on its way out is told by name)
        agents = [t for t in first.threads() if t.is_agent]
        assert agents and all(t.name.startswith("observer-agent") for t in agents), agents


def test_the_apps_task_factory_keeps_working_and_comes_back_on_stop(keys):
    host = start_ages(keys, "--app-factory")
    try:
        before = int(host.do("calls", r"^event: app-factory calls=(\d+)$"))
        with host.connect() as node:
            node.snapshot()
            host.do("late", r"^event: late mono=(\S+)$")
            snap = wait_until(lambda: late_listed(node))
        assert int(host.do("calls", r"^event: app-factory calls=(\d+)$")) >= before + 5
        late = by_name(snap)["late"]
        assert late.age_exact is HOOKS
        if HOOKS:  # (3.13.0 names them "None" for any factory, the app's own too)
            assert coroutine_of(snap, "outer_job").name.startswith("Task-")
        assert host.do("stop", r"^event: stopped factory=(\S+)$") == "app"
        assert echo_ok(host.echo)
    finally:
        host.process.stop()


@pytest.mark.skipif(not compat.EAGER_TASKS, reason=f"eager tasks need 3.12+ ({sys.version})")
def test_eager_tasks_keep_running_eagerly_and_get_exact_ages(keys):
    host = start_ages(keys, "--eager")
    try:
        with host.connect() as node:
            node.snapshot()
            host.do("late", r"^event: late mono=(\S+)$")
            snap = wait_until(lambda: late_listed(node))
        tasks = by_name(snap)
        assert tasks["late"].age_exact is HOOKS
        finished = tasks.get("finished-ok")  # done in its eager step: asyncio never lists it
        assert finished is None or finished.state == "done"
        assert host.do("stop", r"^event: stopped factory=(\S+)$") == "eager"
        assert echo_ok(host.echo)
    finally:
        host.process.stop()


@pytest.mark.skipif(not HOOKS, reason=f"{sys.version.split()[0]} hooks no loop")
def test_a_loop_started_after_the_agent_is_hooked_within_a_second_unobserved(keys):
    """The agent starts before the app's loop (python -m agent run), nobody connects: the
    loop is still found and hooked, so its tasks get exact ages (the idle sampler runs
    every 10 s; loops are looked for every second)."""
    argv = [sys.executable, "-m", "tests.hosts.ages", str(keys.directory), "--agent-first"]
    proc = HostProcess(argv)
    try:
        hooked = proc.wait_line(r"^event: hooked (\S+)$").group(1)
        assert hooked != "never"
        host = Ages(proc, keys, 0.0, line_value(proc, "agent"), line_value(proc, "echo"))
        with host.connect() as node:
            tasks = by_name(node.snapshot())
        assert tasks["after-hook"].age_exact and not tasks["early"].age_exact
        assert echo_ok(host.echo)
    finally:
        proc.stop()


def test_the_operator_can_keep_the_agent_out_of_the_loops_task_factory(keys):
    host = start_ages(keys, env={"OBSERVER_AGENT_TASK_FACTORY": "0"})
    try:
        with host.connect() as node:
            node.snapshot()
            host.do("late", r"^event: late mono=(\S+)$")
            snap = wait_until(lambda: late_listed(node))
        assert not any(t.age_exact for t in snap.tasks)  # every age a lower bound
        assert host.do("stop", r"^event: stopped factory=(\S+)$") == "none"
        assert echo_ok(host.echo)
    finally:
        host.process.stop()
