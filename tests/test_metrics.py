"""The metrics endpoint: the strict writer, the registry's merge (the workers' seam), the
settings, and a real host scraped over HTTP while a real operator acts on it."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.metrics.config import resolve_metrics
from agent.metrics.exposition import (
    OPENMETRICS,
    ExpositionError,
    Family,
    add_histogram,
    counter,
    gauge,
    render,
    wants_openmetrics,
)
from agent.metrics.registry import Registry
from agent.security import ConfigError
from observer.demo.child import PARENT_ENV
from tests.helpers import HostProcess, echo_ok, line_value, wait_until
from tests.metricstools import prometheus_bin, promtool_check_metrics, samples, scrape, value

TOKEN = "m" * 8 + "Zq3vX9kLp2Rt7WbN4cHd6Fj"  # 31 base64url characters: ~180 bits


# ------------------------------------------------------------------ the writer


def test_the_writer_refuses_what_the_formats_do_not_allow():
    with pytest.raises(ExpositionError):
        Family("2bad", "gauge", "x")
    with pytest.raises(ExpositionError):
        Family("requests_total", "counter", "the family is named without _total")
    with pytest.raises(ExpositionError):
        Family("x", "enum", "no such type")
    with pytest.raises(ExpositionError):
        Family("x", "gauge", "a help text\r\n# TYPE y counter")
    family = Family("x", "gauge", "x")
    family.add(1, {"a": "1"})
    with pytest.raises(ExpositionError):
        family.add(2, {"a": "1"})  # the same series twice
    with pytest.raises(ExpositionError):
        family.add(2, {"__name__": "y"})
    with pytest.raises(ExpositionError):
        family.add(2, {"a": "x" * 300})
    with pytest.raises(ExpositionError):
        family.add(2, suffix="_total")
    with pytest.raises(ExpositionError):
        counter("c", "x", -1)
    with pytest.raises(ExpositionError):
        family.add("1", {"b": "1"})  # type: ignore[arg-type]


def test_the_series_cap_leaves_out_whole_families_and_counts_them():
    small = gauge("small", "one", 1)
    hist = Family("lat_seconds", "histogram", "a histogram never comes half")
    add_histogram(hist, (0.1, 1.0), [1, 2, 3], 5.0)  # 3 buckets + count + sum
    out = render([small, hist, gauge("after", "fits", 2)], openmetrics=False, max_series=4)
    assert out.series == 2 and out.dropped == 1
    assert b"lat_seconds" not in out.body and b"after 2" in out.body


def test_openmetrics_is_served_to_who_asks_for_it():
    prom = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
    assert wants_openmetrics(prom)
    assert not wants_openmetrics("text/plain")
    assert not wants_openmetrics("application/openmetrics-text;q=0")
    body = render([counter("c", "x", 3)], openmetrics=True, max_series=10).body.decode()
    assert body.endswith("# EOF\n") and "# TYPE c counter" in body and "c_total 3" in body


label_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
help_text = st.text(st.characters(exclude_categories=("Cs", "Cc")), max_size=40)


@settings(max_examples=60, deadline=None)
@given(values=st.lists(label_text, min_size=1, max_size=5, unique=True), help=help_text)
def test_any_label_value_and_help_text_round_trip_through_both_parsers(values, help):
    """Quotes, backslashes, newlines and any Unicode in a label value (and any printable
    text in a help text: control characters there are refused) come back as they were, in
    both formats (parsed by prometheus_client's parsers)."""
    parser = pytest.importorskip("prometheus_client.parser")
    om_parser = pytest.importorskip("prometheus_client.openmetrics.parser")
    family = Family("odd", "gauge", help)
    for i, v in enumerate(values):
        family.add(i + 0.5, {"v": v})
    for openmetrics, parse in ((False, parser), (True, om_parser)):
        text = render([family], openmetrics, 100).body.decode()
        (parsed,) = list(parse.text_string_to_metric_families(text))
        assert {s.labels["v"]: s.value for s in parsed.samples} == {
            v: i + 0.5 for i, v in enumerate(values)
        }
        assert parsed.documentation.strip() == help.strip()  # parsers trim the ends


# ------------------------------------------------------------------ the workers' seam


class _Fixed:
    def __init__(self, cpu: float) -> None:
        self.cpu = cpu

    def collect(self):
        hist = Family("lag_seconds", "histogram", "h")
        add_histogram(hist, (0.1,), [1, 1], 0.2)
        return [counter("process_cpu_seconds", "cpu", self.cpu), hist]


class _Broken:
    def collect(self):
        raise RuntimeError("a probe failed")


def test_a_master_adds_each_workers_series_under_a_bounded_worker_label():
    """The seam pre-fork workers will use: one collector per worker slot with
    ``labels={"worker": slot}``, merged with the master's own series into valid text;
    unregistering a worker drops its series; a failing collector is left out."""
    registry = Registry()
    registry.register(_Fixed(1.0))
    workers = [_Fixed(2.0), _Fixed(3.0)]
    for slot, worker in enumerate(workers):
        registry.register(worker, labels={"worker": str(slot)})
    registry.register(_Broken())
    text = render(registry.collect(), False, 1000).body.decode()
    assert value(text, "process_cpu_seconds_total", worker="0") == 2.0
    assert value(text, "process_cpu_seconds_total", worker="1") == 3.0
    assert text.count("# TYPE process_cpu_seconds_total") == 1
    assert value(text, "lag_seconds_bucket", worker="1", le="+Inf") == 2
    assert registry.errors == 1
    if prometheus_bin()[0] is not None:
        check = promtool_check_metrics(text)
        assert check.returncode == 0, check.stdout + check.stderr
    registry.unregister(workers[0])
    text = render(registry.collect(), False, 1000).body.decode()
    assert value(text, "process_cpu_seconds_total", worker="0") is None
    with pytest.raises(ExpositionError):
        registry.register(_Fixed(0), labels={"worker": "x" * 1000})


# ------------------------------------------------------------------ settings


def _resolve(address, env=None, **kw):
    args = {"public": None, "token": None, "tls": None, "has_tls_material": False}
    args.update(kw)
    return resolve_metrics(address, env=env or {}, **args)


def test_settings_refuse_a_public_address_without_the_flag_and_weak_tokens(tmp_path):
    assert _resolve(None) is None
    assert _resolve(None, {"OBSERVER_AGENT_METRICS": "127.0.0.1:9464"}).port == 9464
    with pytest.raises(ConfigError, match="not a loopback address"):
        _resolve("0.0.0.0:9464")
    assert _resolve("0.0.0.0:9464", public=True).public
    assert _resolve("0.0.0.0:0", {"OBSERVER_AGENT_METRICS_PUBLIC": "1"}).public
    with pytest.raises(ConfigError, match="too weak"):
        _resolve("127.0.0.1:0", token="secret")
    with pytest.raises(ConfigError, match="tls_cert"):
        _resolve("127.0.0.1:0", tls=True)
    with pytest.raises(ConfigError, match="host:port"):
        _resolve("nonsense")
    token_file = tmp_path / "metrics.token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    env = {
        "OBSERVER_AGENT_METRICS": "[::1]:0",
        "OBSERVER_AGENT_METRICS_TOKEN_FILE": str(token_file),
    }
    assert _resolve(None, env).token == TOKEN


def test_agent_start_refuses_a_public_metrics_address_before_binding_anything():
    import agent

    with pytest.raises(agent.ConfigError, match="not a loopback"):
        agent.start("127.0.0.1:0", metrics="0.0.0.0:0")
    assert agent.running() is None


# ------------------------------------------------------------------ a real host


@pytest.fixture
def metrics_host(make_host):
    def make(**env: str):
        host = make_host(env={"OBSERVER_AGENT_METRICS": "127.0.0.1:0", **env})
        host.metrics = line_value(host.process, "metrics")
        return host

    return make


def test_a_real_host_serves_plausible_process_python_asyncio_and_agent_series(metrics_host):
    host = metrics_host()
    # the lag probe runs every second: wait for two observations of the host's main loop
    text = wait_until(
        lambda: (
            (t := scrape(host.metrics)[2])
            and (value(t, "python_asyncio_loop_lag_seconds_count", loop="loop-1") or 0) >= 2
            and t
        ),
        message="two loop-lag observations",
    )
    assert 1e6 < value(text, "process_resident_memory_bytes") < 4e9
    assert value(text, "process_cpu_seconds_total") > 0
    assert 0 < value(text, "process_open_fds") < value(text, "process_max_fds")
    assert value(text, "process_threads") >= 5  # main, busy, victim, side loop, agent
    assert value(text, "python_asyncio_loops") >= 2  # the main loop and the side loop
    tasks = {ls: v for (n, ls), v in samples(text).items() if n == "python_asyncio_tasks"}
    assert sum(tasks.values()) >= 5 and len(tasks) >= 2
    assert 0 <= value(text, "python_asyncio_loop_lag_max_seconds", loop="loop-1") < 5
    assert value(text, "python_gc_collections_total", generation="0") >= 0
    assert value(text, "observer_agent_build_info", pid=str(host.process.proc.pid)) == 1
    for name in ("sleeper-1", "parent", "supervisor", "side-task", "busy-thread"):
        assert name not in text  # task and thread names never become labels
    check = promtool_check_metrics(text) if prometheus_bin()[0] else None
    if check is not None:
        assert check.returncode == 0, check.stdout + check.stderr
    status, headers, om = scrape(host.metrics, accept="application/openmetrics-text")
    assert status == 200 and headers["content-type"] == OPENMETRICS and om.endswith("# EOF\n")
    assert scrape(host.metrics, path="/")[0] == 404
    assert echo_ok(host.echo)


def test_control_actions_and_sessions_are_counted_by_kind_and_result(metrics_host):
    """What a dashboard shows of a chaos run: an operator's cancel (in a run and not),
    a viewer's refused attempt, and the sessions open."""
    host = metrics_host()
    operator = host.connect("operator")
    viewer = host.connect("viewer")
    try:
        worker = next(t.id for t in operator.tasks() if t.name == "worker")
        mark = host.process.mark()
        operator.cancel(worker)
        host.process.wait_line(r"^event: worker ended cancelled=True", start=mark)
        with pytest.raises(Exception, match="permission"):
            viewer.cancel(worker)
        text = wait_until(
            lambda: (
                (t := scrape(host.metrics)[2])
                and value(t, "observer_agent_control_actions_total", kind="cancel", result="denied")
                and t
            ),
            message="the denied cancel counted",
        )
        cancel = {"kind": "cancel", "chaos": "false"}
        assert value(text, "observer_agent_control_actions_total", result="ok", **cancel) == 1
        assert value(text, "observer_agent_control_actions_total", result="denied", **cancel) == 1
        assert value(text, "observer_agent_sessions") == 2
        assert value(text, "observer_agent_sessions_opened_total") >= 2
    finally:
        operator.close()
        viewer.close()


def test_a_bearer_token_guards_the_endpoint(metrics_host, tmp_path):
    token_file = tmp_path / "metrics.token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    host = metrics_host(OBSERVER_AGENT_METRICS_TOKEN_FILE=str(token_file))
    status, headers, _ = scrape(host.metrics)
    assert status == 401 and headers["www-authenticate"].startswith("Bearer")
    assert scrape(host.metrics, token=TOKEN[:-1] + "x")[0] == 401
    status, _, text = scrape(host.metrics, token=TOKEN)
    assert status == 200 and value(text, "process_resident_memory_bytes") > 0


def test_python_m_agent_run_serves_metrics_from_the_command_line(keys):
    proc = HostProcess(
        [
            sys.executable,
            "-m",
            "agent",
            "run",
            "--bind",
            "127.0.0.1:0",
            "--keys",
            str(keys.directory),
            "--metrics",
            "127.0.0.1:0",
            "--print-address",
            "--",
            "-m",
            "tests.hosts.child",  # sleeps until its parent, this test, is gone
        ],
        env={PARENT_ENV: str(os.getpid())},
    )
    try:
        address = line_value(proc, "metrics")
        status, _, text = scrape(address)
        assert status == 200 and value(text, "process_cpu_seconds_total") >= 0
    finally:
        proc.stop()


def test_python_m_agent_run_refuses_a_public_metrics_address(keys):
    done = subprocess.run(
        [sys.executable, "-m", "agent", "run", "--metrics", "0.0.0.0:0", "--", "x.py"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parent.parent,
    )
    assert done.returncode == 2 and "not a loopback address" in done.stderr


def test_prometheus_client_registry_gets_our_families_once(tmp_path):
    """An app that already uses prometheus_client: one call adds our families to its own
    registry, leaving the process_* / python_gc_* it already has to it."""
    prometheus_client = pytest.importorskip("prometheus_client")
    from agent.metrics import promclient

    registry = prometheus_client.CollectorRegistry()
    prometheus_client.ProcessCollector(registry=registry)
    bridge = promclient.register(registry)
    text = prometheus_client.generate_latest(registry).decode()
    assert text.count("# TYPE process_resident_memory_bytes gauge") == 1
    assert "python_gc_pause_seconds_bucket" in text and "process_threads " in text
    assert not math.isnan(value(text, "process_threads"))
    registry.unregister(bridge)


def test_observer_metrics_prints_the_exposition_over_the_observers_link(metrics_host, keys):
    host = metrics_host()
    creds = ["--token-file", str(keys.viewer_token), "--fingerprint", keys.fingerprint]
    done = subprocess.run(
        [sys.executable, "-m", "observer", "metrics", host.address, *creds],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parent.parent,
    )
    assert done.returncode == 0, done.stderr
    assert value(done.stdout, "observer_agent_build_info", pid=str(host.process.proc.pid)) == 1
    assert f"http://{host.metrics}/metrics" in done.stderr
    if prometheus_bin()[0] is not None:
        check = promtool_check_metrics(done.stdout)
        assert check.returncode == 0, check.stdout + check.stderr
    done = subprocess.run(
        [sys.executable, "-m", "observer", "metrics", host.address, *creds, "--openmetrics"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parent.parent,
    )
    assert done.returncode == 0 and done.stdout.endswith("# EOF\n")


def test_observer_metrics_says_when_the_endpoint_is_off(host, keys):
    creds = ["--token-file", str(keys.viewer_token), "--fingerprint", keys.fingerprint]
    done = subprocess.run(
        [sys.executable, "-m", "observer", "metrics", host.address, *creds],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parent.parent,
    )
    assert done.returncode != 0 and "metrics endpoint is off" in done.stderr


def _lag(collector, loop_id: str) -> tuple[float, float]:
    """(observations, max since the last scrape) of one loop, from a collection."""
    text = render(collector.collect(), False, 1000).body.decode()
    count = value(text, "python_asyncio_loop_lag_seconds_count", loop=loop_id) or 0
    return count, value(text, "python_asyncio_loop_lag_max_seconds", loop=loop_id) or 0.0


def test_a_stalled_loop_shows_in_the_max_at_once_and_a_look_does_not_reset_it():
    """A loop blocked by a synchronous call: while it is stuck, the max already reports
    the waiting probe's age; once the probe runs, its lag is observed; an observer's look
    (keep_max) leaves the max for the next scrape, which resets it."""
    import threading as _threading

    from agent.collect.tasks import TaskRegistry
    from agent.metrics.runtime import AsyncioCollector
    from tests.helpers import LoopThread

    loop = LoopThread("metrics-test-loop")
    release = _threading.Event()
    try:
        collector = AsyncioCollector(TaskRegistry())
        registry_loop = f"loop-{collector._tasks.loop_serial(loop.loop)}"
        loop.loop.call_soon_threadsafe(release.wait, 10)  # the loop is stuck in here
        collector.tick()  # the probe waits behind the stuck call
        collector.keep_max = True
        stalled = wait_until(
            lambda: (m := _lag(collector, registry_loop)[1]) >= 0.2 and m, message="max grows"
        )
        release.set()
        _count, worst = wait_until(
            lambda: (c := _lag(collector, registry_loop))[0] >= 1 and c, message="observed"
        )
        assert worst >= stalled  # the look kept it
        collector.keep_max = False
        assert _lag(collector, registry_loop)[1] >= stalled  # the scrape sees it ...
        assert _lag(collector, registry_loop)[1] < stalled  # ... and resets it
    finally:
        release.set()
        loop.stop()
