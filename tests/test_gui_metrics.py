"""The Cluster tab opens a node's metrics URL (what the node itself says it is), against
real agent processes; the browser is the only part replaced (a list of opened URLs)."""

from __future__ import annotations

import pytest

pytest.importorskip("PyQt6")
pytest.importorskip("pytestqt")

from tests.helpers import line_value
from tests.metricstools import scrape, value
from tests.test_gui import WAIT, spec
from tests.test_gui_cluster import open_cluster, shown


def test_the_cluster_tab_opens_a_nodes_metrics_url(qtbot, window, make_host, keys):
    with_metrics = make_host(env={"OBSERVER_AGENT_METRICS": "127.0.0.1:0"})
    metrics_at = line_value(with_metrics.process, "metrics")
    without = make_host()
    open_cluster(qtbot, window, [spec(h.address, keys) for h in (with_metrics, without)])
    first, second = window.links
    qtbot.waitUntil(lambda: shown(window, first) == shown(window, second) == "up", timeout=WAIT)
    opened: list[str] = []
    window.cluster.open_url = lambda url: opened.append(url.toString())

    window.cluster.open_metrics(first)
    qtbot.waitUntil(lambda: bool(opened), timeout=WAIT)
    assert opened == [f"http://{metrics_at}/metrics"]
    status, _, text = scrape(metrics_at)  # the URL really serves the node's metrics
    assert status == 200 and value(text, "process_resident_memory_bytes") > 0
    assert f"opened http://{metrics_at}/metrics" in window.cluster.status_text()

    window.cluster.open_metrics(second)
    qtbot.waitUntil(lambda: "no metrics URL" in window.cluster.status_text(), timeout=WAIT)
    assert "metrics endpoint is off" in window.cluster.status_text()
    assert len(opened) == 1
