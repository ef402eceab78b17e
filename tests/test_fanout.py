"""One call to every worker at once (agent.fanout) and how each worker ended (agent.exits).

A real master (tests/hosts/forker.py) forks real workers; the tests drive it through the
real client and CLI over TLS: a frozen worker, one killed in the middle of a call, hostile
arguments, and workers killed by SIGKILL / SIGTERM / ending with exit(3) under a master
that reaps them itself (the forker's reap, a multiprocessing Pool that replaces them).
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import compat, fanout
from agent.codec import from_wire
from agent.errors import BadRequest
from agent.schema import Hello, Snapshot, SnapshotUpdate
from observer import rpc
from observer.client import FANOUT_TIMEOUT
from observer.errors import RemoteError
from tests.attack.raw import Attacker, stock_request
from tests.helpers import echo_ok, freeze, wait_until
from tests.test_forks import forker  # noqa: F401  (the fixture)
from tests.test_workers import _kill_descendants, _started, observer_cli


def fanout_threads(node) -> int:
    """The master's fan-out threads alive now."""
    return sum(t.name == "observer-agent-fanout" for t in node.threads())


def test_one_round_trip_brings_every_workers_snapshot_and_a_frozen_one_costs_its_timeout(
    forker,  # noqa: F811
):
    """Three workers; one stopped with SIGSTOP. One fan-out call brings the two live
    workers' snapshots (each its own pid, its worker-job task) and, for the frozen one,
    'unreachable' once the 1 s timeout is spent, not the observer's 10 s; asked again
    and again while it is frozen, the master's fan-out threads end with their calls
    (no pile-up), and once it runs again it answers in the next fan-out."""
    master = forker("--workers")
    pids = [master.fork("os", "loop")[0] for _ in range(3)]
    frozen = pids[0]
    with master.connect() as node:
        wait_until(lambda: {w.pid for w in node.worker_set().workers} >= set(pids))
        freeze(frozen)
        try:
            for _ in range(3):
                started = time.monotonic()
                _found, replies = node.fan_out("snapshot", 1000, "", 0, 0, 100, timeout=1.0)
                took = time.monotonic() - started
                assert 1.0 <= took < 1.0 + 1.5, took
                assert set(replies) == set(pids), replies.keys()
                assert isinstance(replies[frozen], RemoteError), replies[frozen]
                assert replies[frozen].kind == "unreachable", replies[frozen]
                for pid in pids[1:]:
                    assert from_wire(SnapshotUpdate, replies[pid]).process.pid == pid
            wait_until(lambda: fanout_threads(node) == 0, timeout=5)
            assert echo_ok(master.echo)
        finally:
            os.kill(frozen, signal.SIGCONT)
        _found, snaps = node.worker_snapshots([node.worker(pid) for pid in pids], limit=100)
        for pid in pids:
            assert isinstance(snaps[pid], Snapshot), snaps[pid]
            assert snaps[pid].process.pid == pid
            assert any(t.name == "worker-job" for t in snaps[pid].tasks)
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
        assert master.reap(pid) == -15


def test_a_worker_killed_in_the_middle_of_a_call_fails_alone_and_is_not_reaped_by_the_agent(
    forker,  # noqa: F811
):
    """A frozen worker holds a fan-out; SIGKILL it while the call waits: its reply is an
    error at once (its link closed), well before the 5 s timeout, the other worker's
    snapshot comes back, the master itself reaps the dead worker (-9: the agent did not),
    and the master's worker set says how it ended."""
    master = forker("--workers")
    victim, other = (master.fork("os", "loop")[0] for _ in range(2))
    with master.connect() as node, master.connect() as watcher:
        wait_until(lambda: {w.pid for w in node.worker_set().workers} >= {victim, other})
        node.worker(victim).hello()  # its link is open: the fan-out waits on it
        freeze(victim)
        out: dict = {}
        call = threading.Thread(
            target=lambda: out.update(
                reply=node.fan_out("hello", pids=[victim, other], timeout=5.0),
                took=time.monotonic() - started,
            )
        )
        started = time.monotonic()
        call.start()
        # under way: the frozen worker holds a fan-out thread of the master; kill it then
        wait_until(lambda: fanout_threads(watcher) >= 1, timeout=4)
        os.kill(victim, signal.SIGKILL)
        call.join(10)
        _found, replies = out["reply"]
        assert out["took"] < 4.0, out["took"]
        assert isinstance(replies[victim], RemoteError), replies[victim]
        assert replies[victim].kind in ("unreachable", "not-found"), replies[victim]
        assert from_wire(Hello, replies[other]).pid == other
        assert master.reap(victim) == -9
        gone = wait_until(
            lambda: next((e for e in node.worker_set().exits if e.pid == victim), None)
        )
        assert gone.how == "signal 9" and gone.signal == 9 and gone.code is None, gone
    os.kill(other, signal.SIGTERM)
    assert master.reap(other) == -15


def test_a_dead_worker_not_yet_reaped_is_not_asked(forker):  # noqa: F811
    """A worker killed that its master has not reaped yet is a zombie: it still has its
    agent's registry entry, but runs nothing. The master lists it as a zombie with no
    agent, does not ask it (it is not an ``unreachable`` worker in every refresh), says
    how it ended, and the other worker answers as before."""
    master = forker("--workers")
    victim, other = (master.fork("os", "loop")[0] for _ in range(2))
    with master.connect() as node:
        wait_until(lambda: {w.pid for w in node.worker_set().workers} >= {victim, other})
        os.kill(victim, signal.SIGKILL)
        wait_until(
            lambda: any(c.pid == victim and c.status == "zombie" for c in node.children()),
            message="the victim a zombie",
        )
        zombie = next(c for c in node.children() if c.pid == victim)
        assert not zombie.agent, zombie
        found, replies = node.fan_out("hello")
        assert victim not in replies and victim not in {w.pid for w in found.workers}
        assert from_wire(Hello, replies[other]).pid == other
        gone = wait_until(
            lambda: next((e for e in node.worker_set().exits if e.pid == victim), None)
        )
        assert gone.how == "signal 9", gone
    assert master.reap(victim) == -9
    os.kill(other, signal.SIGTERM)
    assert master.reap(other) == -15


def syscall_files(pid: int) -> int:
    """How many descriptors of process ``pid`` read one of its threads' syscall files."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            count += os.readlink(fd).endswith("/syscall")
        except OSError:
            continue
    return count


def test_a_worker_forked_after_others_holds_none_of_the_masters_pidfds(forker):  # noqa: F811
    """The master's exit watch holds a pidfd per worker, its stall catcher a syscall file
    per loop thread; a worker forked once two others are watched starts with none of them
    (it watches nothing of its master's), and its own death is still seen by the master."""
    master = forker("--workers")
    first = [master.fork("os", "loop")[0] for _ in range(2)]
    with master.connect() as node:
        wait_until(lambda: {w.pid for w in node.worker_set().workers} >= set(first))
        master_pid = node.process().pid
        if compat.thread_syscall_file(threading.get_native_id()) is not None:
            # the master's catcher watches its echo loop (a snapshot makes it known)
            wait_until(
                lambda: node.snapshot().loops and syscall_files(master_pid) >= 1,
                message="the master's stall catcher reading its loop thread's syscall file",
            )
        pid, said = master.fork("os", "kill")
        assert said["pidfds"] == "0", said
        assert said["parent-syscall-files"] == "0", said
        wait_until(lambda: pid in {w.pid for w in node.worker_set().workers})
        os.kill(pid, signal.SIGKILL)
        assert master.reap(pid) == -9
        gone = wait_until(lambda: next((e for e in node.worker_set().exits if e.pid == pid), None))
        assert gone.how == "signal 9", gone
    for pid in first:
        os.kill(pid, signal.SIGTERM)
        assert master.reap(pid) == -15


HOSTILE = [
    ("worker", (), (), (), 1.0),  # the relay itself is not relayed
    ("workers", (), (), (), 1.0),
    ("chaos", ("run", "start"), (), (), 1.0),
    ("__class__", (), (), (), 1.0),
    ("hello", (), tuple(range(1, 40)), (), 1.0),  # more pids than a fan-out asks
    ("hello", (), (True,), (), 1.0),  # a bool is no pid
    ("hello", (), (-5,), (), 1.0),
    ("hello", (), ("1",), (), 1.0),
    ("hello", (("x",) * 100,), (), (), 1.0),  # a tuple argument too long
    ("hello", ("x" * 20_000,), (), (), 1.0),  # an argument too long
    ("hello", ({},), (), (), 1.0),  # a dict: a reference to the caller's, never taken
    ("hello", (), (), ((1,),), 1.0),  # each: pairs only
    ("hello", (), (), ((1, ("a",) * 9),), 1.0),  # too many args for one worker
    ("hello", (), (), (), float("nan")),
    ("hello", (), (), (), float("inf")),
    ("hello", (), (), (), "1"),
]


def test_hostile_fanout_arguments_are_refused_before_any_worker_is_asked(forker):  # noqa: F811
    """Each malformed fan-out (a method off the whitelist, too many or odd pids, long or
    nested arguments, a NaN timeout, ...) is answered with a bad-request error and no
    worker reply; the master's session, its audit and its echo server go on."""
    master = forker("--workers")
    pid = master.fork("os", "loop")[0]
    peer = Attacker.login(master.agent, master.keys, "operator")  # stock rpyc
    with master.connect() as node:
        before = len(node.audit())
        for call in HOSTILE:
            if rpc.dumpable(call):
                reply = node._request("workers", call)
            else:  # by reference: only a stock rpyc peer sends that
                reply = stock_request(node, peer, "workers", call)
            assert type(reply) is tuple and reply[1] == (), (call, reply)
            with pytest.raises(RemoteError) as caught:
                node._open(reply[0])
            assert caught.value.kind == "bad-request", (call, caught.value)
        assert node.process().pid == master.process.proc.pid
        assert len(node.audit()) == before  # nothing reached a worker: nothing to audit
        assert echo_ok(master.echo)
    peer.rpyc().close()
    os.kill(pid, signal.SIGTERM)
    assert master.reap(pid) == -15


def test_fanned_out_actions_keep_the_callers_role_and_are_audited_per_worker(forker):  # noqa: F811
    """A viewer's cancel fanned out to two workers: each worker refuses it (permission),
    the master audits a denial per worker; an operator's reaches both, each cancelled
    job is said by its worker and audited by the master, naming the worker."""
    master = forker("--workers")
    pids = [master.fork("os", "loop")[0] for _ in range(2)]
    with master.connect() as node, master.connect(role="viewer") as viewer:

        def with_jobs() -> dict | None:
            got = node.worker_snapshots()[1]
            ready = set(got) >= set(pids) and all(
                isinstance(got[p], Snapshot) and any(t.name == "worker-job" for t in got[p].tasks)
                for p in pids
            )
            return got if ready else None

        snaps = wait_until(with_jobs)
        jobs = {p: next(t.id for t in snaps[p].tasks if t.name == "worker-job") for p in pids}
        each = {p: (jobs[p], "fan-out test", "") for p in pids}
        _found, denied = viewer.fan_out("cancel", pids=pids, each=each)
        assert all(isinstance(r, RemoteError) and r.kind == "permission" for r in denied.values())
        mark = master.process.mark()
        _found, done = node.fan_out("cancel", pids=pids, each=each)
        for pid in pids:
            assert not isinstance(done[pid], Exception), done[pid]
            master.process.wait_line(rf"^event: child {pid} job cancelled", start=mark)
        records = [r for r in node.audit() if r.action.startswith("cancel in worker")]
        assert any(r.result == "denied" and r.role == "viewer" for r in records), records
        for pid in pids:  # (a peer's denials are folded per kind: one record may say both)
            mine = [
                r for r in records if r.action == f"cancel in worker {pid}" and r.result == "ok"
            ]
            assert [(r.role, r.target) for r in mine] == [("operator", jobs[pid])], records
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
        assert master.reap(pid) == -15


def test_how_each_worker_ended_is_shown_after_the_master_reaped_it(forker, keys):  # noqa: F811
    """Three os.fork workers: one SIGKILLed, one SIGTERMed, one ending with exit(3); the
    master reaps each itself (its waitpid sees -9, -15 and 3: the agent reaped none), and
    the client's worker set, `observer tree` and `observer ps --process all` say exactly
    how each ended; nobody replaced them."""
    master = forker("--workers")
    killed, termed, coded = (master.fork("os", how)[0] for how in ("kill", "term", "code3"))
    pids = {killed: "signal 9", termed: "signal 15", coded: "exit 3"}
    with master.connect() as node:
        wait_until(lambda: {w.pid for w in node.worker_set().workers} >= set(pids))
        os.kill(killed, signal.SIGKILL)
        os.kill(termed, signal.SIGTERM)
        os.kill(coded, signal.SIGUSR1)
        assert [master.reap(p) for p in pids] == [-9, -15, 3]

        def ended() -> dict | None:
            seen = {e.pid: e for e in node.worker_set().exits}
            return seen if set(pids) <= set(seen) else None

        seen = wait_until(ended)
        for pid, how in pids.items():
            assert seen[pid].how == how and seen[pid].replaced_by == 0, seen[pid]
        assert (seen[killed].signal, seen[termed].signal, seen[coded].code) == (9, 15, 3)
    creds = ["--token-file", str(keys.operator_token), "--fingerprint", keys.fingerprint]
    tree = observer_cli("tree", master.agent, *creds).stdout
    listing = observer_cli("ps", master.agent, *creds, "--process", "all").stdout
    for pid, how in pids.items():
        assert re.search(rf"\(pid-{pid}\)  exited \({how}\)\n", tree + "\n"), tree
        assert re.search(rf"worker pid {pid} \(\S+\) exited \({how}\)$", listing, re.M), listing


def test_a_pool_worker_killed_is_shown_replaced_by_the_pools_new_worker(forker):  # noqa: F811
    """A multiprocessing Pool in the master reaps and replaces a SIGKILLed worker on its
    own: the worker set says 'signal 9' and names the new ForkPoolWorker's pid, which is
    one of the workers listed now and none of the old ones."""
    master = forker("--workers")
    try:
        pids = _started(master, "pool fork 2")
        with master.connect(role="viewer") as node:
            wait_until(lambda: {w.pid for w in node.worker_set().workers} >= set(pids))
            os.kill(pids[0], signal.SIGKILL)

            def replaced():  # and the replacement is up: its agent listed, the Pool's name
                found = node.worker_set()
                gone = next((e for e in found.exits if e.pid == pids[0]), None)
                live = {w.pid: w.name for w in found.workers}
                if gone is None or not live.get(gone.replaced_by, "").startswith("ForkPool"):
                    return None
                return gone, found

            gone, found = wait_until(replaced)
            assert gone.how == "signal 9" and re.fullmatch(r"ForkPoolWorker-\d+", gone.name)
            live = {w.pid: w for w in found.workers}
            assert gone.replaced_by in live and gone.replaced_by not in pids, (gone, live)
            assert re.fullmatch(r"ForkPoolWorker-\d+", live[gone.replaced_by].name)
    finally:
        _kill_descendants(master)


# ------------------------------------------------------------------ argument checks


values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**40), max_value=2**40)
    | st.floats(allow_nan=True)
    | st.text(max_size=30),
    lambda inner: st.tuples(inner) | st.tuples(inner, inner) | st.lists(inner, max_size=3),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(pids=values, each=values, timeout=values)
def test_fanout_argument_checks_accept_only_what_they_say(pids, each, timeout):
    """Whatever a peer sends as pids, each and timeout, the checks either return the
    bounded, typed values the fan-out runs with or refuse with BadRequest: nothing else
    escapes, and nothing out of bounds gets through."""
    try:
        asked = fanout.check_pids(pids)
    except BadRequest:
        pass
    else:
        assert len(asked) <= fanout.MAX_WORKERS
        assert all(type(p) is int and 0 < p < 1 << 31 for p in asked)
    try:
        per = fanout.check_each(each)
    except BadRequest:
        pass
    else:
        assert len(per) <= fanout.MAX_WORKERS and all(type(a) is tuple for a in per.values())
    try:
        seconds = fanout.check_timeout(timeout)
    except BadRequest:
        pass
    else:
        assert math.isfinite(seconds) and fanout.MIN_TIMEOUT <= seconds <= 6.0
    assert FANOUT_TIMEOUT <= 6.0


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_child_forked_while_the_exit_watch_holds_its_lock_lets_go_of_it_at_once():
    """The watch's thread holds its lock while it looks for workers; a fork at that
    moment copies the lock held. The child's clean-up (ExitWatch.abandon, run by the
    agent's fork handler) must not wait for it: the child ends at once (it hung before)."""
    from agent.exits import ExitWatch

    watch = ExitWatch()
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with watch._lock:
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    held.wait(5)
    try:
        pid = os.fork()
        if pid == 0:  # the child: abandon, then exit; a hang here is the bug
            try:
                watch.abandon()
            finally:
                os._exit(0)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            threading.Event().wait(0.05)
        else:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the child hung in ExitWatch.abandon()")
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        release.set()
        holder.join(5)
        watch.stop()


RELAY_CLOSE_TRIALS = 20


def test_a_relay_closed_under_a_waiting_call_wakes_it_and_the_call_closes_the_link(
    forker,  # noqa: F811
):
    """A session ends (or a master's metrics endpoint lets a worker's link go) while a
    relayed call waits on a frozen worker: the close hangs the link up and the waiting
    call, woken at once, closes it itself. The descriptor is never closed under the
    call's read, where OpenSSL, which keeps the number, could read the next file the
    host opens as a TLS record. Every trial: the call ends as unreachable at once (before,
    some raised rpyc's RuntimeError, and the rest logged in again to the frozen worker
    and waited out the 4 s login), the host's files opened right after are untouched,
    and no link is left open."""
    master = forker("--workers")
    pid, _ = master.fork("os", "idle")
    mark = master.process.mark()
    master.process.send(f"relay-close {pid} {RELAY_CLOSE_TRIALS}")
    said = master.process.wait_line(r"^event: relay-close (.*)", start=mark, timeout=120)
    trials = json.loads(said.group(1))
    assert trials["ended"] == ["unreachable"] * RELAY_CLOSE_TRIALS, trials
    assert max(trials["seconds"]) < 2, trials  # woken: not its 6 s, nor a 4 s login
    assert trials["misread"] == 0 and trials["left_open"] == 0, trials
    assert echo_ok(master.echo)
    os.kill(pid, signal.SIGTERM)
    assert master.reap(pid) == -15
