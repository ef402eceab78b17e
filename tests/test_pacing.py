"""A pass hands the GIL over between slices, and stays away longer while the host's
threads are busy (agent/collect/pacing.py)."""

from __future__ import annotations

import threading
import time

from agent.collect import pacing


def _hand_overs(count: int) -> list[float]:
    """How long each of ``count`` hand-overs kept this thread away."""
    took = []
    for _ in range(count):
        started = time.perf_counter()
        pacing.hand_over()
        took.append(time.perf_counter() - started)
    return took


def test_a_busy_host_thread_makes_the_pass_stay_away_longer() -> None:
    """A host thread spinning in Python wants the GIL back at once: a hand-over then
    lasts at least the back-off (sleep never ends early), for most of them."""
    stop = threading.Event()
    spinning = threading.Event()

    def spin() -> None:
        spinning.set()
        while not stop.is_set():
            sum(range(100))

    thread = threading.Thread(target=spin, name="host-busy", daemon=True)
    thread.start()
    try:
        assert spinning.wait(10)
        took = _hand_overs(40)
    finally:
        stop.set()
        thread.join(10)
    backed_off = [t for t in took if t >= pacing.BACKOFF * pacing.SLICE_SECONDS]
    assert len(backed_off) >= len(took) // 2, took


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
