"""The client sees the host as it really is: tasks, threads, loops, children, stacks, locals."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from pathlib import Path

import psutil
import pytest

from agent.collect.process import Throttled, _own_inet_sockets, connection_count
from agent.redact import REDACTED
from observer.tree import build_tree
from tests.helpers import wait_until

APP = str(Path(__file__).parent / "hosts" / "app.py")
SLEEPER_LINE = next(
    i for i, line in enumerate(Path(APP).read_text().splitlines(), 1) if "SLEEPER-LINE" in line
)


def test_task_appears_with_name_and_location(operator, host):
    tasks = {t.name: t for t in operator.tasks()}
    sleeper = tasks["sleeper-1"]
    assert sleeper.state == "pending"
    assert sleeper.coroutine == "sleeper"
    assert sleeper.file == APP and sleeper.line == SLEEPER_LINE
    assert sleeper.id.startswith("task-")
    # tasks of a loop running in another thread are found too
    assert "side-task" in tasks
    assert tasks["side-task"].loop != sleeper.loop


def test_named_thread_has_cpu_time(operator):
    def busy():
        threads = {t.name: t for t in operator.threads()}
        t = threads["busy-thread"]
        return t if t.cpu_time and t.cpu_time > 0 else None

    busy_thread = wait_until(busy, message="busy-thread CPU time > 0")
    assert busy_thread.native_id and busy_thread.alive and not busy_thread.is_agent
    if sys.platform.startswith("linux"):  # state and CPU come from one /proc read
        assert busy_thread.state in ("running", "sleeping")
    threads = {t.name: t for t in operator.threads()}
    assert threads["MainThread"].is_main and threads["MainThread"].loop
    assert threads["side-loop"].loop and threads["side-loop"].loop != threads["MainThread"].loop
    assert any(t.is_agent for t in threads.values())


def test_snapshot_tree_nests_awaited_task_and_children(operator, host):
    snap = operator.snapshot()
    root = build_tree(snap)
    flat = {node.id: (depth, node) for depth, node in root.walk()}
    ids = [node.id for _d, node in root.walk()]
    assert len(ids) == len(set(ids)), "every row appears once"
    by_name = {node.name: node for _d, node in root.walk()}
    parent = by_name["parent"]
    assert [c.name for c in parent.children] == ["child-of-parent"]
    supervisor = by_name["supervisor"]
    assert [c.name for c in supervisor.children] == ["worker"]  # found via asyncio.wait's set
    assert f"pid-{host.child_pid}" in flat
    main_thread = by_name["MainThread"]
    assert main_thread.children and main_thread.children[0].kind == "loop"
    assert snap.process.pid != host.child_pid and snap.loops


def test_children_listed(operator, host):
    children = {c.pid: c for c in operator.children()}
    assert host.child_pid in children
    assert "tests.hosts.child" in " ".join(children[host.child_pid].cmdline)


def test_task_stack_and_locals_are_redacted(operator):
    sleeper = next(t for t in operator.tasks() if t.name == "sleeper-1")
    stack = operator.stack(sleeper.id)
    assert stack.kind == "task" and stack.frames[0].function == "sleeper"
    assert stack.frames[0].line == SLEEPER_LINE
    assert "asyncio.sleep(3600)" in stack.frames[0].source
    info = operator.locals(sleeper.id, 0)
    variables = {v.name: v for v in info.variables}
    assert variables["answer"].repr == "42"
    assert variables["password"].repr == REDACTED and variables["password"].redacted
    assert "hunter2" not in repr(info)
    assert "k-123456789" not in variables["records"].repr
    assert variables["records"].expandable
    first = operator.locals(sleeper.id, 0, ("records", "[0]"))
    inner = {v.name: v for v in first.variables}
    assert inner["'id'"].repr == "1"
    assert "k-123456789" not in repr(first)


def test_thread_stack(operator):
    victim = next(t for t in operator.threads() if t.name == "victim-thread")
    stack = operator.stack(victim.id)
    assert stack.kind == "thread"
    assert any(f.function == "victim_thread" and f.file == APP for f in stack.frames)


def test_process_info_and_exposed_objects(operator):
    p = operator.process()
    assert p.node == "test-host" and p.role == "operator"
    assert p.rss > 0 and p.num_threads >= 5 and p.num_tasks >= 6 and p.num_loops == 2
    assert p.num_connections is None or p.num_connections >= 2  # the listener and us
    exposed = {e.name: e for e in p.exposed}
    assert exposed["jobs"].size == 3
    assert "s3cr3t" not in exposed["settings"].repr and REDACTED in exposed["settings"].repr
    members = {v.name: v for v in operator.exposed("settings")}
    assert members["'db_password'"].repr == REDACTED


def test_history_is_filled_while_connected(operator):
    history = wait_until(
        lambda: (h := operator.history()) and len(h.samples) >= 2 and h,
        message="two history samples",
    )
    sample = history.samples[-1]
    assert sample.rss > 0 and sample.threads >= 5 and sample.tasks >= 6
    assert history.capacity >= 600
    wait_until(lambda: operator.history().samples[-1].loop_lag is not None, message="loop lag")
    assert operator.history().samples[-1].loop_lag < 1.0


def test_task_filter_and_limit_are_applied_in_the_agent(operator):
    listing = operator.task_list(match="sleeper")
    assert [t.name for t in listing.tasks] == ["sleeper-1"] and listing.total == 1
    limited = operator.task_list(limit=2)
    assert len(limited.tasks) == 2 and limited.truncated and limited.total > 2


def test_stack_with_locals_in_one_round_trip(operator):
    sleeper = next(t for t in operator.tasks() if t.name == "sleeper-1")
    stack, frame_locals = operator.stack_with_locals(sleeper.id)
    assert len(frame_locals) == len(stack.frames) >= 1
    assert [f.index for f in stack.frames] == [lc.frame.index for lc in frame_locals]
    first = {v.name: v for v in frame_locals[0].variables}
    assert first["password"].redacted and first["answer"].repr == "42"
    assert operator.stack_with_locals(sleeper.id, with_locals=False)[1] == ()


def test_loops_count_their_tasks(operator):
    snap = operator.snapshot()
    assert not snap.truncated
    per_loop = {lp.id: lp.num_tasks for lp in snap.loops}
    for loop_id, count in per_loop.items():
        assert count == sum(1 for t in snap.tasks if t.loop == loop_id)
    assert sum(per_loop.values()) == len(snap.tasks)


def test_environment_is_sent_redacted(make_host):
    h = make_host(env={"DEMO_API_TOKEN": "tok-very-secret", "DEMO_PLAIN": "visible-value"})
    with h.connect("viewer") as node:
        lines = node.process().environ
    env = dict(line.partition("=")[::2] for line in lines)
    assert env["DEMO_PLAIN"] == "visible-value"
    assert env["DEMO_API_TOKEN"] == REDACTED
    assert not any("tok-very-secret" in line for line in lines)


def test_throttled_probe_is_reused_until_its_age():
    """A costly probe (the machine-wide socket tables) answers from its last reading
    until that is older than factor x its cost and min_age."""
    calls: list[int] = []

    def probe() -> int:
        calls.append(1)
        return len(calls)

    kept = Throttled(probe, min_age=3600.0)
    assert [kept.get(), kept.get(), kept.get()] == [1, 1, 1]
    fresh = Throttled(probe, min_age=0.0, factor=0.0)
    assert [fresh.get(), fresh.get()] == [2, 3]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd")
def test_socket_count_from_own_descriptors_matches_psutil():
    """The count read from this process's descriptors equals psutil's (which reads every
    socket table of the machine): listening, connected, bound UDP, v6, a descriptor
    shared by two numbers, and neither an unbound inet socket nor a unix one."""
    made: list[socket.socket] = []
    try:
        listener = socket.socket()
        made.append(listener)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client = socket.create_connection(listener.getsockname())
        made += [client, listener.accept()[0], socket.socket(), socket.socket(socket.AF_UNIX)]
        made.append(socket.socket(fileno=os.dup(client.fileno())))
        udp = socket.socket(type=socket.SOCK_DGRAM)
        made.append(udp)
        udp.bind(("127.0.0.1", 0))
        if socket.has_ipv6:
            v6 = socket.socket(socket.AF_INET6)
            made.append(v6)
            with contextlib.suppress(OSError):  # no ::1 in this sandbox
                v6.bind(("::1", 0))
                v6.listen()
        process = psutil.Process()
        own = _own_inet_sockets()
        assert own is not None and own >= 4
        assert own == len(process.net_connections(kind="inet")) == connection_count(process)
    finally:
        for sock in made:
            sock.close()
