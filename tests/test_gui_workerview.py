"""One worker of a pre-fork master opened as a node of its own: its System tab, load
charts, Memory tab and Stalls read from the worker through the master's one session, with
the master's role; a worker that dies shows it (and who replaced it) without freezing
the window. Real master (tests/hosts/forker.py --workers), real forks, real window.
"""

from __future__ import annotations

import itertools
import os
import signal
import time

import pytest

pytest.importorskip("PyQt6")
pytest.importorskip("pytestqt")

from hypothesis import given
from hypothesis import strategies as st
from PyQt6.QtCore import QTimer

from agent.schema import ChildInfo
from observer.errors import NotFound
from observer.gui.link import Status
from observer.gui.workerlink import WorkerHealth, pick_worker, replacement
from tests.helpers import node_spec as spec
from tests.hosts.forkchild import OWNED
from tests.test_forks import forker  # noqa: F401  (the fixture)

WAIT = 30_000  # ms


def worker_row_name(window, pid: int) -> str:
    """The worker's row in the master's Processes tree, by its target (its name as shown)."""
    data = window.processes.model.data_
    item = data.by_id.get(f"pid-{pid}") if data else None
    return data.row_values(item)[0] if item is not None else ""


def window_rows(window, name: str) -> list:
    """The Processes tree's items named ``name``."""
    data = window.processes.model.data_
    if not data:
        return []
    return [item for item in data.by_id.values() if data.row_values(item)[0] == name]


def open_from_processes_tab(qtbot, window, host, pid: int):
    """Right-click the worker's row in the Processes tab, "Open worker": its entry."""
    window.show_tab("processes")
    qtbot.waitUntil(lambda: "[agent " in worker_row_name(window, pid), timeout=WAIT)
    menu = window.targets.row_menu(host, f"pid-{pid}", "child", worker_row_name(window, pid))
    action = next(a for a in menu.actions() if a.text() == "Open worker")
    action.trigger()
    link = window.current_link()
    assert link is not host and isinstance(link.health, WorkerHealth)
    return link


def test_an_opened_worker_shows_its_own_system_charts_memory_stalls_tree_profile(
    qtbot,
    window,
    forker,  # noqa: F811
):
    """Open worker from the Processes tab: an entry under the master in the node list, named
    by its role label and pid; the System tab shows the worker's pid, the load charts the
    worker's own history (samples the master never took), the Memory tab's census counts
    objects only the worker made, the Stalls tab the worker's stalls, the Processes tab the
    worker's own tree (its ids as inside it), a profile samples the worker; the master's
    entry and its own System tab are untouched."""
    master = forker("--workers")
    pid, _ = master.fork("fork", "own")
    host = window.add_link(spec(master.agent, master.keys))
    link = open_from_processes_tab(qtbot, window, host, pid)
    item = window.nodes.item_of(link)
    assert item.parent() is window.nodes.item_of(host)
    assert item.text(0).startswith("ForkProcess-") and item.text(0).endswith(f" pid {pid}")
    assert link.label == item.text(0) and "worker of" in item.toolTip(0)

    tab = window.show_tab("system")
    qtbot.waitUntil(lambda: tab.info is not None and tab.info.pid == pid, timeout=WAIT)
    assert link.status is Status.UP and link.role == "operator"
    assert f"pid {pid}" in window.counts_label.text()

    charts = window.show_tab("charts")
    qtbot.waitUntil(lambda: len(charts.samples) >= 2, timeout=WAIT)
    with master.connect() as node:
        own = {s.time for s in node.worker(pid).history().samples}
        masters = {s.time for s in node.history().samples}
    shown = {s.time for s in charts.samples}
    assert shown <= own and not shown & masters, (shown, own, masters)

    memory = window.show_tab("memory")
    qtbot.waitUntil(lambda: memory.census is not None, timeout=WAIT)
    owned = [t for t in memory.census.types if t.type.endswith("WorkerOwned")]
    assert owned and owned[0].count == OWNED, memory.census.types[:5]
    assert memory.memory is not None
    qtbot.waitUntil(lambda: "tracemalloc start" in memory.trace_label.text(), timeout=WAIT)
    assert f"--process {pid} tracemalloc start" in memory.trace_label.text()

    stalls = window.show_tab("stalls")
    qtbot.waitUntil(
        lambda: (
            stalls.listing is not None
            and any(
                "blocking_report" in (e.function, *(f.function for f in e.frames))
                for e in stalls.listing.stalls
            )
        ),
        timeout=WAIT,
    )

    processes = window.show_tab("processes")  # the worker's own tree: ids as inside it
    qtbot.waitUntil(lambda: bool(window_rows(window, "worker-job")), timeout=WAIT)
    assert all(not i.id.startswith("pid-") for i in window_rows(window, "worker-job"))
    assert processes.model.data_.by_id[f"pid-{pid}"].kind == "process"
    profile = window.show_tab("profile")
    profile.seconds.setValue(1.0)
    profile.start()
    qtbot.waitUntil(
        lambda: profile.profile is not None and profile.profile.state == "done", timeout=WAIT
    )
    assert profile.profile.ticks > 0
    assert "child_main" in {f.function for f in profile.profile.frames}  # the worker's

    window.nodes.setCurrentItem(window.nodes.item_of(host))  # back to the master: its own
    system = window.show_tab("system")
    qtbot.waitUntil(lambda: system.info is not None and system.info.pid != pid, timeout=WAIT)
    assert system.info.pid == master.process.proc.pid
    os.kill(pid, signal.SIGTERM)
    assert master.reap(pid) == -15


def test_roles_hold_through_the_relay_for_an_opened_worker(qtbot, window, forker):  # noqa: F811
    """Through a viewer's session the worker's entry is a viewer's: its control actions are
    disabled and a census baseline (operator only) is refused by the worker; through an
    operator's session the same baseline is taken."""
    master = forker("--workers")
    pid, _ = master.fork("fork", "own")
    viewer = window.add_link(spec(master.agent, master.keys, token="viewer", name="as-viewer"))
    operator = window.add_link(spec(master.agent, master.keys, name="as-operator"))
    qtbot.waitUntil(lambda: viewer.status is Status.UP and operator.status is Status.UP)
    memory = window.show_tab("memory")
    outcomes = {}
    for host in (viewer, operator):
        window.open_worker(host, pid, "ForkProcess-1")
        link = window.current_link()
        assert window.node_set.host_of(link) is host
        qtbot.waitUntil(lambda: memory.census is not None, timeout=WAIT)
        assert link.role == host.role and link.can_control is (host is operator)
        menu = window.targets.row_menu(link, "task-1", "task", "worker-job")
        cancel = next(a for a in menu.actions() if a.text().startswith("Cancel"))
        assert cancel.isEnabled() is (host is operator)
        before = memory.census
        memory.run_census(baseline=True)
        qtbot.waitUntil(
            lambda before=before: (
                "Failed" in memory.census_label.text() or memory.census is not before
            ),
            timeout=WAIT,
        )
        outcomes[host.label] = memory.census_label.text()
    assert "Failed" in outcomes["as-viewer"] and "operator" in outcomes["as-viewer"], outcomes
    assert "Failed" not in outcomes["as-operator"], outcomes
    os.kill(pid, signal.SIGTERM)
    assert master.reap(pid) == -15


def test_a_killed_worker_shows_exited_and_offers_its_replacement(qtbot, window, forker):  # noqa: F811
    """SIGKILL the opened worker (its master has not reaped it yet: a zombie): the entry
    turns dead, says "exited", keeps the last data with a banner saying so, and the GUI
    thread never stalls meanwhile; once the master has a new worker, the entry's menu
    opens it (a new entry, selected, its System tab showing the new pid). The master's
    own entry stays up."""
    master = forker("--workers")
    pid, _ = master.fork("fork", "own")
    window.set_interval(1)
    host = window.add_link(spec(master.agent, master.keys))
    qtbot.waitUntil(lambda: host.status is Status.UP, timeout=WAIT)
    window.open_worker(host, pid, "ForkProcess-1")
    link = window.current_link()
    tab = window.show_tab("system")
    qtbot.waitUntil(lambda: tab.info is not None and tab.info.pid == pid, timeout=WAIT)

    ticks: list[float] = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.monotonic()))
    timer.start(20)
    os.kill(pid, signal.SIGKILL)  # not reaped yet: the master lists a zombie
    qtbot.waitUntil(lambda: link.status is Status.DEAD, timeout=WAIT)
    timer.stop()
    worst = max(b - a for a, b in itertools.pairwise(ticks))
    assert worst < 0.5, f"the GUI thread stalled {worst:.2f}s"
    item = window.nodes.item_of(link)  # its row follows the status change queued
    qtbot.waitUntil(lambda: item.text(2) == "exited", timeout=WAIT)
    assert "exited" in link.error
    qtbot.waitUntil(lambda: "exited" in tab.banner.text(), timeout=WAIT)
    assert "Showing data from" in tab.banner.text() and tab.info.pid == pid  # kept
    assert host.status is Status.UP

    assert master.reap(pid) == -9
    new, _ = master.fork("fork", "own")  # what a respawning master does
    qtbot.waitUntil(lambda: link.health.replaced_by is not None, timeout=WAIT)
    assert link.health.replaced_by.pid == new
    assert f"pid {new}" in link.error
    assert "exited (signal 9)" in link.error  # as the master's agent saw it end
    menu = window.node_menu(link)
    action = next(a for a in menu.actions() if a.text().startswith("Open replacement"))
    assert f"pid {new}" in action.text()
    action.trigger()
    fresh = window.current_link()
    assert fresh is not link and fresh.pid == new
    qtbot.waitUntil(lambda: tab.info is not None and tab.info.pid == new, timeout=WAIT)
    assert window.nodes.item_of(link) is not None  # the dead one stays until closed
    close = next(a for a in window.node_menu(link).actions() if a.text() == "Close worker")
    close.trigger()
    assert window.nodes.item_of(link) is None and window.nodes.item_of(fresh) is not None
    os.kill(new, signal.SIGTERM)
    assert master.reap(new) == -15


def child(pid: int, name: str, started: float, agent: bool = True, status: str = "sleeping"):
    return ChildInfo(
        f"pid-{pid}",
        pid,
        1,
        name,
        (),
        status,
        0.0,
        1 << 20,
        started,
        "127.0.0.1:1" if agent else None,
    )


names = st.sampled_from(["http-worker-1", "http-worker-2", "ForkPoolWorker-3", "gunicorn worker"])
workers = st.lists(
    st.tuples(st.integers(2, 60), names, st.floats(0, 100), st.booleans()),
    unique_by=lambda w: w[0],
    max_size=8,
)


@given(workers, st.integers(2, 60), names, st.floats(0, 100))
def test_a_replacement_is_a_live_newer_worker_same_slot_first(children, dead, name, started):
    """Whatever the children: the replacement is a live worker with an agent, not the dead
    one, started no earlier; one with the same label when there is one."""
    kids = [child(p, n, t, agent=a) for p, n, t, a in children]
    found = replacement(name, started, dead, kids)
    fits = [c for c in kids if c.agent and c.pid != dead and c.create_time >= started]
    if not fits:
        assert found is None
        return
    assert found in fits
    if any(c.name == name for c in fits):
        assert found.name == name


@given(workers)
def test_a_worker_is_picked_by_pid_place_or_label(children):
    """``--worker``: a pid picks that worker, N the Nth oldest, a label glob the oldest
    match; anything else names the workers there are."""
    kids = [child(p, n, t, agent=a) for p, n, t, a in children]
    live = sorted((c for c in kids if c.agent), key=lambda c: (c.create_time, c.pid))
    if not live:
        with pytest.raises(NotFound):
            pick_worker(kids, "1")
        return
    for c in live:
        assert pick_worker(kids, str(c.pid)) == c
        assert pick_worker(kids, f"pid-{c.pid}") == c
    pids = {c.pid for c in live}
    for number in range(1, len(live) + 1):
        if number not in pids:
            assert pick_worker(kids, str(number)) == live[number - 1]
    first = live[0]
    assert pick_worker(kids, first.name) == next(c for c in live if c.name == first.name)
    with pytest.raises(NotFound):
        pick_worker(kids, "no-such-worker*")


def test_the_system_and_cluster_tabs_open_a_worker_too(qtbot, window, forker):  # noqa: F811
    """Double-click (activate) a worker's line in the System tab's worker set, or its row
    under the host in the Cluster tab: the worker opens under its host, selected, on the
    System tab; closing its entry goes back to the master."""
    from tests.test_gui_workers import section, worker_rows

    master = forker("--workers")
    pid, _ = master.fork("fork", "own")
    window.set_interval(1)
    host = window.add_link(spec(master.agent, master.keys))
    system = window.show_tab("system")
    qtbot.waitUntil(lambda: section(system.view, "Workers").get("Count") == "1", timeout=WAIT)
    top = next(
        system.view.topLevelItem(i)
        for i in range(system.view.topLevelItemCount())
        if system.view.topLevelItem(i).text(0) == "Workers"
    )
    line = next(
        top.child(j) for j in range(top.childCount()) if top.child(j).text(0) == f"pid {pid}"
    )
    system.view.itemActivated.emit(line, 0)
    opened = window.current_link()
    assert opened is not host and opened.pid == pid
    qtbot.waitUntil(lambda: system.info is not None and system.info.pid == pid, timeout=WAIT)
    window.node_set.close_worker(opened)
    assert window.current_link() is host and window.nodes.item_of(opened) is None

    cluster = window.show_tab("cluster")
    qtbot.waitUntil(lambda: f"pid {pid}" in worker_rows(window, host), timeout=WAIT)
    proxy, model = cluster.proxy, cluster.model
    parent = proxy.mapFromSource(model.index(model.links.index(host), 0))
    row = next(
        r for r in range(proxy.rowCount(parent)) if proxy.index(r, 1, parent).data() == f"pid {pid}"
    )
    cluster.view.activated.emit(proxy.index(row, 0, parent))
    again = window.current_link()
    assert again is not host and again.pid == pid and window.current_tab() is window.system
    qtbot.waitUntil(lambda: system.info is not None and system.info.pid == pid, timeout=WAIT)
    os.kill(pid, signal.SIGTERM)
    assert master.reap(pid) == -15


def test_a_worker_named_on_the_command_line_opens_once_the_master_lists_it(
    qtbot,
    window,
    forker,  # noqa: F811
    keys,
    tmp_path,
):
    """``observer gui NODE --worker ...``: a label glob opens that worker (its System tab
    shows its pid); a name no worker has says which workers there are; the command line
    with --screenshot saves a picture once the worker's data is drawn."""
    import subprocess
    import sys

    master = forker("--workers")
    pid, _ = master.fork("fork", "own")
    system = window.show_tab("system")
    window.open_nodes([spec(master.agent, master.keys)])
    window.open_worker_when_up("ForkProcess-*")
    assert window.wanted_worker is not None
    qtbot.waitUntil(lambda: window.wanted_worker is None, timeout=WAIT)
    assert window.current_link().pid == pid
    qtbot.waitUntil(lambda: system.info is not None and system.info.pid == pid, timeout=WAIT)
    window.nodes.setCurrentItem(window.nodes.item_of(window.links[0]))
    window.open_worker_when_up("no-such-worker")
    qtbot.waitUntil(lambda: window.wanted_worker is None, timeout=WAIT)
    assert window.current_link() is window.links[0]
    assert f"pid {pid}" in system.banner.text() and "no worker named" in system.banner.text()

    out = tmp_path / "worker.png"
    creds = ["--token-file", str(keys.operator_token), "--fingerprint", keys.fingerprint]
    shot = ["--tab", "memory", "--screenshot", str(out), "--after", "0.2"]
    done = subprocess.run(
        [sys.executable, "-m", "observer", "gui", master.agent, *creds, "--worker", "1", *shot],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "QT_QPA_PLATFORM": "offscreen", "PYTHONFAULTHANDLER": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    os.kill(pid, signal.SIGTERM)
    assert master.reap(pid) == -15
