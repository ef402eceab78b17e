"""The census and tracemalloc grouping, property-tested in-process on generated populations."""

from __future__ import annotations

import gc
import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.collect.census import CensusTaker, c_sizeof, layout_size
from agent.collect.deepsize import deep_size
from agent.collect.tracing import _regroup

populations = st.lists(st.integers(min_value=0, max_value=3000), min_size=1, max_size=4)


def _classes(n: int, hostile: bool) -> list[type]:
    """Fresh classes with unique names; hostile ones fail in __sizeof__ and __repr__."""
    out = []
    for i in range(n):
        body: dict[str, object] = {}
        if hostile and i % 2:

            def bad(self: object) -> int:
                raise AssertionError("the census called a Python __sizeof__")

            body = {"__sizeof__": bad, "__repr__": bad}
        out.append(type(f"Pop{i}_{id(body)}", (), body))
    return out


@settings(max_examples=25, deadline=None)
@given(populations, populations, st.booleans())
def test_growth_is_exactly_what_was_added(first, added, hostile):
    classes = _classes(max(len(first), len(added)), hostile)
    keep = [cls() for cls, n in zip(classes, first, strict=False) for _ in range(n)]
    taker = CensusTaker()
    taker.take(0, baseline=True)
    more = [cls() for cls, n in zip(classes, added, strict=False) for _ in range(n)]
    census = taker.take(1000, growth=True)
    grown = {g.type: g for g in census.growth}
    for cls, n in zip(classes, added, strict=False):
        name = f"{cls.__module__}.{cls.__qualname__}"
        if n:
            assert grown[name].delta == n
            per_object = grown[name].size // grown[name].count
            assert per_object == (sys.getsizeof(cls()) if c_sizeof(cls) else layout_size(cls()))
        else:
            assert name not in grown
    assert census.complete and census.stride == 1
    del keep, more


@settings(max_examples=10, deadline=None)
@given(st.integers(min_value=2, max_value=7))
def test_sampled_census_estimates_within_tolerance(stride):
    (cls,) = _classes(1, False)
    keep = [cls() for _ in range(60_000)]
    objects = len(gc.get_objects())
    census = CensusTaker().take(1000, max_exact=objects // stride)
    row = next(t for t in census.types if t.type.endswith(cls.__qualname__))
    assert census.sampled and census.stride >= stride and "estimates" in census.note
    assert abs(row.count - 60_000) <= 0.1 * 60_000  # scaled from every stride-th object
    del keep


def test_time_budget_stops_and_says_so():
    keep = [[i] for i in range(200_000)]
    census = CensusTaker().take(10, budget=0.0)
    assert not census.complete and census.sampled
    assert census.scanned < census.objects and "stopped after" in census.note
    del keep


def test_one_census_at_a_time():
    taker = CensusTaker()
    with taker._lock:
        try:
            taker.take(1)
        except Exception as exc:
            assert "already running" in str(exc)
        else:
            raise AssertionError("a second census ran concurrently")


@given(st.recursive(st.integers() | st.binary(max_size=50), lambda c: st.lists(c, max_size=5)))
def test_deep_size_counts_every_distinct_object(value):
    size, objects, complete = deep_size(value)
    assert complete and objects >= 1 and size >= sys.getsizeof(value)


traces = st.dictionaries(
    st.lists(
        st.tuples(st.sampled_from(["a.py", "b.py", "c.py"]), st.integers(1, 5)),
        min_size=1,
        max_size=3,
    ).map(tuple),
    st.tuples(st.integers(0, 10_000), st.integers(1, 100)).map(list),
    max_size=30,
)


@given(traces)
def test_regrouping_keeps_the_totals(by_traceback):
    for group in ("lineno", "filename", "traceback"):
        grouped = _regroup(by_traceback, group)
        assert sum(v[0] for v in grouped.values()) == sum(v[0] for v in by_traceback.values())
        assert sum(v[1] for v in grouped.values()) == sum(v[1] for v in by_traceback.values())
    lines = _regroup(by_traceback, "lineno")
    assert all(len(key) == 1 for key in lines)
