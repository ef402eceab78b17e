"""Where a time series has holes, and how often it was really sampled (Qt-free).

The agent samples its load every ``interval`` s while an observer is connected and less
often (``history_idle_interval``, 10 s by default) while none is; a stopped, frozen or
unreachable agent leaves no samples at all. A chart joins two samples by a line only
when they are at most ``GAP_FACTOR`` times the usual spacing around them apart. The
usual spacing is the median of the ``NEIGHBOURS`` spacings before it or of those after
it, whichever is longer: a change of rate (idle to watched, or back) is not a hole, a
missing stretch is.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

GAP_FACTOR = 3.0
NEIGHBOURS = 4
SAME_RATE = 1.5  # spacings within this factor of each other count as one rate


@dataclass(frozen=True)
class Spacing:
    """How a series was sampled: per spacing, whether the line breaks there; the rates."""

    gaps: np.ndarray  # bool, one per spacing (len(times) - 1): True where the line breaks
    fastest: float  # the shortest usual spacing (s), 0 with fewer than two samples
    slowest: float  # the longest usual spacing (s)

    @property
    def gap_count(self) -> int:
        return int(self.gaps.sum())

    def rate_text(self, connected: float = 0.0) -> str:
        """'a sample every 1 s', or with two rates which is which when the slower one is
        the agent's idle rate (``connected``: its rate while an observer is connected)."""
        if not self.fastest:
            return ""
        fast, slow = _seconds(self.fastest), _seconds(self.slowest)
        if self.slowest <= self.fastest * SAME_RATE:
            return f"a sample every {fast} s"
        if connected and self.fastest <= connected * SAME_RATE:
            return f"a sample every {fast} s ({slow} s while no observer was connected)"
        return f"a sample every {fast}–{slow} s"


def spacing(times: np.ndarray, floor: float = 0.0) -> Spacing:
    """Find the holes in ``times`` (seconds, ascending); ``floor`` is the source's fastest
    spacing (the agent's interval: a sample taken early, as when an observer connects,
    is never mistaken for a faster rate)."""
    steps = np.diff(np.asarray(times, dtype=float))
    count = len(steps)
    if not count:
        return Spacing(np.zeros(0, dtype=bool), 0.0, 0.0)
    gaps = steps > GAP_FACTOR * _usual(steps, floor)
    # the rates, measured again without the holes (a hole must not pass for a slow rate)
    usual = _usual(np.where(gaps, np.nan, steps), floor, steps)
    kept = usual[~gaps]
    if not len(kept):
        return Spacing(gaps, 0.0, 0.0)
    return Spacing(gaps, float(kept.min()), float(kept.max()))


def _usual(steps: np.ndarray, floor: float, fallback: np.ndarray | None = None) -> np.ndarray:
    """Per spacing, the median of the NEIGHBOURS spacings before it or of those after it,
    whichever is longer (NaN spacings left out); where neither side has one, ``fallback``
    (the spacing itself)."""
    count = len(steps)
    padded = np.concatenate((np.full(NEIGHBOURS, np.nan), steps, np.full(NEIGHBOURS, np.nan)))
    windows = sliding_window_view(padded, NEIGHBOURS)  # windows[j] = padded[j:j + NEIGHBOURS]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN: no spacing on that side
        before = np.nanmedian(windows[:count], axis=1)
        after = np.nanmedian(windows[NEIGHBOURS + 1 : NEIGHBOURS + 1 + count], axis=1)
    usual = np.fmax(before, after)
    usual = np.where(np.isnan(usual), steps if fallback is None else fallback, usual)
    return np.maximum(usual, floor)


def with_breaks(
    times: np.ndarray, values: np.ndarray, gaps: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``times`` and ``values`` with a NaN value in the middle of every gap, for a curve
    drawn with ``connect="finite"`` (which also keeps its fill from bridging the gap)."""
    where = np.flatnonzero(gaps)
    if not len(where):
        return times, values
    middles = (times[where] + times[where + 1]) / 2
    xs = np.insert(times, where + 1, middles)
    ys = np.insert(values.astype(float), where + 1, np.nan)
    return xs, ys


def lone(gaps: np.ndarray, values: np.ndarray | None = None) -> np.ndarray:
    """Per sample: True when no line reaches it (a gap or a missing value on both sides),
    so the chart marks it with a dot instead of losing it. NaN ``values`` are never lone:
    they are not there."""
    there = np.ones(len(gaps) + 1, dtype=bool) if values is None else np.isfinite(values)
    joined = ~gaps & there[:-1] & there[1:]  # a segment from sample i to sample i + 1
    before = np.concatenate(([False], joined))
    after = np.concatenate((joined, [False]))
    return there & ~before & ~after


def _seconds(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.2g}"
