"""A master's metrics endpoint carries its workers' series, labelled by a bounded slot.

Real masters (tests/hosts/forker.py with ``--workers --metrics``, a real gunicorn under
``python -m agent run --metrics``), real forks and kills, scraped directly and by a real
Prometheus: each worker's ``process_*`` series carry ``worker="<slot>"`` and its pid is in
``observer_worker_info``; a SIGKILLed worker is gone from the next scrape and a new worker
takes its slot; a frozen worker neither stalls the scrape nor loses its series; an
unobserved worker stays dormant through scrapes.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import sys
import time

import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.metrics.workers import Slots, WorkersCollector
from tests.helpers import HostProcess, freeze, line_value, wait_until
from tests.metricstools import prometheus_bin, promtool_check_metrics, samples, scrape, value
from tests.test_forks import forker  # noqa: F401  (the fixture)
from tests.test_prometheus import DOCS, bindir, prometheus  # noqa: F401  (fixtures)


def slots_of(text: str) -> dict[str, int]:
    """slot -> pid, from observer_worker_info."""
    return {
        dict(labels)["worker"]: int(dict(labels)["pid"])
        for (name, labels), _ in samples(text).items()
        if name == "observer_worker_info"
    }


def worker_labels(text: str, name: str) -> set[str]:
    """The worker label values of ``name``'s samples ('' for the master's own)."""
    return {dict(ls).get("worker", "") for (n, ls), _ in samples(text).items() if n == name}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sets(st.integers(1, 40), max_size=12), min_size=1, max_size=30))
def test_slots_are_bounded_kept_for_life_and_the_lowest_free_goes_to_a_newcomer(rounds):
    slots = Slots(limit=8)
    before: dict[int, int] = {}
    exits = 0
    for live in rounds:
        order = sorted(live)
        got, unslotted = slots.update((pid, 1.0) for pid in order)
        exits += len(set(before) - live)
        assert slots.freed == exits
        assert len(set(got.values())) == len(got) and all(0 <= s < 8 for s in got.values())
        assert set(got) <= live and unslotted == len(live) - len(got)
        assert len(got) == min(len(live), 8)
        for pid in set(before) & live:  # a live worker keeps its slot
            assert got[pid] == before[pid]
        kept = {before[p] for p in set(before) & live}
        newcomers = [got[p] for p in order if p in got and p not in before]
        free = [s for s in range(8) if s not in kept]
        assert newcomers == free[: len(newcomers)]  # lowest free slots, in order
        before = got


def test_a_reused_pid_is_a_new_worker():
    slots = Slots()
    assert slots.update([(7, 1.0), (8, 1.0)])[0] == {7: 0, 8: 1}
    assert slots.update([(7, 5.0), (8, 1.0)])[0] == {7: 0, 8: 1}  # 7 died, 7 reborn
    assert slots.freed == 1


def test_a_masters_scrape_carries_each_workers_series_and_a_replacement_takes_the_slot(
    forker,  # noqa: F811
    monkeypatch,
):
    """Three idle workers of a real master: each has its series under worker="0".."2"
    and its pid in observer_worker_info, and stays dormant with the workers' own Python
    series turned off (a scrape wakes no worker's agent). The SIGKILLed one (not yet
    reaped: a zombie) is gone from the next scrapes, its exit counted; a newly forked
    worker takes its slot."""
    monkeypatch.setenv("OBSERVER_AGENT_METRICS_WORKER_AGENTS", "0")
    master = forker("--workers", "--metrics", "127.0.0.1:0")
    address = line_value(master.process, "metrics").split("//", 1)[1].split("/", 1)[0]
    pids = [master.fork("os", "idle")[0] for _ in range(3)]
    text = wait_until(
        lambda: (t := scrape(address)[2]) and len(slots_of(t)) == 3 and t,
        message="three workers scraped",
    )
    assert slots_of(text) == {"0": pids[0], "1": pids[1], "2": pids[2]}
    for name in ("process_cpu_seconds_total", "process_unique_memory_bytes"):
        assert worker_labels(text, name) == {"", "0", "1", "2"}, name
    for slot, pid in slots_of(text).items():
        rss = value(text, "process_resident_memory_bytes", worker=slot)
        assert rss is not None and 1e6 < rss < 4e9
        start = value(text, "process_start_time_seconds", worker=slot)
        assert start == pytest.approx(psutil.Process(pid).create_time(), abs=0.02)
    assert value(text, "observer_workers") == 3
    assert value(text, "observer_worker_exits_total") == 0
    assert value(text, "observer_worker_scrape_errors_total") == 0
    assert [psutil.Process(p).num_threads() for p in pids] == [2, 2, 2]  # still dormant
    if prometheus_bin()[0] is not None:  # not in the 3.14/3.15 chroot
        check = promtool_check_metrics(text)
        assert check.returncode == 0, check.stdout + check.stderr

    os.kill(pids[1], signal.SIGKILL)
    wait_until(lambda: psutil.Process(pids[1]).status() == psutil.STATUS_ZOMBIE)
    text = wait_until(
        lambda: (t := scrape(address)[2]) and len(slots_of(t)) == 2 and t,
        timeout=5,
        message="the killed worker gone from a scrape",
    )
    assert slots_of(text) == {"0": pids[0], "2": pids[2]}
    assert worker_labels(text, "process_resident_memory_bytes") == {"", "0", "2"}
    assert value(text, "observer_worker_exits_total") == 1
    assert master.reap(pids[1]) == -9

    new = master.fork("os", "idle")[0]
    text = wait_until(
        lambda: (t := scrape(address)[2]) and len(slots_of(t)) == 3 and t,
        timeout=5,
        message="the new worker scraped",
    )
    assert slots_of(text) == {"0": pids[0], "1": new, "2": pids[2]}
    assert worker_labels(text, "process_open_fds") == {"", "0", "1", "2"}
    for pid in (pids[0], pids[2], new):
        os.kill(pid, signal.SIGTERM)
        assert master.reap(pid) == -15


def test_a_frozen_worker_neither_stalls_the_scrape_nor_loses_its_series(forker):  # noqa: F811
    """A worker stopped with SIGSTOP: the master reads its series from /proc, never from
    the worker, so the scrape answers at once and the frozen worker is still there."""
    master = forker("--workers", "--metrics", "127.0.0.1:0")
    address = line_value(master.process, "metrics").split("//", 1)[1].split("/", 1)[0]
    pids = [master.fork("os", "term")[0] for _ in range(2)]
    wait_until(lambda: len(slots_of(scrape(address)[2])) == 2, message="two workers")
    freeze(pids[0])
    try:
        took = []
        for _ in range(3):
            started = time.monotonic()
            status, _, text = scrape(address, timeout=10)
            took.append(time.monotonic() - started)
            assert status == 200
            assert slots_of(text) == {"0": pids[0], "1": pids[1]}
            assert value(text, "process_cpu_seconds_total", worker="0") is not None
            assert value(text, "observer_worker_scrape_errors_total") == 0
        assert max(took) < 2.0, took  # the workers' budget, well under a scrape timeout
    finally:
        os.kill(pids[0], signal.SIGCONT)
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
        assert master.reap(pid) == -15


def test_workers_over_the_time_budget_are_left_out_and_counted():
    """A collector with no time left for workers (a budget of 0 s): their series are
    left out of the scrape and each counts as a scrape error; the rest still renders."""
    context = multiprocessing.get_context("spawn")
    children = [context.Process(target=time.sleep, args=(60,), daemon=True) for _ in range(2)]
    for child in children:
        child.start()
    try:
        broke = WorkersCollector(psutil.Process(), budget=0.0)
        families = {f.name: f for f in broke.collect()}
        assert "process_cpu_seconds" not in families
        assert families["observer_workers"].samples[0].value == 0
        assert families["observer_worker_scrape_errors"].samples[0].value == 2
        fine = {f.name: f for f in WorkersCollector(psutil.Process()).collect()}
        assert len(fine["process_cpu_seconds"].samples) == 2
        assert {s.labels[1][1] for s in fine["observer_worker"].samples} == {
            str(c.pid) for c in children
        }
    finally:
        for child in children:
            child.kill()
            child.join(10)


class GunicornWithMetrics:
    """``python -m agent run --metrics 127.0.0.1:0 -- -m gunicorn -w 2 ...``."""

    def __init__(self, keys) -> None:
        argv = [sys.executable, "-m", "agent", "run", "--keys", str(keys.directory)]
        argv += ["--bind", "127.0.0.1:0", "--metrics", "127.0.0.1:0", "--print-address", "--"]
        argv += ["-m", "gunicorn", "-w", "2", "-b", "127.0.0.1:0", "--graceful-timeout", "5"]
        self.process = HostProcess([*argv, "tests.hosts.gunicorn_app:wsgi"])
        self.metrics = line_value(self.process, "metrics")

    def workers(self) -> list[int]:
        """The live gunicorn workers (children of the arbiter, not zombies)."""
        master = psutil.Process(self.process.proc.pid)
        return sorted(c.pid for c in master.children() if c.status() != psutil.STATUS_ZOMBIE)


def _names(expr: str) -> set[str]:
    return set(re.findall(r"\b(observer_workers?_[a-z0-9_]+|observer_workers)\b", expr))


def test_a_real_prometheus_sees_gunicorn_workers_by_slot_through_a_kill(
    prometheus,  # noqa: F811
    keys,
):
    """Prometheus scrapes a real gunicorn master every second: two workers' series by
    slot, their pids in observer_worker_info; after a SIGKILL gunicorn's replacement has
    the dead worker's slot with its own pid, the exit is counted, and the series the
    shipped dashboard and rules read about workers are all served; each worker's own GC
    series come from its agent under its slot, the replacement's too."""
    pytest.importorskip("gunicorn")
    g = GunicornWithMetrics(keys)
    try:
        text = wait_until(
            lambda: (t := scrape(g.metrics)[2]) and len(slots_of(t)) == 2 and t,
            timeout=30,
            message="two gunicorn workers scraped",
        )
        assert sorted(slots_of(text).values()) == g.workers()
        assert set(slots_of(text)) == {"0", "1"}
        served = {ln.split("{")[0].split(" ")[0] for ln in text.splitlines() if ln[:1] != "#"}
        wanted = set().union(
            _names((DOCS / "grafana-dashboard.json").read_text()),
            _names((DOCS / "alerts.yml").read_text()),
        )
        assert {"observer_worker_info", "observer_worker_exits_total"} <= wanted
        assert wanted - served == set()

        server = prometheus(
            [{"job_name": "gunicorn", "static_configs": [{"targets": [g.metrics]}]}]
        )

        def info() -> dict[str, int]:
            return {
                r["metric"]["worker"]: int(r["metric"]["pid"])
                for r in server.query("observer_worker_info")
            }

        seen = wait_until(lambda: len(info()) == 2 and info(), timeout=30, message="scraped")
        rss = server.query('process_resident_memory_bytes{worker=~".+"}')
        assert sorted(r["metric"]["worker"] for r in rss) == ["0", "1"]
        assert all(1e6 < float(r["value"][1]) < 4e9 for r in rss)
        # the workers' own Python series, asked of their agents (sync workers: no loop)
        own = 'python_gc_collections_total{worker=~".+", generation="0"}'

        def own_slots() -> set[str]:
            return {r["metric"]["worker"] for r in server.query(own)}

        wait_until(lambda: own_slots() == {"0", "1"}, timeout=30, message="workers' GC")

        victim_slot, victim = min(seen.items())
        os.kill(victim, signal.SIGKILL)
        after = wait_until(
            lambda: (i := info()) and len(i) == 2 and victim not in i.values() and i,
            timeout=40,
            message="gunicorn's replacement scraped in the dead worker's slot",
        )
        assert after[victim_slot] not in seen.values()
        assert {k: v for k, v in after.items() if k != victim_slot} == {
            k: v for k, v in seen.items() if k != victim_slot
        }
        wait_until(lambda: own_slots() == {"0", "1"}, timeout=30, message="the new one's GC")
        exits = wait_until(lambda: server.values("observer_worker_exits_total"), timeout=30)
        assert list(exits.values()) == [1.0]
    finally:
        g.process.stop()
