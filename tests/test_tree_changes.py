"""A master's own snapshot delta and its workers' in one round trip (the agent's ``tree``,
Node.tree_changes, the Processes tab's steady refresh), against a real master with real
forked workers (tests/hosts/forker.py --workers) over TLS: the same rows as the two
calls it replaces, one request per steady refresh, the caller's role in the master and
in every worker, hostile arguments refused before any worker is asked, the master's part
counted within the replies' bound, a frozen worker costing its timeout only, and an agent
from before the call (``--no-tree``) still served, in two round trips. And the children
the master describes at every refresh (agent.collect.children): what it no longer reads
twice never goes stale (an exec'd child, each one's parent).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest
from rpyc.core import consts

from agent import fanout
from agent.codec import decode_envelope
from agent.collect.children import ChildTracker
from observer import rpc
from observer.client import SnapshotChanges
from observer.errors import RemoteError
from observer.gui.delta import Shadow
from observer.gui.workers import process_tree_delta, worker_of
from observer.taskcache import TaskCache
from tests.attack.raw import Attacker, stock_request
from tests.helpers import echo_ok, freeze, wait_until
from tests.test_forks import forker  # noqa: F401  (the fixture)

FANOUT_THREAD = "observer-agent-fanout"


def requests(node) -> list[int]:
    """Every request the node's connection sends from now on (rpyc messages)."""
    conn = node._conn
    sent: list[int] = []
    send = conn._send
    conn._send = lambda msg, seq, args: (sent.append(msg), send(msg, seq, args))[1]
    return sent


def with_jobs(node, pids: list[int]) -> None:
    """Wait until every worker runs its worker-job task (its agent built, its loop up)."""

    def ready() -> bool:
        _found, got = node.worker_changes([(node.worker(pid), (0, 0)) for pid in pids])
        return all(
            isinstance(got.get(pid), SnapshotChanges)
            and any(t.name == "worker-job" for t in got[pid].tasks)
            for pid in pids
        )

    wait_until(ready, timeout=20)


def rows(changes: SnapshotChanges) -> dict[str, object]:
    """What a process's part of the tree is drawn from (CPU and ages aside)."""
    snap = changes.snapshot()
    return {
        "pid": snap.process.pid,
        "tasks": sorted((t.id, t.name, t.loop) for t in snap.tasks),
        "threads": sorted(t.id for t in snap.threads if t.name != FANOUT_THREAD),
        "loops": sorted(lp.id for lp in snap.loops),
        "children": sorted((c.pid, c.name, c.agent) for c in snap.children),
    }


def stop(master, pids: list[int]) -> None:
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
        assert master.reap(pid) == -15


def test_the_tree_call_brings_the_rows_of_the_two_calls_in_one_round_trip(forker):  # noqa: F811
    """Two workers. The master's changes and the workers' (two round trips), then the same
    through tree_changes: one request, the same tasks, threads, loops and children for
    the master and each worker, and no thread of the fan-out itself in the master's
    part (it was made while they asked). Asked again from its cursors: one request,
    deltas with no task rows from anyone."""
    master = forker("--workers")
    pids = [master.fork("fork", "loop")[0] for _ in range(2)]
    with master.connect() as node:
        with_jobs(node, pids)
        two = node.changes((0, 0))
        _found, theirs = node.worker_changes([(node.worker(pid), (0, 0)) for pid in pids])
        sent = requests(node)
        held = [(node.worker(pid), (0, 0)) for pid in pids]
        mine, found, got = node.tree_changes((0, 0), held)
        assert sent == [consts.MSG_REQUEST], sent
        assert found.workers == ()  # named workers: their rows come from the master's part
        assert rows(mine) == rows(two)
        assert FANOUT_THREAD not in {t.name for t in mine.threads}
        assert {c.pid for c in mine.children if c.agent} == set(pids)
        for pid in pids:
            assert isinstance(got[pid], SnapshotChanges), got[pid]
            assert rows(got[pid]) == rows(theirs[pid])

        del sent[:]
        again = [(w, got[w.pid].cursor) for w, _cursor in held]
        steady, _found, later = node.tree_changes(mine.cursor, again)
        assert sent == [consts.MSG_REQUEST], sent
        assert not steady.full and steady.tasks == () and steady.gone == ()
        assert node.last_listing.base > 0 and node.last_listing.rows == 0, node.last_listing
        for worker, _cursor in again:
            assert not later[worker.pid].full and later[worker.pid].tasks == ()
            assert worker.last_listing.rows == 0, worker.last_listing
        assert rows(steady) == rows(mine)
    stop(master, pids)


def test_the_processes_tabs_steady_refresh_is_one_round_trip(forker):  # noqa: F811
    """The Processes tab on a master with two workers: once they are known, each refresh
    sends one request, however many workers; one forked since the last refresh costs
    that refresh a second request (its first listing), and the next is one again, the
    newcomer's rows in the tab."""
    master = forker("--workers")
    pids = [master.fork("fork", "loop")[0] for _ in range(2)]
    with master.connect() as node:
        with_jobs(node, pids)
        shadow = Shadow()
        process_tree_delta(node, shadow)  # the first: the master, then its workers
        sent = requests(node)
        for _ in range(3):
            del sent[:]
            delta = process_tree_delta(node, shadow)
            assert sent == [consts.MSG_REQUEST], sent
            assert delta.full is None and delta.counts["worker"] == 2
        newcomer = master.fork("fork", "loop")[0]
        wait_until(lambda: newcomer in {c.pid for c in node.children() if c.agent})
        del sent[:]
        delta = process_tree_delta(node, shadow)
        assert sent == [consts.MSG_REQUEST] * 2, sent
        assert delta.counts["worker"] == 3
        assert worker_of(node, newcomer).last_listing.base == 0  # its first listing
        del sent[:]
        delta = process_tree_delta(node, shadow)
        assert sent == [consts.MSG_REQUEST], sent
        assert f"pid-{newcomer}" in shadow.rows
        assert any(t.startswith(f"pid-{newcomer}/thread-") for t in shadow.rows)
    stop(master, [*pids, newcomer])


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_the_callers_role_holds_in_the_master_and_in_every_worker(forker, role):  # noqa: F811
    """Through tree the master's part is made for the caller's role and each worker is
    asked with it. A cancel fanned out that way by a viewer is refused by each worker and
    audited by the master as a denial per worker (the master's own part still comes);
    an operator's reaches each worker's job, audited per worker."""
    master = forker("--workers")
    pids = [master.fork("fork", "loop")[0] for _ in range(2)]
    with master.connect(role=role) as node:
        with_jobs(node, pids)
        mine, _found, got = node.tree_changes((0, 0), [(node.worker(p), (0, 0)) for p in pids])
        assert mine.process.role == role
        assert all(got[p].process.role == role for p in pids), got
        jobs = {p: next(t.id for t in got[p].tasks if t.name == "worker-job") for p in pids}
        each = tuple((p, (jobs[p], "tree test", "")) for p in pids)
        reply = node._request("tree", ((), "cancel", (), tuple(pids), each, 5.0))
        header, replies, own = reply
        assert decode_envelope(own).ok and decode_envelope(header).ok
        kinds = {pid: decode_envelope(one) for pid, one in replies}
        audit = [r for r in node.audit() if r.action.startswith("cancel in worker")]
        if role == "viewer":
            assert all(e.error == "permission" for e in kinds.values()), kinds
            assert any(r.result == "denied" and r.role == "viewer" for r in audit), audit
        else:
            assert all(e.ok for e in kinds.values()), kinds
            for pid in pids:
                done = [r for r in audit if r.action == f"cancel in worker {pid}"]
                assert [(r.role, r.target, r.result) for r in done] == [
                    ("operator", jobs[pid], "ok")
                ], audit
    stop(master, pids)


HOSTILE_OWN = [
    "snapshot",
    (1, "", 0, 0, 100, 6),
    (1.5,),
    (100, 7),
    (100, "", "0"),
    (100, "", 0, 0, True),
    (100, "x" * 20_000),
    ([100],),  # by reference (a stock rpyc peer's netref: the observer sends values only)
    (None,),
]


def test_hostile_tree_arguments_are_refused_before_any_worker_is_asked(forker):  # noqa: F811
    """A malformed own part (not a tuple, too long, a float limit, a str epoch, a huge
    match, ...) or a method off the whitelist: the whole call is a bad-request (header
    and own part), no worker reply, nothing audited; the session and the echo go on."""
    master = forker("--workers")
    pid = master.fork("os", "loop")[0]
    peer = Attacker.login(master.agent, master.keys, "operator")  # stock rpyc
    with master.connect() as node:
        before = len(node.audit())
        calls = [(own, "hello", (), (), (), 5.0) for own in HOSTILE_OWN]
        calls.append(((), "worker", (), (), (), 5.0))
        calls.append(((), "cancel", (), (), (), float("nan")))
        for call in calls:
            if rpc.dumpable(call):
                reply = node._request("tree", call)
            else:  # by reference: only a stock rpyc peer sends that
                reply = stock_request(node, peer, "tree", call)
            assert type(reply) is tuple and len(reply) == 3 and reply[1] == (), (call, reply)
            for part in (reply[0], reply[2]):
                with pytest.raises(RemoteError) as caught:
                    node._open(part)
                assert caught.value.kind == "bad-request", (call, caught.value)
        assert len(node.audit()) == before
        assert node.process().pid == master.process.proc.pid
        assert echo_ok(master.echo)
    peer.rpyc().close()
    stop(master, [pid])


def test_the_masters_own_part_counts_within_the_replies_bound():
    """fan_out with a part of the caller's own (what tree's snapshot is): a worker whose
    reply does not fit with it gets too-large; one that fits comes whole."""
    own = b"m" * (fanout.MAX_REPLIES // 2)
    big = b"w" * (fanout.MAX_REPLIES // 2)
    small = b"s" * 1000
    replies = {1: small, 2: big}
    extra, got = fanout.fan_out(
        lambda pid, _left: replies[pid], [1, 2], 5.0, lambda _threads: own, weigh=len
    )
    assert extra is own
    assert dict(got)[1] == small
    error = decode_envelope(dict(got)[2])
    assert not error.ok and error.error == "too-large", error
    _extra, alone = fanout.fan_out(lambda pid, _left: replies[pid], [2], 5.0)
    assert dict(alone)[2] == big  # without the own part it fits


def test_a_frozen_worker_costs_the_tree_its_timeout_and_the_rest_comes(forker):  # noqa: F811
    """One of two workers stopped with SIGSTOP: tree_changes with a 1 s timeout answers
    in about that second with the master's part, the live worker's changes and
    'unreachable' for the frozen one; once it runs again the next tree brings it."""
    master = forker("--workers")
    pids = [master.fork("os", "loop")[0] for _ in range(2)]
    frozen, live = pids
    with master.connect() as node:
        with_jobs(node, pids)
        held = [(node.worker(pid), (0, 0)) for pid in pids]
        freeze(frozen)
        try:
            started = time.monotonic()
            mine, _found, got = node.tree_changes((0, 0), held, timeout=1.0)
            took = time.monotonic() - started
        finally:
            os.kill(frozen, signal.SIGCONT)
        assert 1.0 <= took < 2.5, took
        assert mine.process.pid == master.process.proc.pid and mine.full
        assert isinstance(got[frozen], RemoteError) and got[frozen].kind == "unreachable"
        assert isinstance(got[live], SnapshotChanges)
        _mine, _found, got = node.tree_changes(mine.cursor, held)
        assert isinstance(got[frozen], SnapshotChanges), got[frozen]
        assert echo_ok(master.echo)
    stop(master, pids)


def test_an_agent_from_before_the_tree_call_is_asked_in_two_round_trips(forker):  # noqa: F811
    """A master whose agent has no tree (--no-tree): tree_changes is refused once
    (remembered: the next refresh sends no tree), and answers the same rows with the two
    calls; the Processes tab's steady refresh works on it, in two requests."""
    master = forker("--workers", "--no-tree")
    pids = [master.fork("fork", "loop")[0] for _ in range(2)]
    with master.connect() as node:
        with_jobs(node, pids)
        two = node.changes((0, 0))
        sent = requests(node)
        mine, _found, got = node.tree_changes((0, 0), [(node.worker(p), (0, 0)) for p in pids])
        assert len(sent) == 3 and node._tree is False, sent  # tree refused, then the two
        assert rows(mine) == rows(two)
        assert all(isinstance(got[p], SnapshotChanges) for p in pids), got
        shadow = Shadow()
        process_tree_delta(node, shadow)
        del sent[:]
        delta = process_tree_delta(node, shadow)
        assert len(sent) == 2, sent
        assert delta.full is None and delta.counts["worker"] == 2
        assert all(f"pid-{p}" in shadow.rows for p in pids)
    stop(master, pids)


# ------------------------------------------------------------------ the children it describes


def test_a_child_that_execs_is_described_anew_its_secret_redacted(tmp_path):
    """A child (same pid and start time across exec) first runs sh, then execs Python
    with ``--password=<secret>`` from its environment: the description after the exec
    is the new command line, redacted, not the one the tracker redacted before."""
    secret = "Hunter2-" + os.urandom(4).hex()
    script = 'read line; exec "$PY" -c "import sys; sys.stdin.read()" --password="$SECRET"'
    child = subprocess.Popen(
        ["sh", "-c", script],
        stdin=subprocess.PIPE,
        env=dict(os.environ, PY=sys.executable, SECRET=secret),
    )
    try:
        tracker = ChildTracker(psutil.Process())
        before = wait_until(  # (just forked, it still has our command line: until sh runs)
            lambda: next(
                (c for c in tracker.collect() if c.pid == child.pid and c.cmdline[:1] == ("sh",)),
                None,
            )
        )
        assert before.cmdline[:2] == ("sh", "-c"), before
        child.stdin.write(b"go\n")
        child.stdin.flush()
        after = wait_until(
            lambda: next(
                (
                    c
                    for c in tracker.collect()
                    if c.pid == child.pid
                    and "-c" in c.cmdline[1:2]
                    and c.cmdline[0] == sys.executable
                ),
                None,
            )
        )
        assert after.create_time == before.create_time  # the same process
        assert after.cmdline[-1] == "--password=<redacted>", after.cmdline
        assert not any(secret in arg for c in tracker.collect() for arg in c.cmdline)
    finally:
        child.stdin.close()
        child.wait(10)


def test_each_descendant_is_described_with_the_parent_the_os_gives_it():
    """A child that starts a grandchild: the tracker lists both, each with the parent pid
    psutil reads for it (the walk's parent, not read again per child), status and
    create time as psutil reads them."""
    child = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys; subprocess.run(['sleep', '30'])"],
        stdin=subprocess.DEVNULL,
    )
    try:
        tracker = ChildTracker(psutil.Process())

        def both():  # type: ignore[no-untyped-def]
            found = {c.pid: c for c in tracker.collect()}
            grand = [
                c for c in found.values() if c.ppid == child.pid and c.cmdline[:1] == ("sleep",)
            ]
            return (found[child.pid], grand[0]) if child.pid in found and grand else None

        mine, grand = wait_until(both)
        assert mine.ppid == os.getpid() == psutil.Process(mine.pid).ppid()
        assert grand.ppid == psutil.Process(grand.pid).ppid() == child.pid
        assert grand.cmdline == ("sleep", "30")
        assert grand.create_time == psutil.Process(grand.pid).create_time()
    finally:
        for proc in psutil.Process(child.pid).children(recursive=True):
            proc.kill()
        child.kill()
        child.wait(10)


def test_listings_bigger_than_one_reply_come_in_chunks_after_the_tree_call(forker):  # noqa: F811
    """Asked for one row per reply: the tree call brings the master's first row and each
    worker's, the other rows come by task_chunk (the master's from its own listing, a
    worker's relayed), and the tasks are those a plain snapshot lists."""
    master = forker("--workers")
    pids = [master.fork("fork", "loop")[0] for _ in range(2)]
    host, port = master.echo.rsplit(":", 1)
    with master.connect() as node, socket.create_connection((host, int(port)), timeout=5):
        # the open echo connection: a second task in the master (its handler)
        whole = wait_until(
            lambda: {t.id for t in node.snapshot().tasks} if len(node.tasks()) >= 2 else None
        )
        with_jobs(node, pids)
        theirs = {pid: {t.id for t in node.worker(pid).snapshot().tasks} for pid in pids}
        node._tasks = TaskCache()  # a first listing: every row
        node.chunk_rows = 1
        held = [(node.worker(pid), (0, 0)) for pid in pids]
        for worker, _cursor in held:
            worker.chunk_rows = 1
        sent = requests(node)
        mine, _found, got = node.tree_changes((0, 0), held)
        chunks = node.last_listing.chunks + sum(w.last_listing.chunks - 1 for w, _c in held)
        assert node.last_listing.chunks == len(mine.tasks) >= 2, node.last_listing
        assert len(sent) == chunks, (sent, chunks)  # one tree call, then one per other chunk
        assert all(w.last_listing.chunks >= 2 for w, _c in held), [w.last_listing for w, _c in held]
        assert {t.id for t in mine.tasks} == whole
        for pid in pids:
            assert {t.id for t in got[pid].tasks} == theirs[pid]
    stop(master, pids)
