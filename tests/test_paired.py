"""bench/paired.py's judging: ABBA order, warm-up discarded, pair ratios, the interval and
the verdict (pure logic; the benches themselves print figures and assert nothing timed)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from hypothesis import given
from hypothesis import strategies as st

from bench.paired import Segment, Setting, Target, median_interval, run_blocks, verdict


def fake_server(rps: dict[str, float], seen: list[tuple[int, str]], fail: int = -1):
    """A block whose segments give each setting a fixed requests/s, recording the order."""

    @contextlib.contextmanager
    def block(b: int) -> Iterator:
        if b == fail:
            raise RuntimeError("server did not start")

        def measure(name: str) -> Segment:
            seen.append((b, name))
            return Segment(rps[name], 0.001, 0.01, 0.005, server_cpu=0.5)

        yield measure

    return block


def test_blocks_alternate_abba_discard_warmup_and_pair_neighbours() -> None:
    seen: list[tuple[int, str]] = []
    rps = {"off": 1000.0, "x": 960.0, "y": 1000.0}
    block = fake_server(rps, seen)
    results, loads = run_blocks(block, "off", ["x", "y"], 2, 2, settle=0, log=lambda _: 0)
    block0 = [name for b, name in seen if b == 0]
    assert block0[:3] == ["x", "y", "off"]  # warm-up segments, not recorded
    assert block0[3:11] == ["off", "x", "x", "off", "off", "y", "y", "off"]
    assert block0[11:19] == ["x", "off", "off", "x", "y", "off", "off", "y"]  # then BAAB
    block1 = [name for b, name in seen if b == 1]
    assert block1[3:11] == ["y", "off", "off", "y", "x", "off", "off", "x"]  # rotated
    assert len(seen) == 2 * (3 + 2 * 2 * 4)
    assert results["x"].ratios["rps"] == [0.96] * 8
    assert results["y"].ratios["rps"] == [1.0] * 8
    assert results["x"].ratios["per_cpu"] == [0.96] * 8
    assert len(results["off"].segments) == 2 * 2 * 2 * 2  # warm-ups left out
    assert len(loads) == 2


def test_a_failed_block_keeps_the_others_and_says_so() -> None:
    seen: list[tuple[int, str]] = []
    block = fake_server({"off": 1.0, "x": 1.0}, seen, fail=0)
    results, _ = run_blocks(block, "off", ["x"], 2, 1, settle=0, log=lambda _: 0)
    assert len(results["x"].ratios["rps"]) == 2
    assert any("block 1 failed" in e for e in results["off"].errors)


def test_verdict_needs_the_whole_interval() -> None:
    assert verdict(0.975, 1.01, 0.97, True) == "met"
    assert verdict(0.95, 0.969, 0.97, True) == "MISSED"
    assert verdict(0.96, 1.01, 0.97, True) == "inconclusive"
    assert verdict(1.0, 1.04, 1.05, False) == "met"
    assert verdict(1.06, 1.2, 1.05, False) == "MISSED"
    assert verdict(1.0, 1.06, 1.05, False) == "inconclusive"


def test_too_few_pairs_is_never_a_verdict() -> None:
    s = Setting()
    s.ratios["rps"] = [1.0, 1.0, 1.0]
    assert "inconclusive" in Target("rps", 0.97, True).says(s)
    s.ratios["rps"] = [1.0] * 8
    assert "(target >= 0.97: met)" in Target("rps", 0.97, True).says(s)


@given(st.lists(st.floats(0.5, 2.0), min_size=1, max_size=40))
def test_interval_holds_the_median(values: list[float]) -> None:
    mid, lo, hi = median_interval(values)
    assert min(values) <= lo <= mid <= hi <= max(values)


def test_a_wide_aa_interval_turns_a_verdict_into_inconclusive() -> None:
    tested, tight, wide = Setting(), Setting(), Setting()
    tested.ratios["rps"] = [0.99, 1.0, 1.01, 1.0, 0.995, 1.005]
    tight.ratios["rps"] = [0.99, 1.0, 1.01, 1.0, 0.995, 1.005]
    wide.ratios["rps"] = [0.8, 1.2, 0.9, 1.1, 0.85, 1.15]
    target = Target("rps", 0.97, True)
    assert "(target >= 0.97: met)" in target.says(tested, tight)
    said = target.says(tested, wide)
    assert "inconclusive: met but the A/A interval" in said
