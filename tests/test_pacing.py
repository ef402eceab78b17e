"""A pass hands the GIL over between slices, and stays away longer while the host's
threads are busy (agent/collect/pacing.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.collect import pacing

# the spinner "ran through" a hand-over when its CPU clock moved this share of the
# hand-over's time: well over pacing.BUSY_SHARE, since the pass judges only the short
# sleep at the hand-over's start (all of a hand-over that does not back off)
HOST_RAN = 0.8


BUSY_HAND_OVERS = 10  # hand-overs during which the host thread ran that the test needs
MAX_HAND_OVERS = 2000  # at most this many tried for them (a loaded box starves the host thread)


def test_a_busy_host_thread_makes_the_pass_stay_away_longer() -> None:
    """A hand-over during which a host thread spinning in Python kept the CPU lasts at
    least the back-off (sleep never ends early) and leaves the next slice at its
    shortest. Whether the spinner ran is read from its own CPU clock: on a loaded box the
    kernel may leave it off the CPU, and a hand-over then rightly finds the host idle."""
    stop = threading.Event()
    spinning = threading.Event()

    def spin() -> None:
        spinning.set()
        while not stop.is_set():
            sum(range(100))

    thread = threading.Thread(target=spin, name="host-busy", daemon=True)
    thread.start()
    busy: list[tuple[float, float]] = []  # (lasted, next slice) of each one it ran through
    try:
        assert spinning.wait(10)
        assert thread.ident is not None
        spinner = time.pthread_getcpuclockid(thread.ident)
        for _ in range(MAX_HAND_OVERS):
            cpu, started = time.clock_gettime(spinner), time.perf_counter()
            ends = pacing.hand_over()
            now = time.perf_counter()
            if time.clock_gettime(spinner) - cpu > HOST_RAN * (now - started):
                busy.append((now - started, ends - now))
                if len(busy) == BUSY_HAND_OVERS:
                    break
    finally:
        stop.set()
        thread.join(10)
    assert len(busy) == BUSY_HAND_OVERS, "the host thread never kept the CPU"
    assert all(lasted >= pacing.BACKOFF * pacing.SLICE_SECONDS for lasted, _ in busy), busy
    assert all(next_slice <= pacing.SLICE_SECONDS for _, next_slice in busy), busy


GROW_TRIES = 200  # hand-overs a test allows for the slices to grow (4 on a quiet box)


def _slices_grow() -> bool:
    """Whether a next slice beyond half of SLICE_MAX comes within GROW_TRIES hand-overs.
    It takes several unhindered hand-overs in a row; on a loaded box other processes keep
    some sleeps late, which the pass rightly reads as a host that kept it waiting."""
    for _ in range(GROW_TRIES):
        ends = pacing.hand_over()
        if ends - time.perf_counter() > pacing.SLICE_MAX / 2:
            return True
    return False


def test_a_host_that_goes_quiet_gets_long_slices_back() -> None:
    """Once the host's threads stop, hand-overs find it idle again (each busy one naps
    the whole back-off without a short look first) and the slices grow: the busy state
    does not stick."""
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            sum(range(100))

    thread = threading.Thread(target=spin, name="host-busy", daemon=True)
    thread.start()
    try:
        for _ in range(20):
            pacing.hand_over()
    finally:
        stop.set()
        thread.join(10)
    assert _slices_grow(), "the slices never grew back after the host went quiet"


def test_every_step_of_a_request_continues_the_thread_s_slice() -> None:
    """slice_end answers the end of the slice the thread's last hand-over began, however
    many steps ask: none starts a slice of its own. A thread that never handed over has
    spent its slice (it hands over at its first check)."""
    ends = pacing.hand_over()
    assert pacing.slice_end() == ends
    time.sleep(2 * pacing.SLICE_MAX)
    assert pacing.slice_end() == ends < time.perf_counter()
    fresh: list[float] = []
    thread = threading.Thread(target=lambda: fresh.append(pacing.slice_end()))
    thread.start()
    thread.join(10)
    assert fresh[0] < time.perf_counter()


def test_an_idle_host_lets_the_slices_grow() -> None:
    """With no other thread wanting the CPU, each unhindered hand-over doubles the next
    slice, up to SLICE_MAX."""
    assert _slices_grow(), "the slices never grew on an idle host"


def test_the_hand_over_says_when_the_next_slice_ends() -> None:
    """Within the bound a host thread may be kept waiting: at most SLICE_MAX ahead."""
    ends = pacing.hand_over()
    now = time.perf_counter()
    assert now < ends <= now + pacing.SLICE_MAX
    assert pacing.slice_end() <= time.perf_counter() + pacing.SLICE_MAX


def test_a_pause_point_hands_over_once_the_slice_is_spent() -> None:
    """A thread that never handed over has spent its slice: its first pause point sleeps
    (sleep never ends early), and leaves the next slice's end ahead of it."""
    took: list[float] = []

    def first_pause() -> None:
        started = time.perf_counter()
        pacing.pause_point()
        took.append(time.perf_counter() - started)
        took.append(pacing._held.ends - time.perf_counter())

    thread = threading.Thread(target=first_pause)
    thread.start()
    thread.join(10)
    assert took[0] >= pacing.YIELD
    assert 0 < took[1] <= pacing.SLICE_MAX


def test_one_crowded_hand_over_only_shortens_the_slice_two_back_off() -> None:
    """An idle host's loop catching up on a timer runs through a whole short hand-over:
    that alone is no reason to stay away 2 ms twice. Being kept from the GIL is at once;
    the host's CPU clock at two hand-overs in a row (or while already busy) too."""
    nap, away = pacing.YIELD, 2 * pacing.YIELD
    all_of_it, a_little = away, 0.1 * away
    assert pacing.judge(nap, away, all_of_it, False, False) == (False, True)
    assert pacing.judge(nap, away, all_of_it, False, True) == (True, True)
    assert pacing.judge(nap, away, all_of_it, True, False) == (True, True)
    assert pacing.judge(nap, away, a_little, False, True) == (False, False)
    assert pacing.judge(nap, away, a_little, True, True) == (False, False)
    kept = nap + 2 * pacing.KEPT
    assert pacing.judge(nap, kept, 0.0, False, False) == (True, False)


@settings(max_examples=300, deadline=None)
@given(
    nap=st.floats(1e-6, 0.01),
    away=st.floats(1e-6, 0.05),
    used=st.floats(0.0, 0.1),
    was_busy=st.booleans(),
    was_crowded=st.booleans(),
)
def test_the_judgement_backs_off_only_on_evidence(
    nap: float, away: float, used: float, was_busy: bool, was_crowded: bool
) -> None:
    """Busy needs being kept or a crowded clock seen before: never one crowded look
    alone, and a host kept waiting is always busy whatever its clock said."""
    busy, crowded = pacing.judge(nap, away, used, was_busy, was_crowded)
    assert crowded == (used > pacing.BUSY_SHARE * away)
    if away > nap + pacing.KEPT:
        assert busy
    elif not (was_busy or was_crowded):
        assert not busy
    else:
        assert busy == crowded


# The runs tests' scripts begin so, and end printing ``found`` as JSON.
PREAMBLE = r"""
import json, time
from agent.collect import pacing

def spend_cpu(seconds):
    until = time.thread_time() + seconds  # this thread's own clock: load cannot shorten it
    while time.thread_time() < until:
        sum(range(100))

found = {}
"""


def _in_a_fresh_interpreter(body: str) -> tuple[dict[str, Any], list[str]]:
    """``found`` of PREAMBLE + ``body`` run in a fresh interpreter (the counters are the
    process's: another test's agent thread handing over here would add runs), and the
    script's lines (a run names the lines its hand-overs were asked for on)."""
    script = PREAMBLE + body + "print(json.dumps(found))\n"
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), script.splitlines()


RUNS_SCRIPT = r"""
pacing.hand_over()
found["none"] = pacing.run_lengths()
spend_cpu(0.003)
pacing.hand_over()
found["one"] = pacing.run_lengths()
for _ in range(5):
    pacing.hand_over()
found["short"] = pacing.run_lengths(reset=True)
found["reset"] = pacing.run_lengths()
"""


def test_the_cpu_run_between_two_hand_overs_is_counted() -> None:
    """A thread that works 3 ms of CPU between two hand-overs shows as a run of at least
    3 ms, counted over 0.5, 1 and 2 ms and not over 5; back-to-back hand-overs add short
    runs only; a reset read empties the counters. A thread's first hand-over has no run
    before it."""
    found, lines = _in_a_fresh_interpreter(RUNS_SCRIPT)
    assert found["none"]["runs"] == 0
    one = found["one"]
    assert one["runs"] == 1
    assert 3.0 <= one["longest_ms"] == one["cpu_ms"] < 50.0
    assert one["over_ms"] == {"0.5": 1, "1": 1, "2": 1, "5": 0}
    # where the hand-overs around the run were asked for: the script's lines, not pacing's
    asks = [n for n, text in enumerate(lines, 1) if "hand_over()" in text]
    assert one["longest_between"] == [f"<module> (<string>:{line})" for line in asks[:2]]
    short = found["short"]
    assert short["runs"] == 6 and short["longest_ms"] == one["longest_ms"]
    assert short["over_ms"] == one["over_ms"]  # five hand-overs with nothing between
    assert found["reset"] == {
        "runs": 0,
        "cpu_ms": 0.0,
        "longest_ms": 0.0,
        "over_ms": {"0.5": 0, "1": 0, "2": 0, "5": 0},
        "longest_between": ["", ""],
    }


REQUEST_SCRIPT = r"""
pacing.request_begins()
spend_cpu(0.003)
pacing.request_ends()
found["request"] = pacing.run_lengths(reset=True)
time.sleep(0.01)  # waiting for the next request: no run
pacing.hand_over()
found["after"] = pacing.run_lengths(reset=True)
spend_cpu(0.001)
pacing.hand_over()
found["next"] = pacing.run_lengths()
"""


def test_a_request_s_run_goes_from_its_start_to_its_end() -> None:
    """A request's work is one run from request_begins to request_ends; the wait for the
    next request is none, so the first hand-over after it counts nothing; the work after
    a hand-over is a run again. (A fresh interpreter, as above.)"""
    found, lines = _in_a_fresh_interpreter(REQUEST_SCRIPT)
    begins, ends = (lines.index(f"pacing.request_{word}()") + 1 for word in ("begins", "ends"))
    request = found["request"]
    assert request["runs"] == 1 and 3.0 <= request["longest_ms"] < 50.0
    assert request["longest_between"] == [
        f"<module> (<string>:{begins})",
        f"<module> (<string>:{ends})",
    ]
    assert found["after"]["runs"] == 0
    assert found["next"]["runs"] == 1 and 1.0 <= found["next"]["longest_ms"] < 50.0


def test_a_request_starts_a_slice_of_its_own() -> None:
    """A thread whose slice ended long ago does not hand over at its request's first
    check: the slice starts where the request does (before, the check handed over at
    once, a nap at the start of even the smallest request)."""
    found: list[tuple[float, float, float]] = []

    def request() -> None:
        before = time.perf_counter()
        pacing.request_begins()
        found.append((before, pacing.slice_end(), time.perf_counter()))
        pacing.request_ends()

    thread = threading.Thread(target=request)
    thread.start()
    thread.join(10)
    before, ends, after = found[0]
    assert before < ends <= after + pacing.SLICE_MAX
