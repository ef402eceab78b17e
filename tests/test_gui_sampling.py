"""Holes in a chart's samples and the rate it states (observer.gui.sampling), Qt-free.

The series are shaped like the agent's ring: a sample a second while an observer is
connected, one every 10 s while none is, nothing while it is stopped or frozen.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from observer.gui.sampling import GAP_FACTOR, lone, spacing, with_breaks

AROUND = 5  # regular samples on each side of a hole


def series(*stretches: tuple[float, int]) -> np.ndarray:
    """Times made of (step, count) stretches, each continuing from the last time."""
    times = [1_700_000_000.0]
    for step, count in stretches:
        for _ in range(count):
            times.append(times[-1] + step)
    return np.array(times)


def test_idle_then_watched_is_a_rate_change_not_a_hole():
    times = series((10.0, 30), (7.0, 1), (1.0, 60), (10.0, 5))  # idle, connect, leave
    found = spacing(times, 0.5)
    assert found.gap_count == 0
    assert found.rate_text(1.0) == "a sample every 1 s (10 s while no observer was connected)"


def test_a_stopped_agent_leaves_a_hole_the_line_does_not_cross():
    times = series((1.0, 30), (45.0, 1), (1.0, 30))
    found = spacing(times, 0.5)
    assert list(np.flatnonzero(found.gaps)) == [30]
    assert found.rate_text(1.0) == "a sample every 1 s"
    values = np.arange(len(times), dtype=float)
    xs, ys = with_breaks(times, values, found.gaps)
    assert np.isnan(ys).sum() == 1 and times[30] < xs[31] < times[31]
    assert list(ys[np.isfinite(ys)]) == list(values)  # every sample kept, in order


def test_a_sample_between_two_holes_is_a_dot():
    times = series((1.0, 20), (30.0, 1), (30.0, 1), (1.0, 20))
    found = spacing(times, 0.5)
    assert found.gap_count == 2
    assert list(np.flatnonzero(lone(found.gaps))) == [21]
    assert not lone(found.gaps, np.where(np.arange(len(times)) == 21, np.nan, 1.0)).any()


def test_a_hole_does_not_pass_for_a_slow_rate():
    # the service started (a sample), nobody looked for 3.8 s, then a sample a second
    found = spacing(series((3.8, 1), (1.0, 2)), 1.0)
    assert found.gap_count == 1 and found.rate_text(1.0) == "a sample every 1 s"


def test_an_early_sample_is_not_a_faster_rate():
    # an observer connecting wakes the sampler: one sample 0.3 s after the last
    found = spacing(series((1.0, 10), (0.3, 1), (1.0, 10)), 1.0)
    assert found.gap_count == 0 and found.rate_text(1.0) == "a sample every 1 s"


def test_too_few_samples():
    assert spacing(np.array([5.0])).gap_count == 0
    assert spacing(np.array([5.0])).rate_text() == ""
    assert list(lone(spacing(np.array([5.0])).gaps)) == [True]
    assert spacing(np.array([1.0, 2.0])).rate_text() == "a sample every 1 s"


@settings(deadline=None)  # a loaded machine must not fail it
@given(
    step=st.floats(0.2, 60.0),
    jitter=st.lists(st.floats(0.8, 1.2), min_size=2, max_size=300),
)
def test_regular_sampling_never_breaks(step, jitter):
    times = np.cumsum([0.0, *(step * j for j in jitter)])
    assert spacing(times).gap_count == 0


@settings(deadline=None)  # a loaded machine must not fail it
@given(
    step=st.floats(0.5, 20.0),
    before=st.integers(AROUND, 100),
    after=st.integers(AROUND, 100),
    hole=st.floats(GAP_FACTOR * 1.3, 100.0),
)
def test_one_missing_stretch_is_exactly_one_break(step, before, after, hole):
    times = series((step, before), (step * hole, 1), (step, after))
    found = spacing(times)
    assert list(np.flatnonzero(found.gaps)) == [before]
    xs, ys = with_breaks(times, np.ones(len(times)), found.gaps)
    assert len(xs) == len(times) + 1 and np.isnan(ys).sum() == 1
