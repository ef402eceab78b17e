"""Paired A/B segments: judge a few-percent cost on a noisy shared machine.

Fresh servers differ from each other by 15-25% in requests/s here (layout, the other
work on the box), far more than the 3% being judged, so comparing medians of separate
runs says nothing. Instead each *block* starts one server and alternates short load
*segments* of the baseline and of each tested setting on that same process, in ABBA
order (``base, T, T, base`` then ``T, base, base, T``: a linear drift cancels; a
quarter-second pause between segments keeps what one left behind out of the next), with a
warm-up segment of every setting first that is discarded (the first profile, the first
snapshot of 10k tasks and wrk's first connections are colder than the rest). Each
tested segment and the baseline segment next to it make a *pair*; its ratio
(tested / baseline) cancels what the two neighbours share: the server, the box's load
of those seconds. Several blocks (fresh servers) average out what differs per server.

Besides requests/s, p50 and p99, a pair also compares requests per CPU-second of the
server process (``per_cpu``, "capacity"): when others on the box take the server's
core, requests/s falls on both sides of a pair but that figure much less. On this
shared box a sampler waking 250-1000 times a second even *raised* requests/s (x1.2,
p99 x0.4: the server then got more of its contended core), so requests/s alone can
hide a cost that capacity shows (x0.93 at 1000 Hz, the agent's ~8% of a core): the
benches judge it against the requests/s target too.

The figure is the median of the pair ratios, and its interval a bootstrap 90% interval
of that median (resample the pairs with replacement 2000 times, a fixed seed; take the
5th and 95th percentiles of the medians). It treats pairs as independent, which pairs
from one server are not quite, so the per-block medians are printed too: if they
disagree more than the interval says, believe the blocks. Verdict against a target:
"met" when the whole interval is inside it, "MISSED" when it is wholly outside,
"inconclusive" otherwise, always with the interval. Run the baseline against itself
(``--aa``) to see how tight an interval the box allows that day. Short segments and
many pairs beat long ones: at load 2-4 here, 16 pairs of 3 s segments gave an A/A
interval of [0.875, 1.187] on requests/s, 48 pairs of 1 s segments [0.983, 1.041].
"""

from __future__ import annotations

import contextlib
import os
import random
import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

LEVEL = 0.90
RESAMPLES = 2000
SETTLE = 0.25  # seconds between segments: a poll's or a profile's aftermath stays in its own


@dataclass
class Segment:
    """One stretch of load on one server with one setting."""

    rps: float
    p50: float
    p99: float
    agent_cpu: float  # share of one core
    rounds: float | None = None  # polls done, or the profiler's sampling rounds a second
    server_cpu: float = 0.0  # the whole server process's CPU, share of one core (0: unknown)

    @property
    def per_cpu(self) -> float:
        """Requests per CPU-second of the server: what the agent's cost lowers even when
        others on the box take the server's core (requests/s then falls for both sides)."""
        return self.rps / self.server_cpu if self.server_cpu > 0 else 0.0

    errors: list[str] = field(default_factory=list)


@dataclass
class Setting:
    """Everything measured for one setting: its segments and its ratios to the baseline."""

    segments: list[Segment] = field(default_factory=list)
    ratios: dict[str, list[float]] = field(
        default_factory=lambda: {"rps": [], "p50": [], "p99": [], "per_cpu": []}
    )
    block_of_pair: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def median_interval(values: list[float], level: float = LEVEL) -> tuple[float, float, float]:
    """The median and a bootstrap ``level`` interval of it (min-max below 4 values, which
    verdicts then call inconclusive)."""
    if not values:
        return float("nan"), float("nan"), float("nan")
    mid = statistics.median(values)
    if len(values) < 4:
        return mid, min(values), max(values)
    rng = random.Random(1)
    n = len(values)
    meds = sorted(statistics.median(rng.choices(values, k=n)) for _ in range(RESAMPLES))
    cut = round((1 - level) / 2 * RESAMPLES)
    return mid, meds[cut], meds[RESAMPLES - 1 - cut]


def verdict(lo: float, hi: float, bound: float, higher_is_better: bool) -> str:
    """ "met" / "MISSED" / "inconclusive" for an interval against ``bound``."""
    inside = lo >= bound if higher_is_better else hi <= bound
    outside = hi < bound if higher_is_better else lo > bound
    return "met" if inside else "MISSED" if outside else "inconclusive"


@dataclass
class Target:
    """A bound on a pair ratio (``metric`` in rps/p50/p99) or on the tested segments'
    agent CPU (``metric`` "agent_cpu", absolute share of a core)."""

    metric: str
    bound: float
    higher_is_better: bool

    def says(self, s: Setting, control: Setting | None = None) -> str:
        """The figure, its interval and the verdict; with ``control`` (the baseline judged
        against itself), a ratio verdict stands only if the control's interval lies
        within the margin (``|bound - 1|``) of 1: else the box was too noisy to say."""
        if self.metric == "agent_cpu":
            values = [g.agent_cpu for g in s.segments]
            mid, lo, hi = median_interval(values)
            shown = f"{mid * 100:.2f}% [{lo * 100:.2f}, {hi * 100:.2f}]"
            bound = f"{self.bound * 100:g}%"
        else:
            values = s.ratios[self.metric]
            mid, lo, hi = median_interval(values)
            shown = f"x{mid:.3f} [{lo:.3f}, {hi:.3f}]"
            bound = f"{self.bound:g}"
        if not values:
            return f"{self.metric}: no figures"
        sign = ">=" if self.higher_is_better else "<="
        said = verdict(lo, hi, self.bound, self.higher_is_better)
        if len(values) < 4:
            said = "inconclusive: under 4 values"
        elif control is not None and self.metric != "agent_cpu" and said != "inconclusive":
            _mid, c_lo, c_hi = median_interval(control.ratios[self.metric])
            margin = abs(self.bound - 1)
            if not (1 - margin <= c_lo and c_hi <= 1 + margin):
                wide = f"the A/A interval [{c_lo:.3f}, {c_hi:.3f}] is wider"
                said = f"inconclusive: {said} but {wide}"
        return f"{self.metric} {shown} (target {sign} {bound}: {said})"


def load_average() -> float:
    with contextlib.suppress(OSError):
        return os.getloadavg()[0]
    return float("nan")


Measure = Callable[[str], Segment]


def run_blocks(
    open_block: Callable[[int], AbstractContextManager[Measure]],
    baseline: str,
    tested: list[str],
    blocks: int,
    rounds: int,
    warmup: bool = True,
    settle: float = SETTLE,
    log: Callable[[str], None] | None = None,
) -> tuple[dict[str, Setting], list[float]]:
    """Run ``blocks`` blocks; in each, ``rounds`` ABBA quads per tested setting (the
    tested settings' order rotated per round and block). ``open_block(b)`` yields
    ``measure(setting) -> Segment`` for one server. Returns every setting's figures
    (the baseline's segments too) and the 1-minute load average at each block's end."""
    results = {name: Setting() for name in [baseline, *tested]}
    loads: list[float] = []
    for b in range(blocks):
        try:
            with open_block(b) as measure:
                if warmup:  # discarded: see the module's docstring
                    warm = [(name, measure(name).rps) for name in [*tested, baseline]]
                    (log or say)(
                        f"block {b + 1}/{blocks} warm-up, discarded: req/s "
                        + " ".join(f"{name}={rps:.0f}" for name, rps in warm)
                    )
                for r in range(rounds):
                    # rotated every other round, so that each setting meets both ABBA
                    # orders in each place (with two settings, (b + r) would give the
                    # first one BTTB and the second TBBT, always after the other's T)
                    turn = (b + r // 2) % len(tested)
                    for name in tested[turn:] + tested[:turn]:
                        order = ["base", "t", "t", "base"] if (b + r) % 2 == 0 else None
                        order = order or ["t", "base", "base", "t"]
                        segs = {}
                        for k, which in enumerate(order):
                            key = baseline if which == "base" else name
                            time.sleep(settle)  # what the last one left behind ends
                            seg = measure(key)
                            segs[k] = seg
                            results[key].segments.append(seg)
                            results[key].errors += seg.errors
                        for first, second in ((0, 1), (2, 3)):
                            base_seg, t_seg = (
                                (segs[first], segs[second])
                                if order[first] == "base"
                                else (segs[second], segs[first])
                            )
                            add_pair(results[name], base_seg, t_seg, b)
                        (log or say)(
                            f"block {b + 1}/{blocks} round {r + 1}/{rounds} {name}: "
                            + pair_line(results[name])
                            + "  (req/s "
                            + " ".join(
                                f"{which}={segs[k].rps:.0f}" for k, which in enumerate(order)
                            )
                            + ")"
                        )
        except Exception as exc:  # one bad block must not lose the others
            results[baseline].errors.append(f"block {b + 1} failed: {type(exc).__name__}: {exc}")
        loads.append(load_average())
    return results, loads


def say(line: str) -> None:
    print(line, flush=True)


def add_pair(s: Setting, base: Segment, tested: Segment, block: int) -> None:
    for metric in ("rps", "p50", "p99", "per_cpu"):
        denominator = getattr(base, metric)
        if denominator > 0:
            s.ratios[metric].append(getattr(tested, metric) / denominator)
    s.block_of_pair.append(block)


def pair_line(s: Setting) -> str:
    last = [s.ratios[m][-2:] for m in ("rps", "p99")]
    return (
        "req/s x"
        + "/".join(f"{v:.3f}" for v in last[0])
        + "  p99 x"
        + "/".join(f"{v:.3f}" for v in last[1])
    )


def med(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    """Median (min-max) of ``values`` times ``scale``, or "-"."""
    if not values:
        return "-"
    m, lo, hi = (f(values) * scale for f in (statistics.median, min, max))
    return f"{m:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})"


def report(
    results: dict[str, Setting],
    labels: dict[str, str],
    targets: list[Target],
    loads: list[float],
    header: str,
    rounds_name: str = "polls",
    control: str | None = None,
) -> None:
    """The absolute medians per setting, then per tested setting its pair ratios with
    their interval, the per-block medians and the verdicts (checked against the A/A
    ``control`` setting when there is one). "server CPU %" is the share
    of its core the server process got: far under 100 means others on the box (or a
    starved load generator) held it back, and requests/s with it."""
    print()
    print(header)
    print("load average (1 min) at each block's end: " + ", ".join(f"{v:.2f}" for v in loads))
    print(
        f"{'setting':<26}{'segs':>5}{'requests/s (range)':>24}{'p50 ms':>20}{'p99 ms':>22}"
        f"{'agent CPU %':>20}{'server CPU %':>20}{rounds_name:>10}"
    )
    for name, s in results.items():
        segs = s.segments
        rounds = [g.rounds for g in segs if g.rounds is not None]
        print(
            f"{labels[name]:<26}{len(segs):>5}{med([g.rps for g in segs], 1, 0):>24}"
            f"{med([g.p50 for g in segs], 1000, 2):>20}{med([g.p99 for g in segs], 1000, 2):>22}"
            f"{med([g.agent_cpu for g in segs], 100, 2):>20}"
            f"{med([g.server_cpu for g in segs if g.server_cpu > 0], 100, 0):>20}"
            f"{(f'{statistics.median(rounds):.0f}' if rounds else '-'):>10}"
        )
    baseline = next(iter(results))
    print(f"pair ratios (tested / adjacent {labels[baseline]}), median [bootstrap 90% interval]:")
    for name, s in list(results.items())[1:]:
        n = len(s.ratios["rps"])
        parts = []
        for metric in ("rps", "p50", "p99", "per_cpu"):
            if not s.ratios[metric]:
                continue
            mid, lo, hi = median_interval(s.ratios[metric])
            parts.append(f"{metric} x{mid:.3f} [{lo:.3f}, {hi:.3f}]")
        print(f"  {labels[name]} ({n} pairs): " + ", ".join(parts))
        per_block = {}
        for block, ratio in zip(s.block_of_pair, s.ratios["rps"], strict=False):
            per_block.setdefault(block, []).append(ratio)
        print(
            "    req/s median per block: "
            + ", ".join(f"x{statistics.median(v):.3f}" for v in per_block.values())
        )
        if name == control:
            print("    (the method's own noise: the baseline against itself)")
            continue
        ref = results.get(control) if control else None
        print("    targets: " + "; ".join(t.says(s, ref) for t in targets))
    for name, s in results.items():
        for error in sorted(set(s.errors)):
            print(f"{labels[name]}: {s.errors.count(error)}x {error}")
