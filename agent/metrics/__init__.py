"""Prometheus metrics served by the agent: an opt-in, read-only HTTP endpoint apart from
the rpyc port (``agent.start(metrics="127.0.0.1:9464")``), written with the stdlib.

- exposition: metric families and the strict text writer (Prometheus 0.0.4, OpenMetrics)
- registry: collectors merged into one exposition (the seam for workers' series)
- workers: a master's workers' series, labelled by a bounded slot
- runtime: the collectors (process_*, python_*, asyncio, agent)
- httpserve: the one-thread HTTP server; endpoint: the two put together
- promclient: our collectors in an app's own prometheus_client registry (optional)
"""
