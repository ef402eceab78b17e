"""Workers' own Python series on their master's endpoint, asked of each worker's agent at
scrape time (agent.metrics.workeragents, agent.metrics.own).

A real master (tests/hosts/forker.py ``--workers --metrics``) forks real workers that run
an asyncio loop; scraped over HTTP, the master's exposition carries each worker's GC,
threads, tasks, loop lag and stall series under ``worker="<slot>"``; a SIGKILLed worker's
series are gone from the next scrape and its replacement takes the slot; a frozen worker
costs the scrape no more than the workers' timeout and only its own Python series; a
worker whose loop is blocked counts the stall; the series cap holds with workers in it.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.metrics.exposition import ExpositionError
from agent.metrics.own import FAMILIES
from agent.metrics.workeragents import REASONS, TIMEOUT, families_from
from tests.helpers import freeze, line_value, wait_until
from tests.hosts.forkchild import STALL
from tests.metricstools import prometheus_bin, promtool_check_metrics, samples, scrape, value
from tests.test_forks import forker  # noqa: F401  (the fixture)
from tests.test_metrics_workers import slots_of, worker_labels
from tests.test_prometheus import bindir, prometheus  # noqa: F401  (fixtures)

OWN = ("python_gc_collections_total", "python_asyncio_tasks", "python_asyncio_loop_lag_max_seconds")


def metrics_of(master) -> str:
    return line_value(master.process, "metrics").split("//", 1)[1].split("/", 1)[0]


def own_slots(text: str) -> set[str]:
    """The worker slots whose lag histograms are in the exposition (their own series)."""
    return worker_labels(text, "python_asyncio_loop_lag_seconds_count") - {""}


def agent_errors(text: str) -> dict[str, float]:
    return {
        dict(ls)["reason"]: v
        for (n, ls), v in samples(text).items()
        if n == "observer_worker_agent_errors_total"
    }


def wait_own(address: str, slots: set[str], timeout: float = 20.0) -> str:
    """A scrape in which exactly ``slots`` have their own series, with a lag observation
    and the stall counters of a loop the worker's stall catcher watches."""

    def check() -> str | None:
        text = scrape(address)[2]
        if own_slots(text) != slots:
            return None
        lagged = all(
            (value(text, "python_asyncio_loop_lag_seconds_count", worker=s) or 0) >= 1
            and s in worker_labels(text, "python_asyncio_loop_stalls_total")  # loop watched
            for s in slots
        )
        return text if lagged else None

    return wait_until(check, timeout=timeout, message=f"own series of workers {sorted(slots)}")


def test_each_workers_python_series_come_by_slot_and_go_with_a_killed_worker(
    forker,  # noqa: F811
):
    master = forker("--workers", "--metrics", "127.0.0.1:0")
    address = metrics_of(master)
    pids = [master.fork("os", "loop")[0] for _ in range(3)]
    text = wait_own(address, {"0", "1", "2"})
    assert slots_of(text) == {"0": pids[0], "1": pids[1], "2": pids[2]}
    for slot in ("0", "1", "2"):
        for generation in ("0", "1", "2"):
            got = value(text, "python_gc_collections_total", worker=slot, generation=generation)
            assert got is not None and got >= 0
        assert (
            value(text, "python_gc_objects_uncollectable_total", worker=slot, generation="2") == 0
        )
        # the worker's loop and its one worker-job task (the master's loop is loop-1 there too)
        tasks = {dict(ls)["loop"]: v for (n, ls), v in samples(text).items()
                 if n == "python_asyncio_tasks" and dict(ls).get("worker") == slot}  # fmt: skip
        assert len(tasks) == 1 and 2 <= sum(tasks.values()) <= 3, tasks
        (loop,) = tasks
        assert 0 <= value(text, "python_asyncio_loop_lag_max_seconds", worker=slot, loop=loop) < 1
        assert value(text, "python_asyncio_loop_stalls_total", worker=slot, loop=loop) == 0
        assert value(text, "python_threads", worker=slot) >= 1
    for name in OWN:  # the master's own series stay unlabelled next to the workers'
        assert "" in worker_labels(text, name), name
    assert "worker-job" not in text  # task names never become labels
    assert set(agent_errors(text)) == set(REASONS)  # every reason from the start, at 0 or more
    if prometheus_bin()[0] is not None:  # not in the 3.14/3.15 chroot
        check = promtool_check_metrics(text)
        assert check.returncode == 0, check.stdout + check.stderr

    os.kill(pids[1], signal.SIGKILL)
    text = wait_until(
        lambda: (t := scrape(address)[2]) and set(slots_of(t)) == {"0", "2"} and t,
        timeout=10,
        message="the killed worker gone",
    )
    assert own_slots(text) == {"0", "2"}  # in the first scrape without it
    for name in OWN:
        assert worker_labels(text, name) == {"", "0", "2"}, name
    assert master.reap(pids[1]) == -9
    new = master.fork("os", "loop")[0]
    text = wait_own(address, {"0", "1", "2"})
    assert slots_of(text) == {"0": pids[0], "1": new, "2": pids[2]}
    assert agent_errors(text)["refused"] == agent_errors(text)["cap"] == 0
    for pid in (pids[0], pids[2], new):
        os.kill(pid, signal.SIGTERM)
        assert master.reap(pid) == -15


def test_a_frozen_worker_costs_the_scrape_the_timeout_at_most_and_only_its_own_series(
    forker,  # noqa: F811
):
    """SIGSTOP one of two awake workers: every scrape still answers within the workers'
    timeout (plus the master's own work), with the frozen worker's process series from
    /proc but not its Python series, each such scrape counted as a timeout; after
    SIGCONT its series come back."""
    master = forker("--workers", "--metrics", "127.0.0.1:0")
    address = metrics_of(master)
    pids = [master.fork("os", "loop")[0] for _ in range(2)]
    wait_own(address, {"0", "1"})
    freeze(pids[0])
    try:
        before = agent_errors(scrape(address)[2])["timeout"]
        took, answered = [], 0
        while len(took) < 3 or not answered:  # the healthy worker answers (a loaded box
            assert len(took) < 10, took  # may make it late once in a while: counted too)
            time.sleep(0.6)  # past the endpoint's 0.5 s cache: each scrape collects anew
            started = time.monotonic()
            status, _, text = scrape(address, timeout=10)
            took.append(time.monotonic() - started)
            assert status == 200
            assert slots_of(text) == {"0": pids[0], "1": pids[1]}
            assert value(text, "process_cpu_seconds_total", worker="0") is not None
            assert "0" not in own_slots(text)
            answered += own_slots(text) == {"1"}
        assert max(took) < TIMEOUT + 1.0, took
        assert agent_errors(text)["timeout"] >= before + len(took)
    finally:
        os.kill(pids[0], signal.SIGCONT)
    wait_own(address, {"0", "1"})
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
        assert master.reap(pid) == -15


def test_a_workers_blocked_loop_counts_a_stall_under_its_slot(forker):  # noqa: F811
    master = forker("--workers", "--metrics", "127.0.0.1:0")
    address = metrics_of(master)
    pids = [master.fork("os", "loop")[0] for _ in range(2)]
    text = wait_own(address, {"0", "1"})

    def stalls(text: str, slot: str) -> tuple[float, float]:
        found = samples(text)
        n = sum(
            v
            for (name, ls), v in found.items()
            if name == "python_asyncio_loop_stalls_total" and dict(ls).get("worker") == slot
        )
        secs = sum(v for (name, ls), v in found.items()
                   if name == "python_asyncio_loop_stall_seconds_total"
                   and dict(ls).get("worker") == slot)  # fmt: skip
        return n, secs

    assert stalls(text, "1") == (0, 0)
    os.kill(pids[1], signal.SIGUSR1)  # the worker's loop sleeps STALL seconds
    text = wait_until(
        lambda: (t := scrape(address)[2]) and stalls(t, "1")[0] >= 1 and t,
        message="the worker's stall counted",
    )
    n, secs = stalls(text, "1")
    assert n == 1 and STALL * 0.7 <= secs <= STALL * 5, (n, secs)
    assert stalls(text, "0") == (0, 0)
    worst = value(text, "python_asyncio_loop_lag_max_seconds", worker="1")
    assert worst is None or worst >= 0  # the max is since the previous scrape: may be small
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
        assert master.reap(pid) == -15


def test_the_series_cap_holds_with_workers_in_it(forker, monkeypatch):  # noqa: F811
    """A cap of 260 samples and four workers (~33 samples of their own each): the workers'
    own series get half the cap together, so the lowest three slots keep theirs and the
    fourth's are left out; no scrape exceeds the cap, and what it left out is counted."""
    monkeypatch.setenv("OBSERVER_AGENT_METRICS_MAX_SERIES", "260")
    master = forker("--workers", "--metrics", "127.0.0.1:0")
    address = metrics_of(master)
    pids = [master.fork("os", "loop")[0] for _ in range(4)]
    text = wait_until(
        lambda: (t := scrape(address)[2]) and len(own_slots(t)) == 3 and t,
        message="three workers' own series in a scrape",
    )
    assert own_slots(text) == {"0", "1", "2"}  # the lowest slots first
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert len(lines) <= 260
    assert value(text, "observer_agent_metrics_series") <= 260
    assert agent_errors(text)["cap"] >= 1  # the fourth worker's, counted
    assert value(text, "observer_agent_metrics_dropped_families") == 0  # the rest all fit
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
        assert master.reap(pid) == -15


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([*FAMILIES, "process_cpu_seconds", "observer_worker", "x"]),
            st.sampled_from(["counter", "gauge", "histogram", "info"]),
            st.lists(
                st.tuples(
                    st.sampled_from(["", "_total", "_bucket", "_count", "_sum", "_info"]),
                    st.lists(st.sampled_from(["loop", "le", "worker", "pid", "loop-1", "0"])),
                    st.one_of(st.floats(), st.integers(-5, 5), st.text(max_size=3)),
                ),
                max_size=5,
            ),
        ),
        max_size=4,
    )
)
def test_a_workers_reply_is_taken_only_as_the_master_allows(reply):
    """Any reply: either refused, or families the master knows, with their own type, and
    only generation/loop/le labels (never a worker or pid label the master adds)."""
    data = [[name, kind, "help", [[sfx, labels, v] for sfx, labels, v in samples_]]
            for name, kind, samples_ in reply]  # fmt: skip
    try:
        families = families_from(data)
    except (ValueError, ExpositionError, TypeError):
        return
    for family in families:
        assert FAMILIES[family.name] == family.type
        for sample in family.samples:
            assert {k for k, _ in sample.labels} <= {"generation", "loop", "le"}


def test_a_reply_with_too_many_samples_is_refused():
    data = [["python_threads", "gauge", "t", [["", ["loop", str(i)], 1] for i in range(401)]]]
    with pytest.raises(ValueError):
        families_from(data)


def test_a_real_prometheus_sees_each_workers_python_series_by_slot_through_a_kill_and_a_stall(
    forker,  # noqa: F811
    prometheus,  # noqa: F811
):
    """Prometheus scrapes a real master every second: three workers' GC, tasks, loop lag
    and stall series under worker="0".."2"; a SIGKILLed worker's are gone from the next
    scrape (stale in Prometheus) and its replacement's take the slot with a new pid; a
    worker whose loop is blocked shows the stall in its counters, the others do not."""
    master = forker("--workers", "--metrics", "127.0.0.1:0")
    address = metrics_of(master)
    pids = [master.fork("os", "loop")[0] for _ in range(3)]
    wait_own(address, {"0", "1", "2"})
    server = prometheus([{"job_name": "workers", "static_configs": [{"targets": [address]}]}])

    def by_worker(promql: str) -> dict[str, float]:
        return {r["metric"].get("worker", ""): float(r["value"][1]) for r in server.query(promql)}

    def pid_of() -> dict[str, int]:
        return {r["metric"]["worker"]: int(r["metric"]["pid"])
                for r in server.query("observer_worker_info")}  # fmt: skip

    own = 'python_asyncio_loop_lag_seconds_count{worker=~".+"}'
    wait_until(lambda: set(by_worker(own)) == {"0", "1", "2"}, timeout=30, message="scraped")
    assert pid_of() == {"0": pids[0], "1": pids[1], "2": pids[2]}
    gc = server.query('python_gc_collections_total{worker=~".+"}')
    assert sorted((r["metric"]["worker"], r["metric"]["generation"]) for r in gc) == [
        (w, g) for w in "012" for g in "012"
    ]
    tasks = by_worker('sum by (worker) (python_asyncio_tasks{worker=~".+"})')
    assert set(tasks) == {"0", "1", "2"} and all(2 <= v <= 3 for v in tasks.values()), tasks
    assert set(by_worker('python_asyncio_loop_lag_max_seconds{worker=~".+"}')) == {"0", "1", "2"}
    stalls = 'sum by (worker) (python_asyncio_loop_stalls_total{worker=~".+"})'
    assert by_worker(stalls) == {"0": 0.0, "1": 0.0, "2": 0.0}

    os.kill(pids[0], signal.SIGUSR1)  # worker 0's loop sleeps STALL seconds
    wait_until(lambda: by_worker(stalls).get("0") == 1.0, timeout=30, message="stall scraped")
    assert by_worker(stalls) == {"0": 1.0, "1": 0.0, "2": 0.0}
    seconds = by_worker('sum by (worker) (python_asyncio_loop_stall_seconds_total{worker="0"})')
    assert STALL * 0.7 <= seconds["0"] <= STALL * 5, seconds
    p99 = by_worker(
        "histogram_quantile(1, sum by (worker, le) "
        '(increase(python_asyncio_loop_lag_seconds_bucket{worker="0"}[1m])))'
    )
    assert p99["0"] > 0, p99  # the lag probe waited behind the stall too (or a tick)

    os.kill(pids[1], signal.SIGKILL)
    wait_until(
        lambda: set(by_worker(own)) == {"0", "2"} and set(pid_of()) == {"0", "2"},
        timeout=30,
        message="the killed worker's series stale",
    )
    assert master.reap(pids[1]) == -9
    new = master.fork("os", "loop")[0]
    wait_until(
        lambda: pid_of().get("1") == new and set(by_worker(own)) == {"0", "1", "2"},
        timeout=30,
        message="the replacement's series in slot 1",
    )
    gone = server.query('python_gc_collections_total{worker="1", generation="0"}')
    assert len(gone) == 1  # one series per slot, whoever holds it
    for pid in (pids[0], pids[2], new):
        os.kill(pid, signal.SIGTERM)
        assert master.reap(pid) == -15
