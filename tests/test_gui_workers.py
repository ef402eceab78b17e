"""The desktop observer on a pre-fork master: its workers' threads, loops and tasks in the
Processes tree, reached through the master's one port, and acted on exactly as the
master's own. Real master (tests/hosts/forker.py --workers), real forks, real window.
"""

from __future__ import annotations

import os
import re
import signal

import pytest

pytest.importorskip("PyQt6")
pytest.importorskip("pytestqt")

from hypothesis import given
from hypothesis import strategies as st
from PyQt6.QtCore import Qt
from PyQt6.QtWidgets import QMessageBox

from agent.schema import ChildInfo
from observer.gui.rows import NAME, TARGET
from observer.gui.workers import WorkerWatch, same_process, split_target
from tests.helpers import node_spec as spec
from tests.test_forks import forker  # noqa: F401  (the fixture)

WAIT = 20_000  # ms


def rows(window) -> list:
    data = window.processes.model.data_
    return [(item, data.row_values(item)) for item in data.by_id.values()] if data else []


def worker_jobs(window, pid: int) -> list:
    """The worker-job task rows inside worker ``pid``."""
    return [
        item
        for item, values in rows(window)
        if item.kind == "task"
        and values[NAME] == "worker-job"
        and item.id.startswith(f"pid-{pid}/task-")
    ]


def test_processes_tree_shows_each_workers_threads_loops_and_tasks(qtbot, window, forker):  # noqa: F811
    """Master -> worker row (its role label, kind child) -> the worker's thread -> its loop
    -> worker-job, for both workers, ids as pid-N/ID; each worker's MainThread shows its
    native id in the ID column like the master's."""
    master = forker("--workers")
    pids = [master.fork("fork", "loop")[0] for _ in range(2)]
    window.show_tab("processes")
    window.add_link(spec(master.agent, master.keys))
    qtbot.waitUntil(lambda: all(worker_jobs(window, pid) for pid in pids), timeout=WAIT)
    for pid in pids:
        job = worker_jobs(window, pid)[0]
        chain = []
        up = job.parent
        while up is not None and up.id:
            chain.append((up.kind, up.id))
            up = up.parent
        kinds = [kind for kind, _id in chain]  # worker-job is awaited by the main task
        assert kinds == ["task", "loop", "thread", "child", "process"], chain
        assert chain[3][1] == f"pid-{pid}" and chain[2][1].startswith(f"pid-{pid}/thread-")
        data = window.processes.model.data_
        thread = job.parent.parent.parent
        assert data.row_values(thread)[2].startswith("tid-")
        # under the worker's row the ID column reads as inside the worker; the full
        # pid-N/ID is the row's target (tooltip, actions)
        assert data.row_values(job)[2] == job.id.split("/", 1)[1]
        assert data.row_values(job)[TARGET] == job.id
        worker_row = data.row_values(thread.parent)
        assert worker_row[NAME].startswith("ForkProcess-"), worker_row
        index = window.processes.model.index_of(job.id)  # on screen: parents expanded
        assert index.isValid() and window.processes.view.isExpanded(index.parent())
    assert "(2 workers)" in window.counts_label.text()
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
        assert master.reap(pid) == -15


def test_cancel_from_the_tree_reaches_the_workers_task_through_the_master(qtbot, window, forker):  # noqa: F811
    """Delete on a worker's task row, confirmed: the master relays the cancel to that
    worker alone (its loop sees the CancelledError, the other worker's does not), audits
    it as `cancel in worker PID`, and the inspect window reads the task's await chain
    from the worker."""
    master = forker("--workers")
    pids = [master.fork("fork", "loop")[0] for _ in range(2)]
    tab = window.show_tab("processes")
    window.add_link(spec(master.agent, master.keys))
    qtbot.waitUntil(lambda: all(worker_jobs(window, pid) for pid in pids), timeout=WAIT)
    job = worker_jobs(window, pids[1])[0]
    target = job.id
    inspector = window.targets.inspect(window.links[0], target, "task", "worker-job")
    qtbot.waitUntil(lambda: inspector.stack is not None, timeout=WAIT)
    assert inspector.stack.frames and not inspector.dead
    assert "worker-job" in inspector.header.text()
    inspector.close()

    window.activateWindow()  # back from the inspect window: Delete goes to the tree
    tab.view.setFocus()
    qtbot.waitUntil(tab.view.hasFocus, timeout=WAIT)
    index = tab.model.index_of(target)
    tab.view.setCurrentIndex(index)
    mark = master.process.mark()
    qtbot.keyClick(tab.view, Qt.Key.Key_Delete)
    box = window.targets.confirm_box
    assert box is not None and target in box.text()
    with qtbot.waitSignal(window.targets.control_done, timeout=WAIT) as done:
        qtbot.mouseClick(box.button(QMessageBox.StandardButton.Yes), Qt.MouseButton.LeftButton)
    assert done.args[0].ok, done.args[0]
    master.process.wait_line(rf"^event: child {pids[1]} job cancelled", start=mark)
    assert not any(f"child {pids[0]} job cancelled" in line for line in master.process.lines)
    with master.connect() as node:
        audit = [r for r in node.audit() if r.action.startswith("cancel in worker")]
    assert [(r.action, r.target, r.result) for r in audit][-1:] == [
        (f"cancel in worker {pids[1]}", target.split("/", 1)[1], "ok")
    ]
    # the worker replaced its job: the tree shows the new one, the old id is gone
    qtbot.waitUntil(
        lambda: [i.id for i in worker_jobs(window, pids[1])] not in ([], [target]),
        timeout=WAIT,
    )
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
        assert master.reap(pid) == -15


ids = st.from_regex(r"(task|thread)-[0-9]{1,8}", fullmatch=True)


@given(st.integers(1, 2**22), ids)
def test_a_worker_target_splits_into_its_pid_and_the_workers_own_id(pid, inner):
    """pid-N/ID goes to worker N as ID; the master's ids stay the master's; an id read
    inside a worker (an awaited task) is named in that worker."""
    assert split_target(f"pid-{pid}/{inner}") == (pid, inner)
    assert split_target(inner) == (None, inner)
    assert split_target(f"pid-{pid}") == (None, f"pid-{pid}")
    assert same_process(f"pid-{pid}/task-1", inner) == f"pid-{pid}/{inner}"
    assert same_process("task-1", inner) == inner


def section(view, title: str) -> dict[str, str]:
    """A System-tab section's rows as {property: value}."""
    for i in range(view.topLevelItemCount()):
        top = view.topLevelItem(i)
        if top.text(0) == title:
            return {top.child(j).text(0): top.child(j).text(1) for j in range(top.childCount())}
    return {}


def test_system_tab_shows_the_worker_set_and_a_worker_that_exited(qtbot, window, forker):  # noqa: F811
    """The System tab's Workers section lists the count, the pids and one line per worker
    (its role name, state, age); a worker killed with SIGKILL stays listed as exited,
    saying so ("exited (signal 9)"), for a few refreshes and is counted, the live one is
    still there."""
    master = forker("--workers")
    pids = [master.fork("fork", "loop")[0] for _ in range(2)]
    tab = window.show_tab("system")
    window.add_link(spec(master.agent, master.keys))
    view = tab.view
    qtbot.waitUntil(lambda: section(view, "Workers").get("Count") == "2", timeout=WAIT)
    shown = section(view, "Workers")
    assert shown["PIDs"] == ", ".join(map(str, sorted(pids))), shown
    for pid in pids:
        assert shown[f"pid {pid}"].startswith("ForkProcess-") and "age " in shown[f"pid {pid}"]
    os.kill(pids[0], signal.SIGKILL)
    assert master.reap(pids[0]) == -9

    def exited() -> bool:
        window.refresh()
        rows = section(view, "Workers")
        return rows.get("Count") == "1" and " · exited" in rows.get(f"pid {pids[0]}", "")

    qtbot.waitUntil(exited, timeout=WAIT)
    rows = section(view, "Workers")
    assert re.fullmatch(r"ForkProcess-\d+ · exited \(signal 9\)", rows[f"pid {pids[0]}"]), rows
    assert rows["Exited since watching"] == "1" and rows["PIDs"] == str(pids[1]), rows
    os.kill(pids[1], signal.SIGTERM)
    assert master.reap(pids[1]) == -15


def worker_rows(window, link) -> dict[str, tuple[str, ...]]:
    """The Cluster tab's rows under ``link``'s host row, as shown (through the proxy),
    by ADDRESS cell ("pid N"): every column's text."""
    from observer.gui.cluster import ADDRESS, COLUMNS

    proxy, model = window.cluster.proxy, window.cluster.model
    host = proxy.mapFromSource(model.index(model.links.index(link), 0))
    out = {}
    for row in range(proxy.rowCount(host)):
        cells = tuple(proxy.index(row, c, host).data() for c in range(len(COLUMNS)))
        out[cells[ADDRESS]] = cells
    return out


def test_cluster_host_row_expands_to_its_workers_and_keeps_an_exited_one(qtbot, window, forker):  # noqa: F811
    """The host row of a master has its two workers under it (role name, status, RSS,
    CPU); expanded, each shows its own task count, read from the worker through the
    master, and the host row's tasks include theirs; a worker killed with SIGKILL stays
    under the host, greyed, as "exited", for a few refreshes, then goes."""
    from PyQt6.QtGui import QBrush

    from observer.gui.cluster import NODE, RSS, STATUS, TASKS

    master = forker("--workers")
    pids = [master.fork("fork", "loop")[0] for _ in range(2)]
    window.set_interval(1)
    link = window.add_link(spec(master.agent, master.keys))
    tab = window.show_tab("cluster")
    keys = [f"pid {pid}" for pid in pids]
    qtbot.waitUntil(lambda: sorted(worker_rows(window, link)) == sorted(keys), timeout=WAIT)
    host = tab.proxy.mapFromSource(tab.model.index(tab.model.links.index(link), 0))
    tab.view.expand(host)
    # a worker's figures come from its newest load sample, which may predate its loop
    # (taken when the master first reached it): wait for one that counts its tasks
    qtbot.waitUntil(
        lambda: all(
            cells[TASKS].isdigit() and int(cells[TASKS]) >= 2
            for cells in worker_rows(window, link).values()
        ),
        timeout=WAIT,
    )
    for cells in worker_rows(window, link).values():
        assert cells[NODE].startswith("ForkProcess-") and cells[STATUS] in ("sleeping", "running")
        assert cells[RSS] and int(cells[TASKS]) >= 2, cells  # the jobs task and worker-job

    def host_sums_workers() -> bool:  # the host row: the master's own tasks plus the workers'
        own = tab.model.row_of(link).tasks
        workers = sum(int(c[TASKS] or 0) for c in worker_rows(window, link).values())
        return own is not None and host.siblingAtColumn(TASKS).data() == f"{own + workers:,}"

    qtbot.waitUntil(host_sums_workers, timeout=WAIT)
    assert "2 workers" in host.siblingAtColumn(NODE).data(Qt.ItemDataRole.ToolTipRole)
    os.kill(pids[0], signal.SIGKILL)
    assert master.reap(pids[0]) == -9
    qtbot.waitUntil(
        lambda: worker_rows(window, link).get(keys[0], ("",) * 13)[STATUS].startswith("exited"),
        timeout=WAIT,
    )
    assert not worker_rows(window, link)[keys[1]][STATUS].startswith("exited")
    qtbot.waitUntil(  # how it ended, as the master's agent saw it
        lambda: worker_rows(window, link).get(keys[0], ("",) * 13)[STATUS] == "exited (signal 9)",
        timeout=WAIT,
    )
    proxy, model = tab.proxy, tab.model
    row = next(r for r in range(proxy.rowCount(host)) if proxy.index(r, 1, host).data() == keys[0])
    grey = proxy.index(row, STATUS, host).data(Qt.ItemDataRole.ForegroundRole)
    assert isinstance(grey, QBrush) and grey.color().name() == "#8c959f"
    assert model.row_of(link).status == "up"  # the host itself is fine
    qtbot.waitUntil(lambda: keys[0] not in worker_rows(window, link), timeout=WAIT)  # a few s
    assert keys[1] in worker_rows(window, link)
    os.kill(pids[1], signal.SIGTERM)
    assert master.reap(pids[1]) == -15


def test_cluster_says_how_a_pool_worker_ended_and_which_worker_replaced_it(qtbot, window, forker):  # noqa: F811
    """A multiprocessing Pool in the master; one of its workers is SIGKILLed and the
    Pool reaps and replaces it: under the host row the dead worker stays, greyed, as
    "exited (signal 9)" with the note "replaced by pid N", N the Pool's new
    ForkPoolWorker, listed live next to it."""
    from observer.gui.cluster import NODE, NOTE, STATUS
    from tests.test_workers import _kill_descendants, _started

    master = forker("--workers")
    try:
        pids = _started(master, "pool fork 2")
        window.set_interval(1)
        link = window.add_link(spec(master.agent, master.keys))
        window.show_tab("cluster")
        keys = [f"pid {pid}" for pid in pids]
        qtbot.waitUntil(lambda: set(keys) <= set(worker_rows(window, link)), timeout=WAIT)
        os.kill(pids[0], signal.SIGKILL)

        def replaced() -> bool:  # and the replacement listed under the Pool's name
            shown = worker_rows(window, link)
            cells = shown.get(keys[0])
            if cells is None or not cells[NOTE].startswith("replaced by pid "):
                return False
            new = shown.get(cells[NOTE].removeprefix("replaced by "))
            return new is not None and new[NODE].startswith("ForkPoolWorker-")

        qtbot.waitUntil(replaced, timeout=WAIT)
        rows_now = worker_rows(window, link)
        dead = rows_now[keys[0]]
        new = int(re.fullmatch(r"replaced by pid (\d+)", dead[NOTE]).group(1))
        assert dead[STATUS] == "exited (signal 9)" and dead[NODE].startswith("ForkPoolWorker-")
        assert new not in pids and f"pid {new}" in rows_now, rows_now
        assert not rows_now[f"pid {new}"][STATUS].startswith("exited")
        assert rows_now[f"pid {new}"][NODE].startswith("ForkPoolWorker-")
    finally:
        _kill_descendants(master)


def child(pid: int) -> ChildInfo:
    return ChildInfo(
        f"pid-{pid}",
        pid,
        1,
        f"ForkProcess-{pid}",
        (),
        "sleeping",
        1.0,
        1 << 20,
        100.0,
        "127.0.0.1:1",
    )


@given(st.lists(st.sets(st.integers(1, 6)), min_size=1, max_size=12), st.integers(1, 4))
def test_the_worker_watch_lists_live_workers_and_keeps_exited_ones_a_few_refreshes(sets, keep):
    """Whatever the sequence of worker sets: the live rows are exactly the workers listed
    now; an exited row is shown for the ``keep`` refreshes after its worker left (and not
    once it is back); restarts count every departure."""
    watch = WorkerWatch(keep)
    departures, left_at = 0, {}
    for step, pids in enumerate(sets):
        if step:
            for pid in sets[step - 1] - pids:
                departures += 1
                left_at[pid] = step
        rows = watch.update([child(p) for p in pids], 200.0)
        assert [r.pid for r in rows if not r.exited] == sorted(pids)
        assert all(r.age == 100.0 for r in rows if not r.exited)
        expected = {p for p, at in left_at.items() if p not in pids and step - at < keep}
        assert {r.pid for r in rows if r.exited} == expected
        assert watch.restarts == departures


def test_a_big_tree_opens_on_its_workers_loops():
    """Past the size where everything opens, a worker's row still opens the first time
    (with its loop-running thread and loop), so its tasks are one scroll away."""
    from observer.gui.delta import tree_from, walk_records
    from observer.gui.tab_processes import EXPAND_ALL_UP_TO, first_expansion
    from observer.tree import TreeNode

    loop = TreeNode("loop", "pid-2/loop-1", "loop")
    loop.children = [TreeNode("task", f"pid-2/task-{i}", "t") for i in range(EXPAND_ALL_UP_TO)]
    thread = TreeNode("thread", "pid-2/thread-1", "MainThread", children=[loop])
    worker = TreeNode("child", "pid-2", "ForkPoolWorker-1", children=[thread])
    idle = TreeNode("child", "pid-3", "python")  # a child without an agent stays as it is
    top = TreeNode("process", "pid-1", "master", children=[worker, idle])
    opened = first_expansion(tree_from(dict(walk_records(top, {}, 0.0))))
    assert {"pid-1", "pid-2", "pid-2/thread-1", "pid-2/loop-1"} <= opened
    assert "pid-3" not in opened


def test_a_master_with_many_workers_opens_loops_up_to_one_budget_of_rows():
    """8 workers of 1k tasks each: every worker and its loop-running thread opens, but
    only as many loops as fit EXPAND_LOOP_UP_TO task rows together, first ones first
    (with all 8k rows open, Qt's layout of them stalled the GUI thread 65 ms a refresh)."""
    from observer.gui.delta import tree_from, walk_records
    from observer.gui.tab_processes import EXPAND_LOOP_UP_TO, first_expansion
    from observer.tree import TreeNode

    workers = []
    for w in range(2, 10):
        loop = TreeNode("loop", f"pid-{w}/loop-1", "loop")
        loop.children = [TreeNode("task", f"pid-{w}/task-{i}", "t") for i in range(1000)]
        thread = TreeNode("thread", f"pid-{w}/thread-1", "MainThread", children=[loop])
        workers.append(TreeNode("child", f"pid-{w}", f"worker-{w}", children=[thread]))
    top = TreeNode("process", "pid-1", "master", children=workers)
    data = tree_from(dict(walk_records(top, {}, 0.0)))
    opened = first_expansion(data)
    assert {f"pid-{w}" for w in range(2, 10)} <= opened
    assert {f"pid-{w}/thread-1" for w in range(2, 10)} <= opened
    loops = sorted(t for t in opened if t.endswith("/loop-1"))
    assert loops == [f"pid-{w}/loop-1" for w in range(2, 2 + EXPAND_LOOP_UP_TO // 1000)]
    assert sum(len(data.by_id[t].children) for t in loops) <= EXPAND_LOOP_UP_TO
