"""Our collectors in an application's own prometheus_client registry, in one call:

    import agent.metrics.promclient
    agent.metrics.promclient.register()          # into prometheus_client.REGISTRY

Only this module imports prometheus_client (the ``metrics`` extra); the agent never does.
With a running agent that serves metrics, the app's registry gets the very families the
agent's endpoint serves (loop lag included); otherwise the process, Python, GC-pause and
asyncio-task families. Families the registry already has (prometheus_client's default
``process_*``, ``python_gc_*``, ``python_info``) are left to it, so nothing is doubled.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from agent.metrics.exposition import Family
from agent.metrics.registry import Registry


class _Bridge:
    """A prometheus_client collector over our Registry."""

    def __init__(self, source: Registry, skip: frozenset[str]) -> None:
        self._source = source
        self._skip = skip

    def _families(self) -> Iterable[Family]:
        return [f for f in self._source.collect() if f.name not in self._skip]

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import Metric

        for family in self._families():
            metric = Metric(family.name, family.help, family.type)
            for s in family.samples:
                metric.add_sample(family.name + s.suffix, dict(s.labels), s.value)
            yield metric

    def describe(self) -> list[Any]:  # what register() checks for clashes
        from prometheus_client.core import Metric

        return [Metric(f.name, f.help, f.type) for f in self._families()]


def _standalone() -> Registry:
    from agent.collect.tasks import TaskRegistry
    from agent.metrics.runtime import AsyncioCollector, GcTimer, ProcessCollector, PythonCollector

    timer = GcTimer()
    timer.install()
    registry = Registry()
    registry.register(ProcessCollector())
    registry.register(PythonCollector(timer))
    registry.register(AsyncioCollector(TaskRegistry()))  # task counts; lag needs the agent
    return registry


def register(registry: Any = None, source: Registry | None = None) -> Any:
    """Register our families in ``registry`` (prometheus_client.REGISTRY by default);
    returns the collector (pass it to ``registry.unregister`` to undo)."""
    from prometheus_client import REGISTRY

    target = REGISTRY if registry is None else registry
    if source is None:
        import agent

        server = agent.running()
        endpoint = getattr(server, "metrics", None) if server is not None else None
        source = endpoint.registry if endpoint is not None else _standalone()
    taken: set[str] = set()
    for family in source.collect():
        first = family.samples[0] if family.samples else None
        name = family.name + (first.suffix if first else "")
        if first is not None and target.get_sample_value(name, dict(first.labels)) is not None:
            taken.add(family.name)
    bridge = _Bridge(source, frozenset(taken))
    target.register(bridge)
    return bridge
