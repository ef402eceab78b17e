"""The sampling profiler against a real host (tests/hosts/profiled.py): a loop task
``hot-task`` burning CPU in ``hot_function``, a task that only sleeps, a thread waiting on a
queue. Viewers and operators drive it through the real client and CLI; the writers
(collapsed stacks, speedscope JSON) are checked on real profiles and, by property, on any.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import threading
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.collect import profiler as profiler_module
from agent.collect.profiler import MAX_RATE, MAX_SECONDS, Profiler
from agent.schema import Profile, ProfileFrame, ProfileStack
from observer import rpc
from observer.client import Node, connect
from observer.errors import RemoteError
from observer.profile_export import collapsed, fold, parse_collapsed, speedscope, top_functions
from tests.attack.raw import Attacker, stock_request
from tests.helpers import HostProcess, echo_ok, wait_until
from tests.test_cli import observer
from tests.test_forks import forker  # noqa: F401  (the fixture)


class ProfiledHost:
    def __init__(self, keys) -> None:
        self.keys = keys
        self.process = HostProcess(
            [sys.executable, "-m", "tests.hosts.profiled", str(keys.directory)]
        )
        self.address = self.process.wait_line(r"^agent: (\S+)").group(1)
        self.echo = self.process.wait_line(r"^echo: (\S+)").group(1)
        self.process.wait_line(r"^ready$")

    def connect(self, role: str = "viewer") -> Node:
        token = self.keys.operator_token if role == "operator" else self.keys.viewer_token
        return connect(self.address, token_file=token, fingerprint=self.keys.fingerprint)

    def creds(self, role: str = "viewer") -> list[str]:
        token = self.keys.operator_token if role == "operator" else self.keys.viewer_token
        return ["--token-file", str(token), "--fingerprint", self.keys.fingerprint]


@pytest.fixture(scope="module")
def profiled(keys) -> Iterator[ProfiledHost]:
    host = ProfiledHost(keys)
    yield host
    host.process.stop()


@pytest.fixture(scope="module")
def hot_profile(profiled: ProfiledHost) -> Profile:
    """One 2-second profile at 100 Hz taken by a viewer, shared by the read-only checks."""
    with profiled.connect("viewer") as node:
        return node.profile(2.0, 100.0)


def _self_share(profile: Profile, function: str, idle: bool = False) -> float:
    ranked = top_functions(profile, idle=idle, limit=1000)
    total = sum(sum(s.values()) for s in fold(profile, "merged", idle).values())
    own = sum(o for label, o, _t in ranked if label.startswith(function + " "))
    return own / max(total, 1)


def test_the_hot_function_dominates_the_profile(hot_profile: Profile, profiled: ProfiledHost):
    assert hot_profile.state == "done"
    assert 150 <= hot_profile.ticks <= 210, hot_profile.ticks  # 2 s at 100 Hz
    top = top_functions(hot_profile, idle=False, limit=1)[0]
    assert top[0].startswith("hot_function (") and "profiled.py" in top[0], top
    assert _self_share(hot_profile, "hot_function") > 0.6
    # on CPU as well: the loop thread's clock moved while it stood there
    assert _self_share(hot_profile, "hot_function", idle=False) > 0.6
    cpu_total = sum(r.cpu for r in hot_profile.stacks if not r.idle)
    assert hot_profile.cpu_known and cpu_total > 0.5 * hot_profile.ticks
    assert echo_ok(profiled.echo)


def test_per_task_split_names_the_task(hot_profile: Profile):
    groups = fold(hot_profile, "tasks", idle=False)
    hot = [g for g in groups if g.startswith("task hot-task (")]
    assert hot == ["task hot-task (hot)"], list(groups)
    names = {hot_profile.frames[i].function for stack in groups[hot[0]] for i in stack}
    assert "hot_function" in names
    # no sample of hot_function is filed under any other task or bare thread
    for group, stacks in groups.items():
        if group != hot[0]:
            for stack in stacks:
                assert "hot_function" not in {hot_profile.frames[i].function for i in stack}
    threads = fold(hot_profile, "threads")
    assert "thread waiter" in threads and "thread MainThread" in threads


def test_idle_frames_are_marked_and_hidden_when_asked(hot_profile: Profile):
    idle_rows = [r for r in hot_profile.stacks if r.idle]
    # bare names before 3.11 (no co_qualname): "wait", else "Condition.wait"
    inner = {hot_profile.frames[r.frames[-1]].function.rsplit(".", 1)[-1] for r in idle_rows}
    assert "wait" in inner  # the waiter thread, blocked on its queue
    shown = parse_collapsed(collapsed(hot_profile, "threads", idle=True))
    hidden = parse_collapsed(collapsed(hot_profile, "threads", idle=False))
    assert any(stack[0] == "thread waiter" for stack in shown)
    assert not any(stack[0] == "thread waiter" for stack in hidden)
    assert not any(
        stack[-1].split(" (")[0].rsplit(".", 1)[-1] in ("wait", "select") for stack in hidden
    )


def test_collapsed_and_speedscope_exports_of_a_real_profile(hot_profile: Profile, tmp_path):
    text = collapsed(hot_profile, "tasks")
    parsed = parse_collapsed(text)
    assert sum(parsed.values()) == sum(r.samples for r in hot_profile.stacks)
    for line in text.splitlines():  # flamegraph.pl's own pattern for a line
        stack, _, count = line.rpartition(" ")
        assert stack and count.isdigit() and "\n" not in stack
    doc = speedscope(hot_profile, "tasks", idle=False)
    _check_speedscope(doc)
    assert any(p["name"] == "task hot-task (hot)" for p in doc["profiles"])


def _check_speedscope(doc: dict) -> None:
    """The shape speedscope's file-format-schema.json requires of a sampled profile file."""
    doc = json.loads(json.dumps(doc, allow_nan=False))  # plain JSON, no NaN
    assert doc["$schema"] == "https://www.speedscope.app/file-format-schema.json"
    frames = doc["shared"]["frames"]
    assert all(isinstance(f["name"], str) for f in frames)
    assert all(set(f) <= {"name", "file", "line", "col"} for f in frames)
    assert isinstance(doc["profiles"], list)
    for prof in doc["profiles"]:
        assert prof["type"] == "sampled"
        assert prof["unit"] in ("none", "nanoseconds", "microseconds", "milliseconds", "seconds")
        assert isinstance(prof["name"], str)
        assert len(prof["samples"]) == len(prof["weights"])
        assert all(0 <= i < len(frames) for s in prof["samples"] for i in s)
        assert all(isinstance(w, (int, float)) and w >= 0 for w in prof["weights"])
        assert math.isclose(prof["endValue"] - prof["startValue"], sum(prof["weights"]))


def test_a_second_concurrent_profile_is_refused(profiled: ProfiledHost):
    with profiled.connect("viewer") as first, profiled.connect("operator") as second:
        started = first.profile_start(30.0, 50.0)
        assert started.state == "running"
        with pytest.raises(RemoteError) as refused:
            second.profile_start(1.0, 50.0)
        assert refused.value.kind == "busy"
        assert "already running" in str(refused.value)
        # another viewer may not stop it; its owner may, and an operator may
        with profiled.connect("viewer") as other, pytest.raises(RemoteError) as denied:
            other.profile_stop()
        assert denied.value.kind == "busy"
        stopped = second.profile_stop()
        assert stopped.serial == started.serial and stopped.state == "stopped"
        assert stopped.elapsed < 30
        actions = [(a.action, a.result) for a in second.audit()]
        assert ("profile start", "ok") in actions and ("profile stop", "ok") in actions
        assert ("profile start", "busy") in actions  # who was refused is on record too


def test_the_profile_stops_at_its_duration_after_the_observer_disconnects(
    profiled: ProfiledHost,
):
    node = profiled.connect("viewer")
    serial = node.profile_start(1.0, 200.0).serial
    node.close()
    with profiled.connect("viewer") as again:
        done = wait_until(lambda: (p := again.profile_read()).state != "running" and p, timeout=10)
        assert done.serial == serial and done.state == "done"
        assert 0.9 <= done.elapsed < 1.6, done.elapsed
        assert done.ticks <= 1.0 * 200 + 5
        ticks = done.ticks
        # finished means finished: no more samples come in
        wait_until(lambda: again.profile_read().ticks == ticks, timeout=5)
    assert echo_ok(profiled.echo)


def test_nothing_from_the_network_makes_it_unbounded(profiled: ProfiledHost):
    with profiled.connect("viewer") as node:
        huge = node.profile_start(1e12, 1e12)
        assert huge.seconds == MAX_SECONDS and huge.rate == MAX_RATE
        node.profile_stop()
        for seconds, rate in ((math.nan, 10.0), (1.0, math.inf), (-1.0, 10.0), (1.0, 0.0)):
            with pytest.raises(RemoteError) as bad:
                node.profile_start(seconds, rate)
            assert bad.value.kind == "bad-request"
        peer = Attacker.login(profiled.address, profiled.keys, "viewer")  # stock rpyc
        for args in (("10", 100), (10, [1]), (True, 100.0)):
            with pytest.raises(RemoteError) as bad:  # what a peer of its own could send
                if rpc.dumpable(args):
                    node._raw("profile_start", *args)
                else:  # by reference: only a stock rpyc peer sends that
                    node._open(stock_request(node, peer, "profile_start", args))
            assert bad.value.kind == "bad-request"
        peer.rpyc().close()
        assert node.profile_read().state == "stopped"  # the clamped one, nothing newer
    assert echo_ok(profiled.echo)


def test_cli_profile_writes_speedscope_and_collapsed_files(profiled: ProfiledHost, tmp_path):
    out = tmp_path / "p.speedscope.json"
    done = observer(
        "profile", profiled.address, *profiled.creds(), "--seconds", "1", "--tasks", "-o", str(out)
    )
    assert done.returncode == 0, done.stderr
    _check_speedscope(json.loads(out.read_text()))
    flame = tmp_path / "p.folded"
    done = observer(
        "profile",
        profiled.address,
        *profiled.creds(),
        "--seconds",
        "1",
        "--no-idle",
        "--format",
        "collapsed",
        "-o",
        str(flame),
    )
    assert done.returncode == 0, done.stderr
    stacks = parse_collapsed(flame.read_text())
    hot = sum(n for s, n in stacks.items() if s[-1].startswith("hot_function ("))
    assert hot > 0.6 * sum(stacks.values())
    top = observer("profile", profiled.address, *profiled.creds(), "--seconds", "0.5", "--no-idle")
    assert top.returncode == 0, top.stderr
    assert top.stdout.splitlines()[1].split()[2].startswith("hot_function")


def test_caps_bound_rows_and_frames_in_process(monkeypatch):
    """Distinct rows beyond the cap are counted as dropped, not kept; the frame table and
    stack depth stay capped too (this test process's own threads are the sample)."""
    monkeypatch.setattr(profiler_module, "MAX_ROWS", 3)
    monkeypatch.setattr(profiler_module, "MAX_FRAMES", 6)
    monkeypatch.setattr(profiler_module, "MAX_DEPTH", 4)
    stop = threading.Event()

    def deep(n: int) -> None:
        if n:
            deep(n - 1)
        else:
            stop.wait(10)

    threads = [threading.Thread(target=deep, args=(i + 5,), daemon=True) for i in range(6)]
    for t in threads:
        t.start()
    prof = Profiler(lambda: [])
    try:
        prof.start(0.3, 200.0)
        result = wait_until(lambda: (p := prof.read()).state == "done" and p, timeout=10)
    finally:
        stop.set()
    assert len(result.stacks) <= 3
    assert result.dropped > 0
    assert len(result.frames) <= 6 + 2
    assert all(len(s.frames) <= 4 + 1 for s in result.stacks)
    labels = {f.function for f in result.frames}
    assert "(truncated)" in labels
    for t in threads:
        t.join(5)


def hot_function(stop: threading.Event) -> int:
    """Burns CPU in Python until ``stop``: the function a profile must put on top."""
    n = 0
    while not stop.is_set():
        for i in range(2000):
            n += i * i
    return n


def test_idle_threads_are_counted_every_round_and_the_hot_one_tops(monkeypatch):
    """Twenty threads parked 15 calls deep (their stacks never change, so the sampler
    reuses their stacks) and one thread in a hot loop: every thread is counted exactly
    once a round, each idle one under the one stack it stands in (marked idle, never on
    CPU), and the hot function tops the profile by wall and by CPU samples."""
    stop = threading.Event()
    parked = threading.Barrier(21)

    def deep(n: int) -> None:
        if n:
            deep(n - 1)
        else:
            parked.wait()
            stop.wait(30)

    idle = [
        threading.Thread(target=deep, args=(15,), name=f"parked-{i}", daemon=True)
        for i in range(20)
    ]
    hot = threading.Thread(target=hot_function, args=(stop,), name="hot", daemon=True)
    for t in [*idle, hot]:
        t.start()
    parked.wait()

    def standing(t: threading.Thread) -> bool:  # in stop.wait, called from deep()
        f = sys._current_frames().get(t.ident)
        return f is not None and f.f_back is not None and f.f_back.f_back.f_code is deep.__code__

    wait_until(lambda: all(standing(t) for t in idle), message="idle threads parked")
    prof = Profiler(lambda: [])
    try:
        prof.start(1.0, 200.0)
        result = wait_until(lambda: (p := prof.read()).state == "done" and p, timeout=20)
    finally:
        stop.set()
    for t in [*idle, hot]:
        t.join(5)
    assert result.ticks > 20 and result.dropped == 0
    by_thread: dict[str, list[ProfileStack]] = {}
    for row in result.stacks:
        by_thread.setdefault(row.thread, []).append(row)
    for t in idle:
        rows = by_thread[t.name]
        assert len(rows) == 1, rows  # one stack, counted every round
        assert rows[0].samples == result.ticks and rows[0].cpu == 0 and rows[0].idle
        functions = [result.frames[i].function for i in rows[0].frames]
        assert sum(f.rsplit(".", 1)[-1] == "deep" for f in functions) == 16  # 3.10: no qualname
        assert functions[-1].endswith("wait")
    assert sum(r.samples for r in by_thread["hot"]) == result.ticks
    mine = {t.name for t in [*idle, hot]}  # not the test runner's own threads
    ours = dataclasses.replace(result, stacks=tuple(r for r in result.stacks if r.thread in mine))
    for cpu in (False, True):
        top = top_functions(ours, idle=False, cpu=cpu)
        assert top[0][0].startswith("hot_function"), top[:3]


def test_a_parked_thread_that_wakes_is_on_cpu_and_a_renamed_one_moves_rows():
    """Threads parked in a known wait are counted without reading their CPU clocks; that
    must not blind the sampler: a parked thread that wakes into a hot loop is counted on
    CPU there, and a parked thread renamed meanwhile is counted under its new name."""
    go, stop = threading.Event(), threading.Event()

    def sleeper_then_hot() -> None:
        go.wait(30)
        hot_function(stop)

    waker = threading.Thread(target=sleeper_then_hot, name="waker", daemon=True)
    renamed = threading.Thread(target=stop.wait, args=(30,), name="before", daemon=True)
    for t in (waker, renamed):
        t.start()
    prof = Profiler(lambda: [])
    try:
        prof.start(10.0, 200.0)
        wait_until(lambda: prof.read().ticks >= 20, timeout=10)
        go.set()
        renamed.name = "after"
        parked = prof.read()

        def hot_samples(p: Profile) -> int:
            return sum(
                r.cpu
                for r in p.stacks
                if r.thread == "waker"
                and any("hot_function" in p.frames[i].function for i in r.frames)
            )

        wait_until(lambda: hot_samples(prof.read()) >= 20, timeout=10, message="hot on CPU")
        wait_until(
            lambda: any(r.thread == "after" for r in prof.read().stacks),
            timeout=5,
            message="samples under the new name",
        )
        result = prof.stop()
    finally:
        stop.set()
        go.set()
    for t in (waker, renamed):
        t.join(5)
    waiting = [r for r in parked.stacks if r.thread == "waker"]
    assert waiting and all(r.cpu == 0 for r in waiting), waiting  # parked: never on CPU
    hot = [r for r in result.stacks if r.thread == "waker" and r.cpu]
    assert sum(r.cpu for r in hot) >= 20
    before = sum(r.samples for r in result.stacks if r.thread == "before")
    after = sum(r.samples for r in result.stacks if r.thread == "after")
    assert before >= 20 and after >= 1


def test_the_sampler_lets_go_of_a_thread_s_frames_at_the_next_round():
    """A thread's innermost frame is remembered from one round to the next only: once
    the thread has moved on, what its old frames held is freed within a round or two
    (while the profile still runs), not at the end of the profile."""
    import weakref

    class Held:
        pass

    ready, go, done = threading.Event(), threading.Event(), threading.Event()
    refs: list[weakref.ref] = []

    def holder() -> None:
        held = Held()
        refs.append(weakref.ref(held))
        ready.set()
        go.wait(30)  # returns with ``held`` still in this frame's locals

    def thread() -> None:
        holder()
        done.wait(30)

    t = threading.Thread(target=thread, name="holder", daemon=True)
    t.start()
    ready.wait(10)
    prof = Profiler(lambda: [])
    try:
        prof.start(10.0, 100.0)
        wait_until(lambda: prof.read().ticks >= 3, timeout=10)
        go.set()
        wait_until(lambda: refs[0]() is None, timeout=5, message="the old frame let go of")
        assert prof.running
    finally:
        done.set()
        prof.stop()
        t.join(5)


# ---------------------------------------------------------------- writers, by property

_text = st.text(min_size=0, max_size=12)
_frames = st.lists(
    st.builds(ProfileFrame, _text, _text, st.integers(0, 10_000)), min_size=1, max_size=8
)


@st.composite
def profiles(draw) -> Profile:
    frames = tuple(draw(_frames))
    index = st.integers(0, len(frames) - 1)
    rows = draw(
        st.lists(
            st.builds(
                ProfileStack,
                st.lists(index, min_size=0, max_size=6).map(tuple),
                _text,
                _text,
                st.integers(0, 1000),
                st.integers(0, 1000),
                st.booleans(),
            ),
            max_size=10,
        )
    )
    rows = [
        ProfileStack(r.frames, r.thread, r.task, r.samples, min(r.cpu, r.samples), r.idle)
        for r in rows
    ]
    rate = draw(st.floats(1.0, 1000.0))
    return Profile(1, "done", 0.0, 1.0, rate, 1.0, 1, 0, "", True, frames, tuple(rows))


@settings(max_examples=200, deadline=None)
@given(profiles(), st.sampled_from(("merged", "threads", "tasks")), st.booleans(), st.booleans())
def test_writers_keep_every_sample_and_stay_parseable(profile, split, idle, cpu):
    kept = [
        (r.cpu if cpu else r.samples)
        for r in profile.stacks
        if (idle or not r.idle) and (r.frames or split != "merged")
    ]
    text = collapsed(profile, split, idle, cpu)
    parsed = parse_collapsed(text)
    assert sum(parsed.values()) == sum(kept)
    assert all(n > 0 for n in parsed.values())
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        assert count.isdigit() and "\n" not in stack and "\r" not in stack
    doc = speedscope(profile, split, idle, cpu)
    _check_speedscope(doc)
    every = sum(r.cpu if cpu else r.samples for r in profile.stacks if idle or not r.idle)
    weights = sum(sum(p["weights"]) for p in doc["profiles"])
    assert math.isclose(weights, every / profile.rate, rel_tol=1e-9, abs_tol=1e-9)
    json.dumps(doc, allow_nan=False)


def test_an_idle_profiler_costs_nothing():
    """No thread runs before a profile starts, and none after it ends."""
    before = {t.name for t in threading.enumerate()}
    prof = Profiler(lambda: [])
    assert not prof.running and "observer-agent-profiler" not in before
    prof.start(0.2, 50.0)
    wait_until(lambda: not prof.running, timeout=10)
    assert "observer-agent-profiler" not in {t.name for t in threading.enumerate()}


def test_a_worker_is_profiled_through_its_master(forker):  # noqa: F811
    """A viewer profiles a forked worker through the master's port: the worker's own
    profiler samples the worker; the master's stays untouched."""
    import os
    import signal

    master = forker("--workers")
    pid, said = master.fork("os", "term")
    assert said["running"] == "True", said
    with master.connect(role="viewer") as viewer:
        worker = viewer.worker(pid)
        profile = worker.profile(0.5, 100.0)
        assert profile.state == "done" and profile.ticks > 0
        assert profile.stacks and profile.owner.startswith("viewer@")
        with pytest.raises(RemoteError, match="no profile"):
            viewer.profile_read()  # the master's profiler never ran
    os.kill(pid, signal.SIGTERM)
    assert master.reap(pid) == -15
