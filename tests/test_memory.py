"""Memory introspection against a real host that leaks on purpose (tests/hosts/leaky.py)."""

from __future__ import annotations

import json
import sys

import psutil
import pytest

from observer.errors import NotFound, PermissionDenied
from tests.helpers import Leaky, echo_ok
from tests.test_cli import observer

RECORD = "__main__.LeakyRecord"
HOSTILE = "__main__.Hostile"


def no_hostile_code_ran(host: Leaky) -> bool:
    return not [line for line in host.process.lines if "hostile" in line]


# ---------------------------------------------------------------- census and growth


def test_mem_json_contract_and_rss_is_the_real_one(leaky):
    out = observer("mem", leaky.address, *leaky.creds("viewer"), "--json", "--top", "40")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    rss = psutil.Process(leaky.process.proc.pid).memory_info().rss
    assert isinstance(data["rss"], int) and 0.5 * rss < data["rss"] < 2 * rss
    types = data["types"]
    assert types and all({"type", "count", "size"} <= set(t) for t in types)
    counts = [t["count"] for t in types]
    assert counts == sorted(counts, reverse=True)
    assert data["census"]["objects"] >= sum(counts)
    assert data["gc_collections"] and data["tracemalloc"]["tracing"] is False


def test_growth_puts_the_leaking_type_first_with_the_real_count(leaky):
    leaky.pause()
    base = observer("mem", leaky.address, *leaky.creds("operator"), "--baseline")
    assert base.returncode == 0, base.stderr
    assert "Baseline recorded" in base.stdout
    before = leaky.pause()
    leaky.leak_for(50)
    after = leaky.pause()
    out = observer("mem", leaky.address, *leaky.creds("viewer"), "--growth", "--json")
    assert out.returncode == 0, out.stderr
    growth = json.loads(out.stdout)["growth"]
    assert growth[0]["type"] == RECORD
    added = after["records"] - before["records"]
    assert added >= 50 * 20
    # the census is exact below two million objects, and the host is paused: no tolerance
    assert growth[0]["delta"] == added
    assert growth[0]["size_delta"] == added * after["record_size"]
    deltas = [g["delta"] for g in growth]
    assert deltas == sorted(deltas, reverse=True)
    # each tick caches one dict holding one list (both gc-tracked, so the census sees them);
    # their own types, as plain dicts and lists also come and go in the host and the agent
    grown = {g["type"]: g["delta"] for g in growth}
    cached = after["cache"] - before["cache"]
    assert grown["__main__.CacheEntry"] == cached and grown["__main__.TagList"] == cached
    assert no_hostile_code_ran(leaky)


def test_growth_without_baseline_says_what_to_do(leaky):
    out = observer("mem", leaky.address, *leaky.creds("viewer"), "--growth")
    assert out.returncode == 1
    assert "no census baseline yet" in out.stderr and "--baseline" in out.stderr


def test_census_counts_hostile_objects_without_running_their_code(leaky):
    with leaky.connect("viewer") as node:
        census = node.census(500)
        memory = node.memory()
    hostile = next(t for t in census.types if t.type == HOSTILE)
    assert hostile.count == 1000
    assert hostile.size > 0  # from the instance layout, not from its __sizeof__
    assert census.complete and not census.sampled and census.stride == 1
    assert census.seconds > 0 and census.hold_seconds <= census.seconds
    exposed = {e.name: e for e in memory.exposed}
    assert exposed["hostile"].objects == 1001 and exposed["hostile"].complete
    # 1000 bytes of 100 each, plus the list: the deep size is at least what the host made
    sample = exposed["sample"]
    assert sample.complete and sample.objects == 1001
    assert 1000 * sys.getsizeof(bytes(100)) < sample.size < 1000 * sys.getsizeof(bytes(100)) * 1.2
    assert no_hostile_code_ran(leaky)
    assert echo_ok(leaky.echo)


def test_memory_reports_os_and_gc_figures(leaky):
    with leaky.connect("viewer") as node:
        memory = node.memory()
    assert memory.rss > 0 and memory.vms >= memory.rss
    if memory.uss is None:
        assert "USS" in memory.note  # the fallback says why
    else:
        assert 0 < memory.uss <= memory.rss
    assert len(memory.gc_counts) == len(memory.gc_collections) == 3
    assert memory.gc_enabled and memory.allocated_blocks > 0
    assert "tracemalloc start" in memory.tracemalloc.hint


# ---------------------------------------------------------------- tracemalloc


def test_tracemalloc_not_running_says_how_to_start_it(leaky):
    with leaky.connect("viewer") as node:
        stats = node.tracemalloc_diff()
    assert not stats.status.tracing and stats.sites == ()
    assert "tracemalloc start" in stats.status.hint
    out = observer("mem", leaky.address, *leaky.creds("viewer"), "tracemalloc", "top")
    assert out.returncode == 0, out.stderr
    assert "not running" in out.stdout and "PYTHONTRACEMALLOC" in out.stdout


def test_viewer_cannot_start_tracemalloc_and_the_refusal_is_audited(leaky):
    with leaky.connect("viewer") as node, pytest.raises(PermissionDenied):
        node.tracemalloc_start(5)
    out = observer("mem", leaky.address, *leaky.creds("viewer"), "tracemalloc", "start")
    assert out.returncode == 1 and "operator" in out.stderr
    with leaky.connect("operator") as node:
        assert not node.memory().tracemalloc.tracing
        audit = node.audit()
    denied = [r for r in audit if r.action.startswith("tracemalloc start")]
    assert len(denied) == 2 and {r.result for r in denied} == {"denied"}
    assert {r.role for r in denied} == {"viewer"}


def test_tracemalloc_diff_points_at_the_leaking_line(leaky):
    with leaky.connect("operator") as node:
        started = node.tracemalloc_start(3)
        assert started.ok and "3 frames" in started.message
        leaky.pause()
        node.tracemalloc_baseline()
        before = leaky.pause()
        leaky.leak_for(50)
        after = leaky.pause()
        diff = node.tracemalloc_diff(10)
        by_traceback = node.tracemalloc_diff(5, group="traceback")
        status = node.memory().tracemalloc
        history = node.history()
        stopped = node.tracemalloc_stop()
        audit = node.audit()
    buffer_line = leaky.line_of("LEAK-BUFFER")
    top = diff.sites[0]
    assert (top.file, top.line) == (leaky.file, buffer_line)
    assert "bytes(CHUNK)" in top.source
    # what the host appended since the baseline, within 5% (allocator rounding aside)
    chunks = after["chunks"] - before["chunks"]
    expected = chunks * after["chunk_size"]
    assert expected * 0.95 <= top.size_diff <= expected * 1.05
    # plus at most one block: the buffer list's item array, allocated before tracemalloc
    # started (untraced), is traced from its first regrowth at this line on, which falls
    # into the leak window in some runs and not in others
    assert chunks <= top.count_diff <= chunks + 1
    lines = {(s.file, s.line) for s in diff.sites}
    assert (leaky.file, leaky.line_of("LEAK-RECORDS")) in lines
    assert (leaky.file, leaky.line_of("LEAK-CACHE")) in lines
    # grouped by traceback: the innermost frame is the leak, the caller is the tick loop
    first = by_traceback.sites[0]
    assert first.traceback[0] == f"{leaky.file}:{buffer_line}"
    assert len(first.traceback) >= 2 and "leaky.py" in first.traceback[1]
    assert status.tracing and status.frames == 3 and status.overhead > 0
    assert status.started_by.startswith("operator@") and status.slowdown
    assert any(s.traced for s in history.samples)  # traced memory joins the history ring
    assert stopped.ok and "stopped" in stopped.message
    actions = [(r.action, r.result) for r in audit]
    assert ("tracemalloc start 3 frames", "ok") in actions
    assert no_hostile_code_ran(leaky)
    assert echo_ok(leaky.echo)


def test_source_is_shown_for_loaded_modules_only(leaky):
    line = leaky.line_of("LEAK-BUFFER")
    with leaky.connect("viewer") as node:
        # a viewer reads source only near lines the agent showed it (tests/attack/test_secrets.py)
        with pytest.raises(NotFound, match="not near a line the agent reported"):
            node.source(leaky.file, line, context=2)
        assert any(t.name == "leaker" for t in node.tasks())  # its location is near LEAK-BUFFER
        text = node.source(leaky.file, line, context=2)
        assert len(text.lines) == 5 and "# LEAK-BUFFER" in text.lines[2]
    with leaky.connect("operator") as node:
        assert "# LEAK-BUFFER" in node.source(leaky.file, 1, context=200).lines[line - 1]
        with pytest.raises(NotFound):
            node.source("/etc/passwd", 1)
        with pytest.raises(NotFound):
            node.source(leaky.file.replace("leaky.py", "app.py"), 1)  # on disk, not loaded


def test_tracemalloc_cli_start_top_diff_stop(leaky):
    creds = leaky.creds("operator")
    start = observer(
        "mem", leaky.address, *creds, "tracemalloc", "start", "--frames", "2", "--keep"
    )
    assert start.returncode == 0, start.stderr
    assert "started with 2 frames" in start.stdout and "keeps running" in start.stdout
    again = observer("mem", leaky.address, *creds, "tracemalloc", "start")
    assert again.returncode == 1 and "already running" in again.stderr
    leaky.leak_for(25)
    top = observer("mem", leaky.address, *creds, "tracemalloc", "top", "--json")
    assert top.returncode == 0, top.stderr
    sites = json.loads(top.stdout)["sites"]
    assert sites and {"file", "line", "size", "count"} <= set(sites[0])
    diff = observer("mem", leaky.address, *creds, "tracemalloc", "diff", "--top", "5")
    assert diff.returncode == 0, diff.stderr
    assert "leaky.py" in diff.stdout and "SIZE DIFF" in diff.stdout
    stop = observer("mem", leaky.address, *creds, "tracemalloc", "stop")
    assert stop.returncode == 0 and "stopped" in stop.stdout
