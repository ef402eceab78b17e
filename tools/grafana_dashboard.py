"""Write docs/prometheus/grafana-dashboard.json: the runtime-observer dashboard for Grafana.

    python tools/grafana_dashboard.py        # regenerate after changing a panel here

Per host (the ``instance`` variable, several at once) and per worker (series keep the
``worker`` label a pre-fork master adds): CPU, memory, tasks, loop lag, stalls, GC,
threads and descriptors, control and chaos actions, restarts, and what the scrapes cost.
tests/test_prometheus.py checks that every metric named here is one a real host serves;
tests/test_dashboard_queries.py runs every expression here through a real Prometheus.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent.parent / "docs" / "prometheus" / "grafana-dashboard.json"
SEL = '{job=~"$job", instance=~"$instance", worker=~"$worker"}'
HOST = '{job=~"$job", instance=~"$instance"}'  # a master's own, about all its workers
WSEL = '{job=~"$job", instance=~"$instance", worker=~"$worker", worker!=""}'  # workers only
PID = "* on (job, instance, worker) group_left(pid) observer_worker_info"
RATE = "$__rate_interval"
WHO = "{{instance}} {{worker}}"

PANELS: list[tuple[str, str, list[tuple[str, str]], str]] = [
    # (title, unit, [(expr, legend)], description)
    ("CPU", "percentunit", [(f"rate(process_cpu_seconds_total{SEL}[{RATE}])", WHO)],
     "CPU time per second: 1 = one core busy."),
    ("Memory", "bytes", [
        (f"process_resident_memory_bytes{SEL}", f"RSS {WHO}"),
        (f"process_unique_memory_bytes{SEL}", f"USS {WHO}"),
        (f"python_tracemalloc_traced_bytes{SEL}", f"traced {WHO}"),
    ], "Resident and unique memory; traced memory while tracemalloc runs."),
    ("asyncio tasks", "short",
     [(f"sum by (instance, worker, loop) (python_asyncio_tasks{SEL})", f"{WHO} {{{{loop}}}}")],
     "Unfinished tasks per event loop."),
    ("Loop lag p99", "s", [(
        "histogram_quantile(0.99, sum by (instance, worker, loop, le) "
        f"(rate(python_asyncio_loop_lag_seconds_bucket{SEL}[{RATE}])))",
        f"{WHO} {{{{loop}}}}",
    )], "99th percentile of the time a callback waits to run on the loop."),
    ("Loop lag max", "s",
     [(f"python_asyncio_loop_lag_max_seconds{SEL}", f"{WHO} {{{{loop}}}}")],
     "Largest lag since the previous scrape, a probe still waiting included: stalls."),
    ("Loop stalls per minute", "short", [(
        "sum by (instance, worker, loop) "
        f"(increase(python_asyncio_loop_stalls_total{SEL}[1m]))",
        f"{WHO} {{{{loop}}}}",
    )], "Stalls the stall catcher caught per minute: the loop's heartbeat waited past the "
        "threshold (blocking calls, CPU-bound work, a thread holding the GIL). "
        "`observer stalls NODE` names the line."),
    ("Time stalled", "percentunit", [(
        "sum by (instance, worker, loop) "
        f"(rate(python_asyncio_loop_stall_seconds_total{SEL}[{RATE}]))",
        f"{WHO} {{{{loop}}}}",
    )], "Share of time each loop spent stalled."),
    ("GC collections", "ops", [(
        f"sum by (instance, worker, generation) (rate(python_gc_collections_total{SEL}[{RATE}]))",
        f"{WHO} gen {{{{generation}}}}",
    )], "Collections per second by generation."),
    ("GC pause", "percentunit", [(
        f"sum by (instance, worker) (rate(python_gc_pause_seconds_sum{SEL}[{RATE}]))",
        WHO,
    )], "Share of time the garbage collector held the interpreter."),
    ("Threads and descriptors", "short", [
        (f"process_threads{SEL}", f"threads {WHO}"),
        (f"process_open_fds{SEL}", f"fds {WHO}"),
    ], "OS threads and open file descriptors."),
    ("Control and chaos actions", "short", [(
        "sum by (instance, kind, result, chaos) "
        f"(increase(observer_agent_control_actions_total{SEL}[{RATE}]))",
        "{{instance}} {{kind}} {{result}} chaos={{chaos}}",
    )], "Cancels, raises, signals and chaos marks from observers; refused attempts too."),
    ("Restarts", "short",
     [(f"changes(process_start_time_seconds{SEL}[1h])", WHO)],
     "Times the process (or worker slot) started anew within the hour."),
    ("Observers and scrape cost", "short", [
        (f"observer_agent_sessions{SEL}", "sessions {{instance}}"),
        (f"observer_agent_metrics_scrape_duration_seconds{SEL} * 1000", "scrape ms {{instance}}"),
    ], "Observers connected, and what the previous scrape cost the host."),
    # a pre-fork master's workers: series labelled worker="<slot>", the pid joined from
    # observer_worker_info (a replacement keeps the slot, shows a new pid)
    ("Workers and exits", "short", [
        (f"observer_workers{HOST}", "workers {{instance}}"),
        (f"increase(observer_worker_exits_total{HOST}[5m])",
         "exits in 5m {{instance}}"),
        (f"increase(observer_worker_scrape_errors_total{HOST}[5m])",
         "left out of scrapes in 5m {{instance}}"),
        (f"sum by (instance, reason) (increase(observer_worker_agent_errors_total{HOST}[5m]))",
         "Python series left out in 5m {{instance}} {{reason}}"),
    ], "Workers a master serves series for, workers that exited, workers a scrape left "
       "out (its time budget spent), and workers whose own Python series a scrape lacked "
       "(their agent waking, hung, unreachable, or the series cap)."),
    ("Worker CPU by slot", "percentunit",
     [(f"rate(process_cpu_seconds_total{WSEL}[{RATE}]) {PID}",
       "{{instance}} worker {{worker}} pid {{pid}}")],
     "CPU per worker slot; the pid tells a replacement from its predecessor."),
    ("Worker memory by slot", "bytes", [
        (f"process_resident_memory_bytes{WSEL} {PID}", "RSS {{instance}} {{worker}} pid {{pid}}"),
        (f"process_unique_memory_bytes{WSEL} {PID}", "USS {{instance}} {{worker}} pid {{pid}}"),
    ], "Resident and unique memory per worker slot (USS: what the worker's exit frees)."),
    ("Worker loop lag by slot", "s", [
        ("histogram_quantile(0.99, sum by (job, instance, worker, loop, le) "
         f"(rate(python_asyncio_loop_lag_seconds_bucket{WSEL}[{RATE}]))) {PID}",
         "p99 {{instance}} worker {{worker}} {{loop}} pid {{pid}}"),
        (f"python_asyncio_loop_lag_max_seconds{WSEL} {PID}",
         "max {{instance}} worker {{worker}} {{loop}} pid {{pid}}"),
    ], "Each worker's own loop lag (asked of its agent at each scrape): p99 and the worst "
       "since the previous scrape."),
    ("Worker stalls by slot", "short", [
        ("sum by (job, instance, worker) "
         f"(increase(python_asyncio_loop_stalls_total{WSEL}[5m])) {PID}",
         "stalls in 5m {{instance}} worker {{worker}} pid {{pid}}"),
        ("sum by (job, instance, worker) "
         f"(increase(python_asyncio_loop_stall_seconds_total{WSEL}[5m])) {PID}",
         "seconds stalled in 5m {{instance}} worker {{worker}} pid {{pid}}"),
    ], "Stalls each worker's loops had in the last 5 minutes, and their time."),
    ("Worker tasks by slot", "short",
     [(f"sum by (job, instance, worker) (python_asyncio_tasks{WSEL}) {PID}",
       "{{instance}} worker {{worker}} pid {{pid}}")],
     "asyncio tasks per worker (all its loops)."),
]  # fmt: skip


def panel(index: int, title: str, unit: str, targets: list[tuple[str, str]], text: str):
    return {
        "id": index + 1,
        "type": "timeseries",
        "title": title,
        "description": text,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 12, "x": 12 * (index % 2), "y": 8 * (index // 2)},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [
            {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(targets)
        ],
    }


def variable(name: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "type": "query",
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "query": {"query": query, "refId": name},
        "definition": query,
        "multi": True,
        "includeAll": True,
        "refresh": 2,
        "current": {"text": "All", "value": "$__all"},
    }


def dashboard() -> dict[str, Any]:
    return {
        "title": "Python runtime (runtime-observer)",
        "uid": "runtime-observer",
        "tags": ["python", "runtime-observer"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                },
                variable("job", "label_values(observer_agent_build_info, job)"),
                variable(
                    "instance", 'label_values(observer_agent_build_info{job=~"$job"}, instance)'
                ),
                {  # All also matches a master's own series (no worker label)
                    **variable(
                        "worker",
                        'label_values(observer_worker_info{job=~"$job", instance=~"$instance"}'
                        ", worker)",
                    ),
                    "allValue": ".*",
                },
            ]
        },
        "panels": [panel(i, *spec) for i, spec in enumerate(PANELS)],
    }


if __name__ == "__main__":
    OUT.write_text(json.dumps(dashboard(), indent=2) + "\n")
    print(f"wrote {OUT}")
