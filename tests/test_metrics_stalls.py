"""Stall counters on the metrics endpoint: ``python_asyncio_loop_stalls_total`` and
``python_asyncio_loop_stall_seconds_total`` per loop, from the stall catcher.

A real host (tests/hosts/stalls.py) blocks its loop on command; its endpoint, scraped over
HTTP, counts each stall once with its duration, the counters start at zero for a loop that
never stalled and never go down; in-process, a loop that goes away takes its series with
it and the label set stays bounded.
"""

from __future__ import annotations

import itertools
import sys
import threading
import time

from agent.collect import stalls as stalls_module
from agent.collect.stalls import StallWatch
from agent.collect.tasks import TaskRegistry
from agent.metrics.exposition import render
from agent.metrics.runtime import StallCollector
from tests.helpers import HostProcess, LoopThread, echo_ok, line_value, wait_until
from tests.metricstools import prometheus_bin, promtool_check_metrics, samples, scrape, value


def stall_counts(text: str) -> dict[str, tuple[float, float]]:
    """loop -> (stalls, seconds) of one exposition."""
    found = samples(text)
    return {
        dict(labels)["loop"]: (v, found[("python_asyncio_loop_stall_seconds_total", labels)])
        for (name, labels), v in found.items()
        if name == "python_asyncio_loop_stalls_total"
    }


def test_a_blocked_loop_counts_one_stall_with_its_seconds_and_counters_never_go_down(keys):
    host = HostProcess(
        [sys.executable, "-m", "tests.hosts.stalls", str(keys.directory)],
        env={"OBSERVER_AGENT_METRICS": "127.0.0.1:0"},
    )
    try:
        address = line_value(host, "metrics")
        echo = line_value(host, "echo")
        host.wait_line(r"^ready$")
        before = wait_until(
            lambda: (c := stall_counts(scrape(address)[2])) and "loop-1" in c and c,
            message="the main loop's stall counters, at zero",
        )
        assert before["loop-1"] == (0.0, 0.0)
        seen = [before]
        for round_ in range(1, 3):  # each command blocks the loop ~0.5 s: one stall each
            mark = host.mark()
            host.send("sleep")
            host.wait_line(r"^event: sleep done", start=mark)
            now = wait_until(
                lambda r=round_: (c := stall_counts(scrape(address)[2]))["loop-1"][0] >= r and c,
                message=f"stall {round_} counted",
            )
            seen.append(now)
            assert now["loop-1"][0] == round_  # one stall per block, not one per capture
        seconds = seen[-1]["loop-1"][1]
        assert 0.7 <= seconds <= 4.0, seconds  # two blocks of 0.5 s each, seen at 0.1 s
        for earlier, later in itertools.pairwise(seen):
            for loop, (n, secs) in earlier.items():
                assert later[loop][0] >= n and later[loop][1] >= secs  # counters only rise
        text = scrape(address)[2]
        assert "# TYPE python_asyncio_loop_stalls_total counter" in text
        assert value(text, "python_asyncio_loop_stall_seconds_total", loop="loop-1") == seconds
        if prometheus_bin()[0] is not None:  # not in the 3.14/3.15 chroot
            check = promtool_check_metrics(text)
            assert check.returncode == 0, check.stdout + check.stderr
        assert echo_ok(echo)
    finally:
        host.stop()


def _families(watch: StallWatch) -> dict[str, tuple[float, float]]:
    return stall_counts(render(StallCollector(watch).collect(), False, 1000).body.decode())


def test_a_gone_loop_takes_its_series_and_loops_beyond_the_cap_are_summed_as_other(
    monkeypatch,
):
    """In process: two loops under one watchdog with a cap of one labelled loop: the first
    has its own series, the second counts under "other"; closing the first drops its
    series (its label is never reused: loop ids only grow)."""
    monkeypatch.setattr(stalls_module, "MAX_TOTALS", 1)
    registry = TaskRegistry()
    first, second = LoopThread("stall-metrics-1"), LoopThread("stall-metrics-2")
    names = [registry.loop_id(first.loop), registry.loop_id(second.loop)]
    live = [first, second]
    watch = StallWatch(
        lambda: [(t.loop, t.thread.ident, registry.loop_id(t.loop)) for t in live],
        threshold=0.1,
    )
    watch.start()
    try:
        wait_until(lambda: _families(watch) == {names[0]: (0.0, 0.0)}, message="first watched")
        for loop in (first, second):
            loop.loop.call_soon_threadsafe(time.sleep, 0.3)
        counts = wait_until(
            lambda: (
                (c := _families(watch)).get("other", (0,))[0] >= 1
                and c.get(names[0], (0,))[0] >= 1
                and c
            ),
            message="a stall on each loop",
        )
        assert set(counts) == {names[0], "other"}
        assert all(0.2 <= secs <= 5.0 for _n, secs in counts.values()), counts
        live.remove(first)
        first.stop()
        after = wait_until(
            lambda: names[0] not in (c := _families(watch)) and c, message="first loop gone"
        )
        assert after["other"] >= counts["other"]  # "other" never goes down (a busy box
        # may stall the second loop again meanwhile)
    finally:
        watch.stop()
        for loop in live:
            loop.stop()
    assert not [t for t in threading.enumerate() if t.name == "observer-agent-stalls"]


def test_no_stall_series_while_the_catcher_is_off():
    watch = StallWatch(lambda: [], threshold=0)
    assert list(StallCollector(watch).collect()) == []
