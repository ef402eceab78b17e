"""The Cluster tab, liveness, DNS names and node editing against real agent processes.

Agents run as real subprocesses (tests/hosts/app.py), on several loopback addresses when
a DNS name must stand for more than one of them; they are really frozen (SIGSTOP),
killed and restarted. Nothing of ours is mocked and nothing waits on a fixed sleep.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("PyQt6")
pytest.importorskip("pytestqt")

from PyQt6.QtCore import Qt, QTimer
from PyQt6.QtWidgets import QApplication, QDialogButtonBox

from agent.version import AGENT_VERSION
from observer.cli import build_parser
from observer.cli_commands import gui_specs
from observer.fleet import ClusterRow
from observer.gui.cluster import ADDRESS, NODE, NOTE, SPARK_ROLE, STATUS, TREND, UP_ROLE
from observer.gui.link import NodeLink, Status
from observer.gui.nodedialog import AddNodeDialog, EditNodeDialog
from observer.gui.resolver import Resolver
from observer.gui.window import MainWindow
from observer.nodesfile import NodeSpec, load_nodes, save_nodes
from observer.resolve import HOSTS_ENV
from tests.helpers import freeze
from tests.test_gui import WAIT, shown_status, spec, wait_status, wait_up

INTERVAL = 1  # s: the refresh interval these tests run at


def row_of(win: MainWindow, link: NodeLink) -> ClusterRow | None:
    return win.cluster.model.row_of(link)


def cell(win: MainWindow, link: NodeLink, column: int, role=Qt.ItemDataRole.DisplayRole):
    """What the Cluster view shows for ``link`` in ``column`` (through the sort proxy)."""
    model = win.cluster.model
    source = model.index(model.links.index(link), column)
    return win.cluster.proxy.mapFromSource(source).data(role)


def shown(win: MainWindow, link: NodeLink) -> str:
    """The status word the Cluster tab shows for ``link``."""
    return cell(win, link, STATUS) if link in win.cluster.model.links else ""


def link_at(win: MainWindow, address: str) -> NodeLink | None:
    return next((k for k in win.links if k.spec.address == address), None)


def tooltip(win: MainWindow, link: NodeLink) -> str:
    item = win.nodes.item_of(link)
    return item.toolTip(0) if item is not None else ""


def open_cluster(qtbot, win: MainWindow, specs: list[NodeSpec]) -> None:
    win.set_interval(INTERVAL)
    win.open_nodes(specs)
    qtbot.waitUntil(lambda: len(win.links) >= len(specs), timeout=WAIT)


# ------------------------------------------------------------------ rows and figures


def test_several_agents_land_on_the_cluster_tab_with_real_figures(qtbot, window, agents, keys):
    started = [agents.start(name=name) for name in ("alpha", "beta", "gamma")]
    open_cluster(qtbot, window, [spec(address, keys) for _, address in started])
    assert window.current_tab() is window.cluster, "several nodes open on the Cluster tab"
    links = {link.spec.address: link for link in window.links}

    def every_row_has_data() -> bool:
        # a row's load figures come from the agent's newest sample, which may predate the
        # host's threads and tasks by up to two sampling intervals (or straddle the host's
        # set-up: threads read before it, tasks after): wait for one taken after them
        rows = [row_of(window, link) for link in window.links]
        return all(
            r is not None
            and r.status == "up"
            and r.cpu_percent is not None
            and (r.tasks or 0) >= 3
            and (r.threads or 0) >= 4
            for r in rows
        )

    qtbot.waitUntil(every_row_has_data, timeout=WAIT)
    for host, address in started:
        link = links[address]
        row = row_of(window, link)
        assert row is not None
        assert row.pid == host.proc.pid and row.name == cell(window, link, NODE)
        assert row.rss is not None and row.rss > 0
        assert row.threads is not None and row.threads >= 4  # main, busy, victim, side-loop…
        assert row.tasks is not None and row.tasks >= 3
        assert row.agent_version == AGENT_VERSION and row.uptime and row.uptime > 0
        assert cell(window, link, ADDRESS) == address
        assert "MiB" in cell(window, link, 6)  # RSS, as observer nodes prints it
        assert cell(window, link, NODE, UP_ROLE) is True
    assert [cell(window, links[a], NODE) for _, a in started] == ["alpha", "beta", "gamma"]
    assert "3 nodes: 3 up" in window.counts_label.text()

    # the sparkline fills from the agents' history and then grows with each overview
    qtbot.waitUntil(
        lambda: all(len(cell(window, k, TREND, SPARK_ROLE)) >= 2 for k in links.values()),
        timeout=WAIT,
    )
    # sortable: a header click on Node puts gamma first when descending
    window.cluster.view.sortByColumn(NODE, Qt.SortOrder.DescendingOrder)
    proxy = window.cluster.proxy
    assert [proxy.index(r, NODE).data() for r in range(3)] == ["gamma", "beta", "alpha"]


def test_one_node_opens_on_the_system_tab_and_tab_option_wins(qtbot, window, agents, keys):
    _, address = agents.start()
    window.open_nodes([spec(address, keys)])
    assert window.current_tab() is window.system
    other = MainWindow()
    qtbot.addWidget(other)
    other.show_tab("table")  # what --tab does before the nodes are opened
    other.open_nodes([spec(address, keys), spec(address, keys, token="viewer")])
    assert other.current_tab() is other.table
    other.close()


# ------------------------------------------------------------------ liveness


def test_frozen_node_is_down_within_two_intervals_and_comes_back(qtbot, window, agents, keys):
    frozen_host, frozen_address = agents.start(name="frozen")
    _, ok_address = agents.start(name="steady")
    open_cluster(qtbot, window, [spec(frozen_address, keys), spec(ok_address, keys)])
    frozen, steady = window.links
    qtbot.waitUntil(lambda: shown(window, frozen) == shown(window, steady) == "up", timeout=WAIT)
    qtbot.waitUntil(lambda: row_of(window, frozen).cpu_percent is not None, timeout=WAIT)

    freeze(frozen_host.proc.pid)
    try:
        stopped = time.monotonic()
        qtbot.waitUntil(lambda: shown(window, frozen) == "down", timeout=WAIT)
        to_down = time.monotonic() - stopped
        print(f"\nfrozen node shown down {to_down:.2f}s after SIGSTOP ({INTERVAL}s interval)")
        assert to_down < 2 * INTERVAL + 1.0, f"down after {to_down:.1f}s, not two intervals"
        # greyed, its last figures kept, with their age, and the age moves with the clock
        assert cell(window, frozen, NODE, UP_ROLE) is False
        assert cell(window, frozen, NODE, Qt.ItemDataRole.ForegroundRole) is not None
        assert cell(window, frozen, 4).endswith("%"), "the last CPU figure stays"
        assert "did not answer" in row_of(window, frozen).error
        first_note = cell(window, frozen, NOTE)
        assert first_note.startswith("data ") and " old" in first_note
        qtbot.waitUntil(lambda: cell(window, frozen, NOTE) != first_note, timeout=WAIT)
        # the healthy node is not held back: its row keeps getting fresh data
        seen = row_of(window, steady).last_seen
        qtbot.waitUntil(lambda: row_of(window, steady).last_seen > seen, timeout=WAIT)
        assert shown(window, steady) == "up" and shown(window, frozen) != "up"
        assert shown_status(frozen) in ("down", "connecting")  # the node list agrees
    finally:
        os.kill(frozen_host.proc.pid, signal.SIGCONT)
    thawed = time.monotonic()
    qtbot.waitUntil(lambda: shown(window, frozen) == "up", timeout=WAIT)
    print(f"thawed node shown up {time.monotonic() - thawed:.2f}s after SIGCONT")
    assert cell(window, frozen, NODE, UP_ROLE) is True
    assert "restarted" not in cell(window, frozen, NOTE), "the same process came back"
    assert "data" not in cell(window, frozen, NOTE)


def test_killed_host_is_dead_and_a_new_process_there_is_a_restart(qtbot, window, agents, keys):
    old, address = agents.start(name="phoenix")
    _, other = agents.start(name="bystander")
    open_cluster(qtbot, window, [spec(address, keys), spec(other, keys)])
    link = window.links[0]
    qtbot.waitUntil(lambda: shown(window, link) == "up", timeout=WAIT)
    old.proc.kill()
    old.proc.wait(10)
    qtbot.waitUntil(lambda: shown(window, link) == "dead", timeout=WAIT)
    assert cell(window, link, NODE, UP_ROLE) is False
    new, again = agents.start(address, name="phoenix")
    assert again == address
    window.refresh()  # Ctrl-R on the Cluster tab retries every node that is not up, now
    qtbot.waitUntil(lambda: shown(window, link) == "up", timeout=WAIT)
    note = f"pid {old.proc.pid} -> {new.proc.pid}"
    qtbot.waitUntil(lambda: row_of(window, link).pid == new.proc.pid, timeout=WAIT)
    assert "restarted" in cell(window, link, NOTE) and note in cell(window, link, NOTE)
    # the row reads the link as the worker left it; the node list redraws on the queued
    # status signal, a moment later
    qtbot.waitUntil(lambda: note in tooltip(window, link), timeout=WAIT)


def test_agent_stop_is_down_and_start_is_up_without_a_restart(qtbot, window, agents, keys):
    host, address = agents.start()
    _, other = agents.start()
    open_cluster(qtbot, window, [spec(address, keys), spec(other, keys)])
    link = window.links[0]
    qtbot.waitUntil(lambda: row_of(window, link).cpu_percent is not None, timeout=WAIT)
    mark = host.mark()
    host.send("agent-stop")
    host.wait_line("agent stopped", start=mark)
    qtbot.waitUntil(lambda: shown(window, link) == "down", timeout=WAIT)
    assert "old" in cell(window, link, NOTE)
    host.send("agent-start")
    host.wait_line("agent started", start=mark)
    window.refresh()
    qtbot.waitUntil(lambda: shown(window, link) == "up", timeout=WAIT)
    assert row_of(window, link).pid == host.proc.pid
    assert "restarted" not in cell(window, link, NOTE)


# ------------------------------------------------------------------ DNS names


def test_a_name_with_several_addresses_is_one_node_each_and_followed(
    qtbot, window, agents, keys, tmp_path, monkeypatch
):
    a, a_address = agents.start("127.0.0.2:0", name="alpha")
    port = a_address.rsplit(":", 1)[1]
    b, b_address = agents.start(f"127.0.0.3:{port}", name="beta")
    c, c_address = agents.start(f"127.0.0.4:{port}", name="gamma")
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.2 svc.test\n127.0.0.3 svc.test  # two instances\n")
    monkeypatch.setenv(HOSTS_ENV, str(hosts))
    name = f"svc.test:{port}"
    open_cluster(qtbot, window, [replace(spec(name, keys), name="svc")])
    assert window.current_tab() is window.cluster, "one name, two nodes: the Cluster tab"
    assert sorted(k.spec.address for k in window.links) == [a_address, b_address]
    for host, address in ((a, a_address), (b, b_address)):
        link = link_at(window, address)
        assert link is not None and link.origin == name
        wait_up(qtbot, link)
        assert link.pid == host.proc.pid
        assert link.label == f"svc@{address.rsplit(':', 1)[0]}"  # the label says which
        assert f"resolved from {name}" in tooltip(window, link)

    hosts.write_text("127.0.0.2 svc.test\n127.0.0.4 svc.test\n")  # b left, c joined
    window.node_set.resolve_now()
    qtbot.waitUntil(lambda: link_at(window, c_address) is not None, timeout=WAIT)
    joined, left = link_at(window, c_address), link_at(window, b_address)
    wait_up(qtbot, joined)
    assert joined.pid == c.proc.pid
    qtbot.waitUntil(lambda: left.gone_since > 0, timeout=WAIT)
    assert "no longer in DNS" in tooltip(window, left)
    assert window.nodes.item_of(left).foreground(0).color().name() == "#8c959f"
    qtbot.waitUntil(lambda: "no longer in DNS" in cell(window, left, NOTE), timeout=WAIT)
    assert cell(window, left, NODE, UP_ROLE) is False, "greyed, though its agent still answers"
    assert link_at(window, a_address).gone_since == 0

    hosts.write_text("127.0.0.2 svc.test\n127.0.0.3 svc.test\n127.0.0.4 svc.test\n")
    window.node_set.resolve_every = 0.1  # the periodic re-resolution brings it back, no call needed
    qtbot.waitUntil(lambda: left.gone_since == 0, timeout=WAIT)
    qtbot.waitUntil(lambda: "no longer in DNS" not in tooltip(window, left), timeout=WAIT)
    assert len(window.links) == 3


def test_removing_a_name_removes_its_nodes_and_forgets_it(
    qtbot, window, agents, keys, tmp_path, monkeypatch
):
    _, a_address = agents.start("127.0.0.2:0")
    port = a_address.rsplit(":", 1)[1]
    agents.start(f"127.0.0.3:{port}")
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.2 svc.test\n127.0.0.3 svc.test\n")
    monkeypatch.setenv(HOSTS_ENV, str(hosts))
    name_spec = spec(f"svc.test:{port}", keys)
    save_nodes(window.nodes_file, [name_spec])
    open_cluster(qtbot, window, load_nodes(window.nodes_file))
    qtbot.waitUntil(lambda: len(window.links) == 2, timeout=WAIT)
    hosts.write_text("127.0.0.2 svc.test\n127.0.0.3 svc.test\n127.0.0.4 svc.test\n")
    window.node_set.resolve_now()  # an answer adding 127.0.0.4 is on its way to the GUI thread…
    window.nodes.setCurrentItem(window.nodes.item_of(window.links[1]))
    window.remove_current_node()  # …when the name is removed
    assert window.links == [] and window.cluster.model.rowCount() == 0
    assert load_nodes(window.nodes_file) == []
    hosts.write_text("127.0.0.2 other.test\n")
    window.add_spec(spec(f"other.test:{port}", keys))  # answered after that late answer
    qtbot.waitUntil(lambda: len(window.links) >= 1, timeout=WAIT)
    assert [(k.spec.address, k.origin) for k in window.links] == [
        (a_address, f"other.test:{port}")
    ], "the late answer for the removed name brought nothing back"
    wait_up(qtbot, window.links[0])


def test_a_superseded_answer_is_dropped(qtbot, tmp_path, monkeypatch):
    """An edit replaces a name's spec while the old spec's answer is still on its way:
    only the new spec's nodes arrive (the resolver thread answers in order)."""
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.2 svc.test\n127.0.0.3 svc.test\n127.0.0.9 other.test\n")
    monkeypatch.setenv(HOSTS_ENV, str(hosts))
    resolver = Resolver()
    answers: list[tuple[str, list[NodeSpec]]] = []
    resolver.changed.connect(lambda name, change: answers.append((name, change.added)))
    resolver.add(NodeSpec(address="svc.test:7330", role="operator"))
    resolver.add(NodeSpec(address="svc.test:7330", role="viewer"))  # before any answer
    resolver.add(NodeSpec(address="other.test:7330"))  # answered after both of the above
    qtbot.waitUntil(lambda: any(name == "other.test:7330" for name, _ in answers), timeout=WAIT)
    svc = [added for name, added in answers if name == "svc.test:7330"]
    assert len(svc) == 1, "the first spec's answer was dropped"
    assert [(s.address, s.role) for s in svc[0]] == [
        ("127.0.0.2:7330", "viewer"),
        ("127.0.0.3:7330", "viewer"),
    ]
    resolver.close()


def test_editing_a_resolved_node_edits_its_name(qtbot, window, agents, keys, tmp_path, monkeypatch):
    _, a_address = agents.start("127.0.0.2:0")
    port = a_address.rsplit(":", 1)[1]
    agents.start(f"127.0.0.3:{port}")
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.2 svc.test\n127.0.0.3 svc.test\n")
    monkeypatch.setenv(HOSTS_ENV, str(hosts))
    open_cluster(qtbot, window, [spec(f"svc.test:{port}", keys)])
    qtbot.waitUntil(lambda: len(window.links) == 2, timeout=WAIT)
    for link in window.links:
        wait_up(qtbot, link)
        assert link.role == "operator"

    def edit(dialog: EditNodeDialog) -> None:
        assert dialog.address.text() == f"svc.test:{port}", "the name, not one address"
        assert not dialog.remember.isChecked(), "given on the command line, not remembered"
        dialog.name.setText("svc")
        dialog.role.setCurrentIndex(dialog.role.findData("viewer"))
        dialog.remember.setChecked(True)

    run_dialog(EditNodeDialog, edit)
    window.edit_current_node()
    (saved,) = load_nodes(window.nodes_file)
    assert (saved.address, saved.name, saved.role) == (f"svc.test:{port}", "svc", "viewer")
    qtbot.waitUntil(lambda: len(window.links) == 2, timeout=WAIT)
    for link in window.links:
        wait_up(qtbot, link)
        assert link.role == "viewer" and link.label.startswith("svc@127.0.0.")


# ------------------------------------------------------------------ opening a node


def test_double_click_or_enter_on_a_row_opens_that_node(qtbot, window, agents, keys):
    started = [agents.start(name=name) for name in ("first", "second")]
    open_cluster(qtbot, window, [spec(address, keys) for _, address in started])
    first, second = window.links
    qtbot.waitUntil(lambda: shown(window, second) == "up", timeout=WAIT)
    assert window.current_link() is first
    view = window.cluster.view
    model = window.cluster.model
    index = window.cluster.proxy.mapFromSource(model.index(model.links.index(second), NODE))
    point = view.visualRect(index).center()
    qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=point)
    qtbot.mouseDClick(view.viewport(), Qt.MouseButton.LeftButton, pos=point)
    assert window.current_link() is second
    assert window.current_tab() is window.system
    qtbot.waitUntil(lambda: window.system.info is not None, timeout=WAIT)
    assert window.system.info.pid == started[1][0].proc.pid

    window.show_tab("cluster")
    index = window.cluster.proxy.mapFromSource(model.index(model.links.index(first), NODE))
    view.setFocus()
    view.setCurrentIndex(index)
    qtbot.keyClick(view, Qt.Key.Key_Return)
    assert window.current_link() is first and window.current_tab() is window.system


# ------------------------------------------------------------------ nodes file


def run_dialog(kind: type, fill) -> None:  # type: ignore[no-untyped-def]
    """Fill the modal dialog of ``kind`` once it shows, then press OK."""

    def step() -> None:
        dialog = QApplication.activeModalWidget()
        if not isinstance(dialog, kind):
            QTimer.singleShot(20, step)
            return
        fill(dialog)
        dialog.findChild(QDialogButtonBox).button(QDialogButtonBox.StandardButton.Ok).click()

    QTimer.singleShot(0, step)


def test_add_offers_role_and_edit_changes_the_nodes_file(qtbot, window, agents, keys):
    _, address = agents.start()

    def add(dialog: AddNodeDialog) -> None:
        labels = [dialog.role.itemText(i) for i in range(dialog.role.count())]
        assert any(label.startswith("viewer") for label in labels)
        dialog.address.setText(address)
        dialog.token_file.setText(str(keys.operator_token))
        dialog.fingerprint.setText(keys.fingerprint)
        dialog.role.setCurrentIndex(dialog.role.findData("viewer"))

    run_dialog(AddNodeDialog, add)
    window.add_node()
    (saved,) = load_nodes(window.nodes_file)
    assert saved.role == "viewer" and saved.token_file == str(keys.operator_token)
    link = window.links[0]
    wait_up(qtbot, link)
    assert link.role == "viewer", "an operator token held read-only"

    def edit(dialog: EditNodeDialog) -> None:
        assert dialog.address.isReadOnly() and dialog.address.text() == address
        assert dialog.remember.isChecked(), "the node is in the file"
        assert dialog.role.currentData() == "viewer"
        dialog.name.setText("edited")
        dialog.role.setCurrentIndex(dialog.role.findData(""))

    run_dialog(EditNodeDialog, edit)
    window.edit_current_node()
    (saved,) = load_nodes(window.nodes_file)
    assert (saved.name, saved.role, saved.address) == ("edited", "", address)
    (link,) = window.links
    wait_status(qtbot, link, Status.UP)
    assert link.role == "operator" and link.label == "edited"
    assert window.current_link() is link and window.nodes.topLevelItemCount() == 1


def test_nodes_option_names_the_file_opened_when_no_node_is_named(tmp_path: Path, keys):
    path = tmp_path / "elsewhere.toml"
    save_nodes(path, [spec("127.0.0.1:7330", keys), spec("svc.test:7330", keys)])
    for option in ("--nodes", "--nodes-file"):
        args = build_parser().parse_args(["gui", option, str(path)])
        assert args.nodes_file == str(path)
        assert [s.address for s in gui_specs(args)] == ["127.0.0.1:7330", "svc.test:7330"]
    args = build_parser().parse_args(["gui", "10.0.0.9:1", "--nodes", str(path)])
    assert [s.address for s in gui_specs(args)] == ["10.0.0.9:1"], "named nodes win"
