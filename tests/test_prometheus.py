"""The metrics checked by a real Prometheus server (Debian's package, installed by
tools/install_prometheus.sh when missing; skipped with the reason where it cannot be).

A Prometheus on loopback, on a free port the test picks, scrapes real hosts every second
(one plain, one over TLS with a bearer token); the test asks its HTTP API until the
series are there, with the right labels and plausible values, through a kill and a
restart of a host. The shipped configuration, rules and dashboard are checked too.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from urllib.request import urlopen

import pytest

from tests.helpers import ROOT, line_value, wait_until
from tests.metricstools import prometheus_bin, scrape, value

DOCS = ROOT / "docs" / "prometheus"
TOKEN = "p" * 4 + "Qx7Rb2Kz9LmW4tYc8Nv3Hd5Fg"


@pytest.fixture(scope="module")
def bindir() -> Path:
    directory, why = prometheus_bin()
    if directory is None:
        pytest.skip(f"no prometheus: {why}")
    return directory


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Prometheus:
    """A real Prometheus server on loopback, stopped (and its data removed) at the end."""

    def __init__(self, bindir: Path, workdir: Path, scrape_configs: list[dict[str, Any]]):
        self.workdir = workdir
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "900ms"},
            "scrape_configs": scrape_configs,
        }
        self.config = workdir / "prometheus.yml"
        self.config.write_text(json.dumps(config))  # YAML is a superset of JSON
        self.proc: subprocess.Popen[str] | None = None
        for _attempt in range(5):  # another process may take the free port first
            self.port = _free_port()
            self.proc = subprocess.Popen(
                [
                    str(bindir / "prometheus"),
                    f"--config.file={self.config}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=subprocess.DEVNULL,
                stderr=open(workdir / "prometheus.log", "a"),
                text=True,
            )
            proc = self.proc
            wait_until(
                lambda p=proc: p.poll() is not None or self._ready(),
                timeout=60,
                message="prometheus ready or exited",
            )
            if proc.poll() is None:
                return
        raise AssertionError(f"prometheus did not start: {self.log()}")

    def _ready(self) -> bool:
        with urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as reply:
            return reply.status == 200

    def log(self) -> str:
        return (self.workdir / "prometheus.log").read_text()[-2000:]

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urlencode({"query": promql})
        with urlopen(url, timeout=5) as reply:
            answer = json.load(reply)
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def values(self, promql: str) -> dict[str, float]:
        """instance -> value of an instant query."""
        return {r["metric"].get("instance", ""): float(r["value"][1]) for r in self.query(promql)}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def prometheus(bindir: Path, tmp_path: Path) -> Iterator[Any]:
    started: list[Prometheus] = []

    def start(scrape_configs: list[dict[str, Any]]) -> Prometheus:
        server = Prometheus(bindir, tmp_path, scrape_configs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def test_a_real_prometheus_scrapes_real_hosts_through_a_kill_and_a_restart(
    prometheus, make_host, keys, tmp_path
):
    plain = make_host(env={"OBSERVER_AGENT_METRICS": "127.0.0.1:0"})
    plain_at = line_value(plain.process, "metrics")
    token_file = tmp_path / "metrics.token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    secure_env = {
        "OBSERVER_AGENT_METRICS": "127.0.0.1:0",
        "OBSERVER_AGENT_METRICS_TLS": "1",
        "OBSERVER_AGENT_METRICS_TOKEN_FILE": str(token_file),
    }
    secure = make_host(env=secure_env)
    secure_at = line_value(secure.process, "metrics")
    server = prometheus(
        [
            {"job_name": "python", "static_configs": [{"targets": [plain_at]}]},
            {
                "job_name": "python-tls",
                "scheme": "https",
                "authorization": {"type": "Bearer", "credentials_file": str(token_file)},
                "tls_config": {"ca_file": str(keys.cert), "server_name": "localhost"},
                "static_configs": [{"targets": [secure_at]}],
            },
        ]
    )
    up = wait_until(
        lambda: (v := server.values("up")) and v.get(plain_at) == 1 and v.get(secure_at) == 1 and v,
        timeout=30,
        message="both targets up",
    )
    assert set(up) == {plain_at, secure_at}, server.log()

    # series with plausible values, from both hosts
    wait_until(
        lambda: len(server.query("python_asyncio_loop_lag_seconds_count")) >= 4,
        timeout=30,
        message="loop lag histograms of both hosts' two loops",
    )
    rss = server.values("process_resident_memory_bytes")
    assert all(1e6 < v < 4e9 for v in rss.values()) and len(rss) == 2
    tasks = server.query('python_asyncio_tasks{loop="loop-1"}')
    assert {r["metric"]["instance"] for r in tasks} == {plain_at, secure_at}
    assert all(float(r["value"][1]) >= 3 for r in tasks)
    p99 = server.values(
        "histogram_quantile(0.99, sum by (instance, le) "
        "(rate(python_asyncio_loop_lag_seconds_bucket[30s])))"
    )
    assert all(0 <= v < 1.0 for v in p99.values()), p99
    build = server.query("observer_agent_build_info")
    pids = {r["metric"]["instance"]: r["metric"]["pid"] for r in build}
    assert pids == {plain_at: str(plain.process.proc.pid), secure_at: str(secure.process.proc.pid)}

    # an operator's cancel shows as a control action of that host only
    node = plain.connect("operator")
    try:
        worker = next(t.id for t in node.tasks() if t.name == "worker")
        node.cancel(worker)
    finally:
        node.close()
    actions = wait_until(
        lambda: server.values('observer_agent_control_actions_total{kind="cancel",result="ok"}'),
        timeout=30,
        message="the cancel scraped",
    )
    assert actions == {plain_at: 1.0}

    # kill the plain host: its target goes down; a new process on the same port comes
    # back up with a new pid and start time
    started_before = server.values("process_start_time_seconds")[plain_at]
    plain.process.proc.kill()
    plain.process.proc.wait(10)
    wait_until(lambda: server.values("up").get(plain_at) == 0, timeout=30, message="down")
    again = make_host(env={"OBSERVER_AGENT_METRICS": plain_at})
    assert line_value(again.process, "metrics") == plain_at
    wait_until(
        lambda: server.values("process_start_time_seconds").get(plain_at, 0) > started_before,
        timeout=30,
        message="the restarted process scraped",
    )
    build = server.query(f'observer_agent_build_info{{instance="{plain_at}"}}')
    assert [r["metric"]["pid"] for r in build] == [str(again.process.proc.pid)]
    assert server.values(f'changes(process_start_time_seconds{{instance="{plain_at}"}}[5m])') == {
        plain_at: 1.0
    }


def test_promtool_accepts_the_exposition_of_a_real_host(bindir, make_host):
    host = make_host(env={"OBSERVER_AGENT_METRICS": "127.0.0.1:0"})
    _, _, text = scrape(line_value(host.process, "metrics"))
    assert value(text, "process_cpu_seconds_total") is not None
    check = subprocess.run(
        [str(bindir / "promtool"), "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_shipped_config_rules_and_rule_tests_pass_promtool(bindir, tmp_path):
    copy = tmp_path / "prometheus"
    shutil.copytree(DOCS, copy)
    (copy / "secrets").mkdir()
    for name in ("observer-metrics.token", "agent.crt"):  # stand-ins for the real files
        (copy / "secrets" / name).write_text("stand-in\n")
    promtool = str(bindir / "promtool")
    for args in (
        ["check", "config", str(copy / "prometheus.yml")],
        ["check", "rules", str(copy / "alerts.yml")],
        ["test", "rules", str(copy / "alerts_test.yml")],
    ):
        done = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"promtool {' '.join(args)}: {done.stdout}{done.stderr}"


def _names(expr: str) -> set[str]:
    """Metric names an expression reads (ours: process_, python_, observer_agent_)."""
    return set(re.findall(r"\b((?:process|python|observer_agent)_[a-z0-9_]+)", expr))


def test_every_series_the_dashboard_and_rules_read_is_served(make_host):
    """Each metric name in the Grafana dashboard and the alert rules is one a real host
    serves: a renamed metric breaks this test, not a dashboard in production."""
    host = make_host(env={"OBSERVER_AGENT_METRICS": "127.0.0.1:0"})
    address = line_value(host.process, "metrics")
    node = host.connect("operator")
    try:  # a control action, so the actions counter has a sample; tracemalloc on
        node.cancel(next(t.id for t in node.tasks() if t.name == "worker"))
        node.tracemalloc_start(1)
        text = wait_until(
            lambda: (
                (t := scrape(address)[2])
                and "python_asyncio_loop_lag_seconds_bucket" in t
                and "python_tracemalloc_traced_bytes" in t
                and t
            ),
            message="a lag histogram and traced memory",
        )
    finally:
        node.close()
    served = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"}
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
    exprs = [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]
    assert len(exprs) >= 8
    rules = (DOCS / "alerts.yml").read_text()
    wanted = set().union(*(_names(e) for e in [*exprs, rules]))
    assert wanted - served == set()
