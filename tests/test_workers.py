"""Workers forked from a master whose agent runs with workers=True get an agent of their
own: on loopback only (never the master's address), with the master's certificate and
tokens, returned by agent.start() in the worker; children that do not inherit the
master's memory (spawn, forkserver) get none.

Real master (tests/hosts/forker.py) in a subprocess, real forks, real TLS logins.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import psutil
import pytest

from agent.wire import split_host_port
from observer.errors import AuthenticationError, RemoteError
from tests.helpers import ROOT, echo_ok, freeze, line_value, wait_until
from tests.test_forks import forker  # noqa: F401  (the fixture)


@pytest.mark.parametrize("method", ["os", "fork"])
def test_a_forked_worker_gets_its_own_agent_on_loopback_only(forker, method):  # noqa: F811
    """The master listens on 127.0.0.2; each worker's agent listens on 127.0.0.1 on a
    port of its own, agent.start() in the worker returns it, and it answers the master
    (relaying with the caller's role) but not an observer holding the master's operator
    token, who must go through the master; the master's session lives on through the
    worker's death."""
    master = forker("--workers", "--bind", "127.0.0.2:0")
    with master.connect() as session:
        master_pid = session.process().pid
        pid, said = master.fork(method, "start")
        assert said["running"] == "True" and said["agent-sockets"] == "0", said
        host, port = split_host_port(said["own"]) or ("", 0)
        assert host == "127.0.0.1" and port != split_host_port(master.agent)[1], said
        started = master.process.wait_line(rf"^event: child {pid} agent (\S+)").group(1)
        assert started == said["own"]  # agent.start() in the worker: the worker's agent
        with pytest.raises(AuthenticationError):
            master.connect(said["own"])
        worker = session.worker(pid)
        assert worker.process().pid == pid
        assert worker.name == f"forker worker {pid}"
        with master.connect(role="viewer") as viewer:
            assert viewer.worker(pid).hello().role == "viewer"
        os.kill(pid, signal.SIGTERM)
        assert master.reap(pid) == -15
        assert session.process().pid == master_pid
        assert echo_ok(master.echo)


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_children_that_do_not_inherit_the_master_get_no_agent(forker, method):  # noqa: F811
    master = forker("--workers")
    pid, said = master.fork(method, "term")
    assert said["running"] == "False" and said["own"] == "-", said
    os.kill(pid, signal.SIGTERM)
    assert master.reap(pid) == -15


def test_the_master_relays_reads_and_actions_to_a_worker_with_the_callers_role(forker):  # noqa: F811
    """Through the master's one port: a viewer reads a worker's process, threads and
    snapshot, but its cancel is refused by the worker (which the master logged in to with
    the viewer's token) and audited on the master as denied, naming the worker; the
    operator's cancel reaches the worker (no such task there) and is audited naming the
    worker and the operator. A process that is not the master's worker is refused."""
    master = forker("--workers")
    pid, said = master.fork("os", "term")
    assert said["running"] == "True", said
    with master.connect() as operator, master.connect(role="viewer") as viewer:
        w = viewer.worker(pid)
        assert w.process().pid == pid
        assert w.name == f"forker worker {pid}"
        assert any(t.name == "MainThread" for t in w.threads())
        assert w.snapshot().process.pid == pid
        with pytest.raises(Exception, match="permission"):
            w.cancel("task-1")
        wo = operator.worker(f"pid-{pid}")
        assert wo.process().pid == pid
        with pytest.raises(Exception, match="no task"):
            wo.cancel("task-999999")
        records = operator.audit()
        mine = [r for r in records if r.action == f"cancel in worker {pid}"]
        assert [(r.role, r.result) for r in mine] == [
            ("viewer", "denied"),
            ("operator", "not-found"),
        ]
        assert [r.target for r in mine] == ["task-1", "task-999999"]
        local = operator._conn.sock.getsockname()
        assert mine[1].peer == f"{local[0]}:{local[1]}"  # the operator's own connection
        with pytest.raises(Exception, match="not a worker"):
            operator.worker(os.getpid()).process()
    os.kill(pid, signal.SIGTERM)
    assert master.reap(pid) == -15


def observer_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "observer.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )


def test_the_cli_lists_and_cancels_tasks_inside_workers_through_the_master(forker, keys):  # noqa: F811
    """`observer ps NODE --process all` lists the master and each worker (their tasks
    too); `observer stack NODE pid-N/task-M` and `observer kill` reach a task in a worker
    through the master's port, and the worker's loop really sees the cancellation."""
    master = forker("--workers")
    pids = [master.fork("fork", "loop")[0] for _ in range(2)]
    creds = ["--token-file", str(keys.operator_token), "--fingerprint", keys.fingerprint]
    listed = observer_cli("ps", master.agent, *creds, "--process", "all", "--json")
    assert listed.returncode == 0, listed.stderr
    processes = json.loads(listed.stdout)
    assert [p["pid"] for p in processes] == [master.process.proc.pid, *pids]
    job = next(t for t in processes[2]["tasks"] if t["name"] == "worker-job")
    text = observer_cli("ps", master.agent, *creds, "--process", str(pids[1]))
    assert text.returncode == 0 and "worker-job" in text.stdout, text.stderr
    stack = observer_cli("stack", master.agent, *creds, f"pid-{pids[1]}/{job['id']}")
    assert stack.returncode == 0 and "worker-job" in stack.stdout, stack.stderr
    mark = master.process.mark()
    killed = observer_cli("kill", master.agent, *creds, job["id"], "--process", str(pids[1]))
    assert killed.returncode == 0, killed.stderr
    master.process.wait_line(rf"^event: child {pids[1]} job cancelled", start=mark)
    assert not any(f"child {pids[0]} job cancelled" in line for line in master.process.lines)
    with master.connect() as node:
        assert [r.action for r in node.audit()][-1] == f"cancel in worker {pids[1]}"
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
        assert master.reap(pid) == -15


def test_children_are_labelled_by_their_role_not_the_masters_argv(forker):  # noqa: F811
    """The master's process list names multiprocessing children as multiprocessing does
    (ForkProcess-1, SpawnProcess-2, ForkPoolWorker-3...) instead of `python` with the
    master's argv; a plain os.fork child keeps its process name."""
    master = forker()
    forked = {method: master.fork(method, "term")[0] for method in ("fork", "spawn", "os")}
    mark = master.process.mark()
    master.process.send("pool fork 2")
    pool = master.process.wait_line(r"^event: pool (\S+)", start=mark).group(1).split(",")
    with master.connect(role="viewer") as node:
        names = {c.pid: c.name for c in node.children()}
    assert re.fullmatch(r"ForkProcess-\d+", names[forked["fork"]]), names
    assert re.fullmatch(r"SpawnProcess-\d+", names[forked["spawn"]]), names
    assert names[forked["os"]].startswith("python"), names
    assert all(re.fullmatch(r"ForkPoolWorker-\d+", names[int(pid)]) for pid in pool), names
    for pid in forked.values():
        os.kill(pid, signal.SIGTERM)
        assert master.reap(pid) == -15


def test_a_worker_forked_while_the_master_relays_holds_none_of_its_links(forker):  # noqa: F811
    """The master holds a relay link to worker A for an operator; worker B, forked
    after, holds no copy of it (a copy would keep A's session open after the master
    let go of it, and B used to inherit one)."""
    master = forker("--workers")
    first, said = master.fork("os", "term")
    port = split_host_port(said["own"])[1]
    with master.connect() as operator:
        assert operator.worker(first).process().pid == first
        second, said = master.fork("os", "term")
        assert str(port) not in said["peers"].split(","), said
        assert operator.worker(second).process().pid == second
    for pid in (first, second):
        os.kill(pid, signal.SIGTERM)
        assert master.reap(pid) == -15


def test_observer_tree_shows_master_workers_and_their_tasks(forker, keys):  # noqa: F811
    """`observer tree` hangs each worker's threads, loops and tasks under its row, ids
    as pid-N/ID (what stack and kill take); --no-workers leaves them out."""
    master = forker("--workers")
    pid = master.fork("fork", "loop")[0]
    creds = ["--token-file", str(keys.viewer_token), "--fingerprint", keys.fingerprint]
    done = observer_cli("tree", master.agent, *creds, "--json")
    assert done.returncode == 0, done.stderr

    def walk(node: dict) -> list[dict]:
        found, stack = [], [node]
        while stack:
            found.append(stack.pop())
            stack.extend(found[-1]["children"])
        return found

    root = json.loads(done.stdout)
    row = next(n for n in walk(root) if n["id"] == f"pid-{pid}")
    inside = walk(row)
    assert any(n["kind"] == "thread" and n["id"].startswith(f"pid-{pid}/thread-") for n in inside)
    job = next(n for n in inside if n["kind"] == "task" and n["name"] == "worker-job")
    assert job["id"].startswith(f"pid-{pid}/task-")
    text = observer_cli("tree", master.agent, *creds)
    assert f"({job['id']})" in text.stdout, text.stdout
    bare = observer_cli("tree", master.agent, *creds, "--no-workers")
    assert "worker-job" not in bare.stdout and f"pid-{pid}" in bare.stdout, bare.stdout
    os.kill(pid, signal.SIGTERM)
    assert master.reap(pid) == -15


def test_a_frozen_worker_costs_the_caller_an_error_not_the_masters_session(forker):  # noqa: F811
    """A worker stopped with SIGSTOP: the master answers the relayed call with
    'unreachable' within its relay timeout, before the observer's own 10 s timeout, and
    the same session goes on answering; once the worker runs again it answers again."""
    master = forker("--workers")
    pid = master.fork("os", "term")[0]
    with master.connect() as operator:
        worker = operator.worker(pid)
        assert worker.process().pid == pid
        freeze(pid)
        try:
            started = time.monotonic()
            with pytest.raises(RemoteError) as caught:
                worker.process()
            assert caught.value.kind == "unreachable", caught.value
            assert time.monotonic() - started < 9.0
            assert operator.process().pid == master.process.proc.pid
        finally:
            os.kill(pid, signal.SIGCONT)
        assert worker.process().pid == pid
    os.kill(pid, signal.SIGTERM)
    assert master.reap(pid) == -15


def test_multiprocessing_pool_workers_get_agents_too(forker):  # noqa: F811
    """A multiprocessing.Pool (fork start method) in a master with workers=True: each
    ForkPoolWorker gets an agent, is labelled as such and answers through the master."""
    master = forker("--workers")
    mark = master.process.mark()
    master.process.send("pool fork 2")
    pids = [
        int(p)
        for p in master.process.wait_line(r"^event: pool (\S+)", start=mark).group(1).split(",")
    ]
    with master.connect(role="viewer") as node:

        def with_agents() -> dict | None:
            listed = {c.pid: c for c in node.children()}
            return listed if all(p in listed and listed[p].agent for p in pids) else None

        children = wait_until(with_agents)
        for pid in pids:
            assert re.fullmatch(r"ForkPoolWorker-\d+", children[pid].name)
            assert node.worker(pid).process().pid == pid


def test_an_unobserved_worker_agent_stays_dormant_until_someone_connects(forker):  # noqa: F811
    """A worker nobody asked for runs one extra thread, blocked on its listener (no
    agent state, no sampler, no timed wake-ups); the master lists its address, and the
    first relayed call builds the agent, which answers."""
    master = forker("--workers")
    pid = master.fork("os", "idle")[0]
    worker = psutil.Process(pid)
    with master.connect() as node:
        wait_until(lambda: any(c.pid == pid and c.agent for c in node.children()))
        assert worker.num_threads() == 2
        assert node.worker(pid).process().pid == pid
        assert worker.num_threads() >= 4  # listener, sampler, the master's session
        names = {t.name for t in node.worker(pid).threads()}
        assert "observer-agent-worker" not in names, names  # the waiting thread ended
    os.kill(pid, signal.SIGTERM)
    assert master.reap(pid) == -15


def test_a_worker_of_a_master_serving_metrics_wakes_without_its_port(forker):  # noqa: F811
    """The master serves Prometheus metrics on a set port (as a scrape config names it):
    its worker's agent must not try to bind the same metrics address (with it, the forked
    child never even reported back); the master keeps serving."""
    master = forker("--workers", "--metrics", f"127.0.0.1:{free_port()}")
    url = line_value(master.process, "metrics")
    pid, said = master.fork("os", "term")
    assert said["running"] == "True", said
    with master.connect() as operator:
        assert operator.worker(pid).process().pid == pid
    with urllib.request.urlopen(url, timeout=10) as reply:
        assert b"process_resident_memory_bytes" in reply.read()
    os.kill(pid, signal.SIGTERM)
    assert master.reap(pid) == -15


def free_port() -> int:
    """A port nobody listens on now (the master binds it a moment later, as a set port)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("method", ["os", "fork"])
def test_a_worker_lists_no_loop_or_task_of_the_masters_other_threads(forker, method):  # noqa: F811
    """The master runs its echo server's loop in a thread of its own; a forked worker has
    no such thread, but the loop and its tasks were copied into its memory. The worker
    lists only its own loop and tasks (it used to list the master's echo loop, under a
    new thread that reused the old ident, with a loop lag as old as the fork)."""
    master = forker("--workers")
    with master.connect() as session:
        own = session.snapshot()
        echo_loops = {t.loop for t in own.tasks if "serve" in t.coroutine}
        assert echo_loops, [t.coroutine for t in own.tasks]
        pid = master.fork(method, "loop")[0]
        worker = session.worker(pid)
        snap = wait_until(
            lambda: (s := worker.snapshot()) and any(t.name == "worker-job" for t in s.tasks) and s,
            message="the worker's own job listed",
        )
        assert [t.coroutine for t in snap.tasks if "serve" in t.coroutine] == []
        assert len(snap.loops) == 1, snap.loops
        assert {t.loop for t in snap.tasks} == {snap.loops[0].id}
        lag = snap.loops[0].lag
        assert lag is None or lag < 5.0, lag
        os.kill(pid, signal.SIGTERM)
        assert master.reap(pid) == -15


def test_chaos_counts_a_pool_worker_replaced_under_a_new_number(forker, keys):  # noqa: F811
    """`observer chaos --kind process --match 'ForkPoolWorker-*' --action kill` on a
    multiprocessing Pool: the Pool replaces the killed ForkPoolWorker-N with
    ForkPoolWorker-M (a new number, a new pid, an agent of its own); the run counts
    that as the slot recovered (it waited for the same name before, which never came)."""
    from observer.chaos import Chaos
    from observer.nodesfile import NodeSpec

    master = forker("--workers")
    mark = master.process.mark()
    master.process.send("pool fork 2")
    pids = master.process.wait_line(r"^event: pool (\S+)", start=mark).group(1).split(",")
    spec = NodeSpec(
        address=master.agent,
        name="forker",
        token_file=str(keys.operator_token),
        fingerprint=keys.fingerprint,
    )
    try:
        summary = Chaos(
            [spec], "ForkPoolWorker-*", kind="process", action="kill", seed=7, recovery_timeout=15
        ).run()
        assert summary.victims == 1 and summary.recovered == 1, summary.to_dict()
        (recovery,) = summary.recoveries
        assert recovery["target"] in {f"pid-{p}" for p in pids}
        new = int(recovery["replacement"].removeprefix("pid-"))
        assert str(new) not in pids
        with master.connect(role="viewer") as node:
            child = wait_until(lambda: next((c for c in node.children() if c.pid == new), None))
            assert re.fullmatch(r"ForkPoolWorker-\d+", child.name), child.name
            assert child.name not in {
                c.name for c in node.children() if c.pid != new and str(c.pid) in pids
            }
            assert node.worker(new).process().pid == new
    finally:
        _kill_descendants(master)


def _started(master, command: str) -> list[int]:
    """Send ``pool ...`` or ``executor ...`` to the master; the workers' pids."""
    mark = master.process.mark()
    master.process.send(command)
    line = master.process.wait_line(rf"^event: {command.split()[0]} (\S+)", start=mark)
    return [int(p) for p in line.group(1).split(",")]


def _kill_descendants(master) -> None:
    """End the master and every process under it. The master is stopped first (SIGSTOP):
    a Pool would replace killed workers, which the master's end would then orphan."""
    pid = master.process.proc.pid
    os.kill(pid, signal.SIGSTOP)
    for child in psutil.Process(pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            child.kill()
    os.kill(pid, signal.SIGKILL)


POOL_NAMES = {
    "fork": "ForkPoolWorker",
    "spawn": "SpawnPoolWorker",
    "forkserver": "ForkServerPoolWorker",
}


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_pool_workers_of_every_start_method_join_with_agent_join(forker, method):  # noqa: F811
    """A master with workers=True and OBSERVER_AGENT_SPAWNED_WORKERS=1; a Pool whose
    initializer is agent.join: with fork each worker's own agent wakes, with spawn and
    forkserver (whose workers inherit nothing) each starts one from the master's join
    file. Every worker is labelled by multiprocessing's name and answers through the
    master's port, with the caller's role."""
    master = forker("--workers", "--spawned")
    try:
        pids = _started(master, f"pool {method} 2 join")
        with master.connect() as node, master.connect(role="viewer") as viewer:

            def joined() -> dict | None:
                listed = {c.pid: c for c in node.children()}
                return listed if all(p in listed and listed[p].agent for p in pids) else None

            children = wait_until(joined, timeout=30, message="every pool worker has an agent")
            for pid in pids:
                assert re.fullmatch(rf"{POOL_NAMES[method]}-\d+", children[pid].name)
                assert split_host_port(children[pid].agent)[0] == "127.0.0.1"
                assert node.worker(pid).process().pid == pid
                assert viewer.worker(pid).hello().role == "viewer"
                with pytest.raises(AuthenticationError):  # only the master gets in
                    master.connect(children[pid].agent)
    finally:
        _kill_descendants(master)


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_process_pool_executor_workers_join_through_the_master(forker, method):  # noqa: F811
    """ProcessPoolExecutor(initializer=agent.join) with each start method: every
    worker answers through the master's port."""
    master = forker("--workers", "--spawned")
    try:
        pids = _started(master, f"executor {method} 2 join")
        with master.connect() as node:
            wait_until(
                lambda: (
                    all(c.agent for c in node.children() if c.pid in pids)
                    and {c.pid for c in node.children()} >= set(pids)
                ),
                timeout=30,
            )
            for pid in pids:
                assert node.worker(pid).process().pid == pid
    finally:
        _kill_descendants(master)


def test_spawned_workers_get_no_agent_unless_the_master_opted_in(forker):  # noqa: F811
    """Without OBSERVER_AGENT_SPAWNED_WORKERS the master writes no join file and
    agent.join() in a spawned worker starts nothing (the worker still works)."""
    master = forker("--workers")
    try:
        pids = _started(master, "executor spawn 1 join")
        with master.connect() as node:
            (child,) = [c for c in node.children() if c.pid in pids]
            assert child.agent is None
            with pytest.raises(RemoteError, match="no worker agent"):
                node.worker(pids[0]).process()
    finally:
        _kill_descendants(master)
