"""Every PromQL expression the shipped Grafana dashboard and alert rules hold, run by a real
Prometheus against live agents: the closest check to importing the dashboard into a live
Grafana (Grafana is not packaged in Debian, so it cannot be installed here the way
Prometheus is).

Grafana's variables are replaced as its "All" choice does (``.*``) and ``$__rate_interval``
by a window the 1 s scrapes fill quickly. Every expression must be accepted (no parse or
evaluation error); the core panels must return series from the live master and its
workers; the template variables' ``label_values`` must find values.
"""

from __future__ import annotations

import json
import os
import re
import signal
from typing import Any

from tests.helpers import wait_until
from tests.test_forks import forker  # noqa: F401  (the fixture)
from tests.test_metrics_worker_agents import metrics_of, wait_own
from tests.test_prometheus import DOCS, bindir, prometheus  # noqa: F401  (fixtures)

RATE_WINDOW = "10s"
# panels whose every expression must return series from a master with loop workers
CORE = {
    "CPU",
    "Memory",
    "asyncio tasks",
    "Loop lag p99",
    "Loop lag max",
    "Loop stalls per minute",
    "Time stalled",
    "GC collections",
    "GC pause",
    "Threads and descriptors",
    "Restarts",
    "Observers and scrape cost",
    "Workers and exits",
    "Worker CPU by slot",
    "Worker memory by slot",
    "Worker loop lag by slot",
    "Worker stalls by slot",
    "Worker tasks by slot",
}


def grafana_to_promql(expr: str) -> str:
    """An expression as Grafana sends it with every variable on "All"."""
    expr = expr.replace("$__rate_interval", RATE_WINDOW)
    return re.sub(r"\$(job|instance|worker)\b", ".*", expr)


def label_values(query: str) -> tuple[str, str]:
    """``label_values(SELECTOR, LABEL)`` (Grafana's) as a PromQL query and the label."""
    match = re.fullmatch(r"label_values\((.*), *(\w+)\)", query)
    assert match, query
    return f"group by ({match.group(2)}) ({grafana_to_promql(match.group(1))})", match.group(2)


def rule_exprs(text: str) -> list[str]:
    """The ``expr`` of every rule in a rules file (one line, or a ``|`` block; no YAML
    library in the test environment)."""
    exprs: list[str] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        key, _, rest = line.strip().partition(":")
        if key != "expr":
            continue
        if rest.strip() != "|":
            exprs.append(rest.strip())
            continue
        indent = len(line) - len(line.lstrip())
        block = []
        for more in lines[i + 1 :]:
            if more.strip() and len(more) - len(more.lstrip()) <= indent:
                break
            block.append(more.strip())
        exprs.append(" ".join(block).strip())
    return exprs


def test_every_dashboard_and_alert_expression_runs_on_a_real_prometheus(
    forker,  # noqa: F811
    prometheus,  # noqa: F811
):
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
    panels = {p["title"]: [t["expr"] for t in p["targets"]] for p in dashboard["panels"]}
    assert set(panels) >= CORE, CORE - set(panels)
    rules = rule_exprs((DOCS / "alerts.yml").read_text())
    assert len(rules) >= 8
    variables = [v for v in dashboard["templating"]["list"] if v["type"] == "query"]

    master = forker("--workers", "--metrics", "127.0.0.1:0")
    address = metrics_of(master)
    pids = [master.fork("os", "loop")[0] for _ in range(2)]
    wait_own(address, {"0", "1"})
    server = prometheus([{"job_name": "python", "static_configs": [{"targets": [address]}]}])
    wait_until(
        lambda: server.query('python_asyncio_loop_stalls_total{worker="1"}'),
        timeout=30,
        message="the worker's stall counter scraped at 0",
    )
    os.kill(pids[1], signal.SIGUSR1)  # a stall, so the stall panels have one to show
    wait_until(
        lambda: (
            server.query('increase(python_asyncio_loop_stalls_total{worker="1"}[1m]) > 0')
            and server.query(f"rate(process_cpu_seconds_total[{RATE_WINDOW}])")
        ),
        timeout=40,
        message="the stall scraped and a rate window's worth of scrapes",
    )
    try:
        results: dict[str, list[Any]] = {}
        for expr in [e for exprs in panels.values() for e in exprs] + rules:
            results[expr] = server.query(grafana_to_promql(expr))  # asserts "success"
        empty = [
            (title, expr)
            for title, exprs in panels.items()
            if title in CORE
            for expr in exprs
            if not results[expr] and "tracemalloc" not in expr
        ]

        def retry_empty() -> bool:
            return not [e for _t, e in empty if not server.query(grafana_to_promql(e))]

        if empty:  # a window's edge: give the rates one more scrape interval or so
            wait_until(retry_empty, timeout=20, message=f"core panels with no series: {empty}")
        workers = {
            r["metric"].get("worker")
            for r in server.query(grafana_to_promql(panels["Worker loop lag by slot"][0]))
        }
        assert workers == {"0", "1"}
        stalled = server.query(grafana_to_promql(panels["Worker stalls by slot"][0]))
        assert {r["metric"]["worker"]: float(r["value"][1]) > 0 for r in stalled}["1"]
        for variable in variables:
            promql, label = label_values(variable["query"]["query"])
            found = {r["metric"].get(label) for r in server.query(promql)}
            assert found and None not in found, (variable["name"], promql)
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
            assert master.reap(pid) == -15
