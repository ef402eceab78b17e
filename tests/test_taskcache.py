"""The observer's task cache turns the agent's compact rows into TaskInfo records: the
fast column-by-column conversion gives exactly the records a plain row-by-row reading of
the wire format gives, and anything malformed is a WireError, never another exception."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.codec import WireError
from agent.schema import TaskInfo, TaskListing, TaskSite
from observer.taskcache import TaskCache

NOW = 1_000_000.0
SITES = (TaskSite("main", "main", "app.py"), TaskSite("work", "sleep", "tasks.py"))


def listing(count: int, base: int = 0, removed: tuple[int, ...] = ()) -> TaskListing:
    return TaskListing(
        epoch=1,
        version=base + 1,
        base=base,
        time=NOW,
        sites_from=0 if base == 0 else len(SITES),
        sites=SITES if base == 0 else (),
        removed=removed,
        current=(),
        total=count,
        truncated=False,
        count=count,
        listing=1,
        rows=(),
    )


def expected(row: list, now: float = NOW) -> TaskInfo:
    """What one wire row (agent.schema.TaskRow's fields in order) means, read plainly."""
    serial, name, state, site, line, loop, seen, awaiting, exact, error = row[:10]
    where = SITES[site]
    age = now - seen
    return TaskInfo(
        id=f"task-{serial}",
        name=name,
        state=state,
        coroutine=where.coroutine,
        function=where.function,
        file=where.file,
        line=line,
        loop=f"loop-{loop}" if loop else "",
        age=int(age * 1000.0 + 0.5) / 1000.0 if age > 0 else 0.0,
        awaiting=tuple(f"task-{s}" for s in awaiting),
        current=False,
        age_exact=exact,
        error=error,
    )


def good_row(serial: int) -> st.SearchStrategy[list]:
    return st.tuples(
        st.just(serial),
        st.text(max_size=8),
        st.sampled_from(["pending", "done", "cancelled"]),
        st.integers(0, len(SITES) - 1),
        st.integers(0, 10_000),
        st.integers(0, 3),
        st.floats(NOW - 1e5, NOW + 1) | st.integers(int(NOW) - 1000, int(NOW)),
        st.lists(st.integers(1, 50), max_size=3),
        st.booleans(),
        st.sampled_from(["", "ValueError"]),
        st.lists(st.integers(), max_size=2),  # trailing fields a newer agent may send
    ).map(lambda t: list(t[:10]) + t[10])


@st.composite
def good_rows(draw: st.DrawFn) -> list[list]:
    serials = draw(st.lists(st.integers(1, 10**9), unique=True, max_size=40))
    return [draw(good_row(s)) for s in serials]


def by_plain_reading(rows: list[list], now: float = NOW) -> tuple[TaskInfo, ...]:
    """Pending tasks first, each part in serial order."""
    infos = sorted((expected(r, now) for r in rows), key=lambda t: int(t.id[5:]))
    pending = [t for t in infos if t.state == "pending"]
    return tuple(pending + [t for t in infos if t.state != "pending"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(good_rows())
def test_rows_become_the_records_a_plain_reading_gives(rows):
    want = by_plain_reading(rows)
    cache = TaskCache()
    cache.apply(listing(len(rows)), [list(r) for r in rows])
    got = cache.tasks(NOW)
    assert got == want
    assert all(type(t) is TaskInfo for t in got)
    assert [list(vars(t).items()) for t in got] == [list(vars(t).items()) for t in want]
    assert all(type(t.age) is float for t in got)
    assert cache.tasks(NOW + 2.5) == by_plain_reading(rows, NOW + 2.5)  # re-aged copies


json_cells = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=3)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_spoiled_row_is_a_wire_error_and_nothing_else(data):
    rows = data.draw(good_rows().filter(bool))
    index = data.draw(st.integers(0, len(rows) - 1))
    how = data.draw(st.sampled_from(["cell", "awaiting", "short", "row", "site"]))
    row = rows[index]
    if how == "cell":
        column = data.draw(st.integers(0, 9))
        row[column] = data.draw(json_cells | st.lists(json_cells, max_size=2))
    elif how == "awaiting":
        row[7] = [*row[7], data.draw(json_cells.filter(lambda v: type(v) is not int))]
    elif how == "short":
        del row[data.draw(st.integers(0, 9)) :]
    elif how == "row":
        rows[index] = data.draw(json_cells)
    else:
        row[3] = data.draw(st.sampled_from([-1, len(SITES), 10**6]))
    cache = TaskCache()
    try:
        cache.apply(listing(len(rows)), rows)
    except WireError:
        return
    # the spoiled value happened to be a valid one (an int where an int goes, ...)
    assert cache.tasks(NOW) == by_plain_reading(rows)


def test_a_delta_replaces_changed_rows_and_drops_gone_ones_in_place():
    cache = TaskCache()
    first = [[i, f"t{i}", "pending", 0, i, 1, NOW - 1, [], True, ""] for i in (1, 2, 3)]
    cache.apply(listing(3), first)
    changed = [[3, "t3", "done", 1, 9, 1, NOW - 1, [1], True, ""]]
    cache.apply(listing(1, base=1, removed=(2,)), changed)
    got = cache.tasks(NOW)
    assert [t.id for t in got] == ["task-1", "task-3"]
    assert got[1] == expected([3, "t3", "done", 1, 9, 1, NOW - 1, [1], True, ""])
    with pytest.raises(WireError, match="names site 5 of 2"):
        cache.apply(listing(1, base=2), [[4, "t4", "pending", 5, 1, 1, NOW, [], False, ""]])


def test_a_listing_that_names_a_task_twice_is_a_wire_error():
    """A hostile or broken agent sends two rows for one serial (hypothesis found the
    cache keeping the second silently): the listing is refused, complete or delta."""
    twice = [[i, f"t{i}", "pending", 0, i, 1, NOW - 1, [], True, ""] for i in (2, 1, 2)]
    with pytest.raises(WireError, match="task row 2 comes twice"):
        TaskCache().apply(listing(3), [list(r) for r in twice])
    cache = TaskCache()
    cache.apply(listing(1), [list(twice[1])])
    with pytest.raises(WireError, match="task row 2 comes twice"):
        cache.apply(listing(2, base=1), [list(twice[0]), list(twice[2])])
