"""The System tab's refresh is one round trip: Node.system() answers what process(),
children() and threads() answer, from a real host."""

from __future__ import annotations

from tests.helpers import echo_ok


def test_system_is_process_children_and_threads_in_one_round_trip(host):
    with host.connect("viewer") as node:
        node.hello()
        calls = []
        raw = node._raw
        node._raw = lambda method, *args: calls.append(method) or raw(method, *args)
        process, children, exits, threads = node.system()
        assert calls == ["system"]
        del node._raw
        assert process.pid == node.process().pid and process.role == "viewer"
        assert {c.pid for c in children} == {c.pid for c in node.children()} >= {host.child_pid}
        assert {t.id for t in threads} == {t.id for t in node.threads()}
        assert any(t.is_agent for t in threads) and any(t.is_main for t in threads)
        assert exits == ()  # no worker of this host has exited
    assert echo_ok(host.echo)
