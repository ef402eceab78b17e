"""Many nodes: names with several addresses, `observer nodes`, and every status a node
can have, reached through real agents that really stop, freeze, die and come back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from observer.errors import NodeTimeout, ObserverError, PermissionDenied
from observer.fleet import Fleet
from observer.link import Link, NotConnected, Status
from observer.nodesfile import NodeSpec, save_nodes
from observer.resolve import HOSTS_ENV, Roster, hosts_file_lookup
from tests.helpers import ROOT, freeze, wait_until
from tests.helpers import node_spec as spec


def observer_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full = dict(os.environ, **(env or {}))
    full["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "observer.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=full,
        cwd=ROOT,
    )


def creds(keys, role: str = "operator") -> list[str]:
    token = keys.operator_token if role == "operator" else keys.viewer_token
    return ["--token-file", str(token), "--fingerprint", keys.fingerprint]


# ---------------------------------------------------------------- resolution


hostnames = st.sampled_from(["api.internal", "db.internal", "other"])
ips = st.sampled_from([f"127.0.0.{i}" for i in range(2, 8)] + ["::1", "fdaa::3"])


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(ips, st.lists(hostnames, min_size=1, max_size=3)), max_size=8))
def test_hosts_file_lists_every_address_of_a_name_once_in_order(tmp_path_factory, entries):
    path = tmp_path_factory.mktemp("hosts") / "hosts"
    path.write_text("# comment\n" + "".join(f"{ip} {' '.join(ns)}  # x\n" for ip, ns in entries))
    for name in ("api.internal", "db.internal"):
        expected: list[str] = []
        for ip, names in entries:
            if name in names and ip not in expected:
                expected.append(ip)
        assert hosts_file_lookup(name, str(path)) == expected


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sets(st.integers(2, 7), max_size=5), min_size=1, max_size=6))
def test_roster_adds_new_addresses_and_marks_gone_ones(tmp_path_factory, rounds):
    """Over any sequence of DNS answers: every address ever listed is a node, exactly the
    unlisted ones are marked gone, and a name that stops resolving keeps its last nodes."""
    path = tmp_path_factory.mktemp("hosts") / "hosts"
    os.environ[HOSTS_ENV] = str(path)
    try:
        roster = Roster([NodeSpec(address="api.internal:7330")])
        seen: set[str] = set()
        stand_in = not rounds[0]
        for listed in rounds:
            path.write_text("".join(f"127.0.0.{i} api.internal\n" for i in sorted(listed)))
            change = roster.update()
            now = {f"127.0.0.{i}:7330" for i in listed}
            if not listed:  # the name does not resolve at all: a hiccup, nothing changes
                assert change.errors and not change.gone
                if not seen:  # never resolved: the name itself stands in, to show why
                    assert set(roster.members) == {"api.internal:7330"}
                continue
            assert change.removed == (["api.internal:7330"] if not seen and stand_in else [])
            stand_in = False
            assert {s.address for s in change.added} == now - seen
            seen |= now
            assert set(roster.members) == seen
            assert set(roster.gone) == seen - now
            assert all(s.server_name == "api.internal" for s in roster.members.values())
            assert set(roster.origin.values()) == {"api.internal:7330"}
    finally:
        del os.environ[HOSTS_ENV]


def test_localhost_and_ip_literals_are_not_expanded():
    roster = Roster([NodeSpec(address="localhost:1"), NodeSpec(address="[::1]:2")])
    change = roster.update()
    assert [s.address for s in change.added] == ["localhost:1", "[::1]:2"]


# ---------------------------------------------------------------- observer nodes


def wait_for_settled_load(address: str, keys) -> None:
    """Wait until the agent's "now" counts the host's own threads and tasks: its first load
    sample is taken when the agent starts, before the host starts them, and an overview
    reuses a sample for up to two seconds."""
    from observer.client import connect

    node = connect(address, token_file=keys.operator_token, fingerprint=keys.fingerprint)
    try:
        wait_until(
            lambda: (now := node.overview(0.0).now).threads >= 4 and now.tasks >= 3,
            message=f"a load sample of {address} taken after the host set up",
        )
    finally:
        node.close()


def test_nodes_json_contract_over_several_agents(agents, keys, tmp_path):
    """Three agents, one name standing for two of them, a refused port and a name that does
    not resolve: one object per node, each with its address and a contract status."""
    a, a_addr = agents.start("127.0.0.2:0", "alpha")
    port = a_addr.rsplit(":", 1)[1]
    b, b_addr = agents.start(f"127.0.0.3:{port}", "beta")
    c, c_addr = agents.start("127.0.0.1:0", "gamma")
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.2 svc.test\n127.0.0.3 svc.test\n")
    for address in (a_addr, b_addr):
        wait_for_settled_load(address, keys)
    result = observer_cli(
        "nodes",
        f"svc.test:{port}",
        c_addr,
        "127.0.0.1:1",
        "nowhere.invalid:7330",
        *creds(keys),
        "--timeout",
        "5",
        "--json",
        env={HOSTS_ENV: str(hosts)},
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    by_address = {r["address"]: r for r in rows}
    assert list(by_address) == [a_addr, b_addr, c_addr, "127.0.0.1:1", "nowhere.invalid:7330"]
    for row, host, name in ((by_address[a_addr], a, "alpha"), (by_address[b_addr], b, "beta")):
        assert row["status"] == "up" and row["name"] == name and row["pid"] == host.proc.pid
        assert row["origin"] == f"svc.test:{port}"
        assert row["rss"] > 0 and row["threads"] >= 4 and row["tasks"] >= 3
        assert row["agent_version"] and row["uptime"] > 0 and row["rtt"] > 0
    assert by_address[c_addr]["status"] == "up" and by_address[c_addr]["pid"] == c.proc.pid
    assert by_address["127.0.0.1:1"]["status"] == "down"
    assert "refused" in by_address["127.0.0.1:1"]["error"]
    assert by_address["nowhere.invalid:7330"]["status"] == "down"
    assert "resolve" in by_address["nowhere.invalid:7330"]["error"]
    assert all(r["status"] in ("up", "down", "dead", "auth-failed", "connecting") for r in rows)


def test_nodes_table_and_nodes_file_with_role(agents, keys, tmp_path):
    """The nodes file is read when no node is named; ``role = "viewer"`` holds an operator
    token read-only, and a wrong token shows auth-failed."""
    _, addr = agents.start()
    path = tmp_path / "nodes.toml"
    save_nodes(
        path,
        [
            spec(addr, keys, name="held", role="viewer"),
            NodeSpec(
                address=addr.replace("127.0.0.1", "localhost"),
                name="bad",
                token_file=__file__,
                fingerprint=keys.fingerprint,
            ),
        ],
    )
    result = observer_cli("nodes", "--nodes-file", str(path), "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [(r["name"], r["status"], r["role"]) for r in rows] == [
        ("held", "up", "viewer"),
        ("bad", "auth-failed", ""),
    ]
    text = observer_cli("nodes", "--nodes-file", str(path))
    assert text.returncode == 0
    header, first, second = text.stdout.splitlines()
    assert header.split()[:4] == ["NODE", "ADDRESS", "STATUS", "RTT"]
    assert first.split()[:3] == ["held", addr, "up"]
    assert "auth-failed" in second and "authentication failed" in second


def test_requested_role_is_never_raised(agents, keys):
    _, addr = agents.start()
    held = Link(spec(addr, keys, role="viewer"))
    with pytest.raises(PermissionDenied):
        held.call(lambda node: node.cancel("task-1"))
    assert held.role == "viewer" and held.status is Status.UP
    raised = Link(spec(addr, keys, role="admin"))
    raised.call(lambda node: node.hello())
    assert raised.role == "operator"
    viewer = Link(spec(addr, keys, token="viewer", role="operator"))
    viewer.call(lambda node: node.hello())
    assert viewer.role == "viewer"
    for link in (held, raised, viewer):
        link.close()


# ---------------------------------------------------------------- down, dead, back


def test_agent_stop_is_down_start_is_up_and_kill_is_dead(agents, keys):
    host, addr = agents.start()
    link = Link(spec(addr, keys))
    assert link.call(lambda node: node.hello()).pid == host.proc.pid
    mark = host.mark()
    host.send("agent-stop")
    host.wait_line("agent stopped", start=mark)
    with pytest.raises(ObserverError):
        link.call(lambda node: node.hello())
    link.reconnect_now()
    with pytest.raises(NotConnected):
        link.call(lambda node: node.hello())
    assert link.status is Status.DOWN, "the process lives: down, not dead"
    host.send("agent-start")
    host.wait_line("agent started", start=mark)
    link.reconnect_now()
    assert link.call(lambda node: node.hello()).pid == host.proc.pid
    assert link.status is Status.UP and not link.restarted, "same process: no restart"
    host.proc.kill()
    host.proc.wait(10)
    with pytest.raises(ObserverError):
        link.call(lambda node: node.hello())
    link.reconnect_now()
    with pytest.raises(NotConnected):
        link.call(lambda node: node.hello())
    assert link.status is Status.DEAD
    link.close()


def test_agent_stop_hangs_up_every_session_and_their_threads_close_the_sockets(agents, keys):
    """The host stops its agent with three observers connected: it shuts their sessions
    down, each session's thread wakes and closes its own socket (never closed under its
    read): every observer's next call fails, and soon the host holds none of them."""
    host, addr = agents.start()
    port = int(addr.rsplit(":", 1)[1])
    process = psutil.Process(host.proc.pid)

    def sessions() -> int:
        tcp = process.net_connections(kind="tcp")
        return sum(1 for c in tcp if c.laddr and c.laddr.port == port and c.raddr)

    links = [Link(spec(addr, keys)) for _ in range(3)]
    for link in links:
        assert link.call(lambda node: node.hello()).pid == host.proc.pid
    assert sessions() == 3
    mark = host.mark()
    host.send("agent-stop")
    host.wait_line("agent stopped", start=mark)
    for link in links:
        with pytest.raises(ObserverError):
            link.call(lambda node: node.hello())
    wait_until(lambda: sessions() == 0, message="the host closed every session's socket")
    for link in links:
        link.close()


def test_new_process_at_the_same_address_is_a_restart(agents, keys):
    old, addr = agents.start()
    link = Link(spec(addr, keys))
    link.call(lambda node: node.hello())
    old.proc.kill()
    old.proc.wait(10)
    new, again = agents.start(addr)
    assert again == addr
    link.reconnect_now()
    wait_until(lambda: _answers(link), message="the link came back")
    assert link.status is Status.UP and link.pid == new.proc.pid
    assert f"pid {old.proc.pid} -> {new.proc.pid}" in link.restarted and link.restarts == 1
    link.close()


def _answers(link: Link) -> bool:
    try:
        link.call(lambda node: node.hello(), timeout=5)
    except ObserverError:
        link.reconnect_now()
        return False
    return True


def test_frozen_node_is_down_after_its_timeout_and_never_holds_the_others(agents, keys):
    """SIGSTOP: the kernel still accepts, nobody answers. The fleet's refresh waits for it
    once (its timeout), then skips it while it backs off; the other rows stay fresh."""
    frozen, frozen_addr = agents.start(name="frozen")
    others = [agents.start(name=f"ok-{i}")[1] for i in range(3)]
    with Fleet([spec(a, keys) for a in [frozen_addr, *others]], timeout=1.0) as fleet:
        assert {r.status for r in fleet.refresh()} == {"up"}
        freeze(frozen.proc.pid)
        try:
            started = time.monotonic()
            rows = fleet.refresh()
            first = time.monotonic() - started
            assert [r.status for r in rows] == ["down", "up", "up", "up"]
            assert "did not answer" in rows[0].error and rows[0].stale is not None
            assert rows[0].cpu_percent is not None, "the last data stays, marked stale"
            started = time.monotonic()
            rows = fleet.refresh()
            second = time.monotonic() - started
            assert [r.status for r in rows] == ["down", "up", "up", "up"]
            assert 1.0 <= first < 3.0, "the frozen node was waited for once, for its timeout"
            assert second < first, "and not again while it backs off"
        finally:
            os.kill(frozen.proc.pid, signal.SIGCONT)
        link = fleet.links[frozen_addr]
        link.reconnect_now()
        wait_until(
            lambda: fleet.refresh() and fleet.settle()[0].status == "up",
            message="thawed node is up",
        )
        assert not link.restarted, "the same process came back"


def test_timeout_error_names_the_deadline(agents, keys):
    host, addr = agents.start()
    link = Link(spec(addr, keys))
    link.call(lambda node: node.hello())
    freeze(host.proc.pid)
    try:
        with pytest.raises(NodeTimeout, match="within 0.5s"):
            link.call(lambda node: node.overview(), timeout=0.5)
        assert link.status is Status.DOWN
    finally:
        os.kill(host.proc.pid, signal.SIGCONT)
    link.close()


@pytest.mark.parametrize(
    ("error", "note"),
    [
        ("cannot connect to [::1]:7330: no route to host", "cannot connect: no route to host"),
        ("[::1]:7330 refused the connection", "refused the connection"),
        ("[::1]:7330 did not answer overview within 1s", "did not answer overview within 1s"),
        ("connection to [::1]:7330 lost", "connection lost"),
        ("authentication failed for [::1]:7330", "authentication failed"),
        ("cannot resolve api.internal: Name or service not known", None),
    ],
)
def test_cluster_note_gives_the_error_without_the_address_the_row_shows(error, note):
    from dataclasses import fields

    from observer.fleet import ClusterRow
    from observer.format import cluster_note

    values = {f.name: None for f in fields(ClusterRow)}
    values.update(address="[::1]:7330", error=error, in_dns=True, restarted="", spark=())
    assert cluster_note(ClusterRow(**values)) == (note or error)
