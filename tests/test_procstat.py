"""agent.collect.procstat and the children it describes, held to psutil's answers.

A master describes its workers at every refresh of its tree from three /proc reads each
instead of psutil's probes; what it says must be what psutil says. Real children here:
sleeping, busy, stopped, a zombie, one whose kernel name holds spaces and parentheses
and one whose name is longer than the kernel keeps.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

import psutil
import pytest

from agent.collect import procstat
from agent.collect.children import ChildTracker

pytestmark = pytest.mark.skipif(
    procstat.read_stat(os.getpid()) is None, reason="no /proc/PID/stat here"
)


CHILD = r"""
import os, signal, sys
kind = sys.argv[1]
if kind == "odd-name":
    with open("/proc/self/comm", "w") as fh:
        fh.write("a) b (c")
if kind == "long-name":
    with open("/proc/self/comm", "w") as fh:
        fh.write("procstat-long-name-child")  # the kernel keeps 15 characters
sys.stdout.write("x")
sys.stdout.flush()
if kind == "busy":
    while True:
        pass
if kind == "zombie":
    os._exit(0)
while True:
    signal.pause()
"""


STATES = {  # the kernel state each kind of child settles in (others sleep in pause())
    "busy": psutil.STATUS_RUNNING,
    "stopped": psutil.STATUS_STOPPED,
    "zombie": psutil.STATUS_ZOMBIE,
}


def _child(kind: str, *extra: str) -> subprocess.Popen[bytes]:
    """A child (a fresh interpreter: no fork of this threaded process) that does
    ``kind`` until killed, once it is doing it (``extra``: more arguments it ignores)."""
    argv = [sys.executable, "-c", CHILD, kind, *extra]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.read(1) == b"x"
    if kind == "stopped":
        os.kill(proc.pid, signal.SIGSTOP)
    # the kernel's state, read until it is so: a child that has written "x" may still
    # be on its way to pause() (a CI run saw 'running' for one that had not got there)
    want = STATES.get(kind, psutil.STATUS_SLEEPING)
    watched, deadline = psutil.Process(proc.pid), time.monotonic() + 30
    while watched.status() != want:
        assert time.monotonic() < deadline, f"the {kind} child never got to {want}"
        os.sched_yield()
    return proc


def _end(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


T = TypeVar("T")
MAX_READS = 50  # tries for a moment the children's memory and state held still

KINDS = ("sleeping", "busy", "stopped", "zombie", "odd-name", "long-name")


@pytest.fixture(scope="module")
def children() -> Iterator[dict[str, int]]:
    procs = {kind: _child(kind) for kind in KINDS}
    yield {kind: proc.pid for kind, proc in procs.items()}
    for proc in procs.values():
        _end(proc)


def test_the_state_words_are_psutils():
    from psutil import _pslinux

    assert procstat.STATUSES == _pslinux.PROC_STATUSES


def _facts(pid: int) -> tuple[int, str] | None:
    """psutil's resident bytes and state for ``pid`` (None once it is gone)."""
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            return proc.memory_info().rss, proc.status()
    except psutil.NoSuchProcess:
        return None


def _between_still_reads(pids: Iterable[int], read: Callable[[], T]) -> T:
    """``read()`` taken while psutil's resident size and state of every one of ``pids``
    read the same just before and just after it. An idle child's memory still moves now
    and then (the kernel folds its pages into larger ones in the background: +64 KiB
    between two reads once), and a sleeper can be woken for a moment; a comparison with
    psutil means something only when they held still."""
    pids = list(pids)
    for _ in range(MAX_READS):
        before = [_facts(pid) for pid in pids]
        value = read()
        if [_facts(pid) for pid in pids] == before:
            return value
    raise AssertionError(f"the children's memory never held still over {MAX_READS} reads")


@pytest.mark.parametrize("kind", KINDS)
def test_a_childs_facts_are_what_psutil_says(children, kind):
    pid = children[kind]
    proc = psutil.Process(pid)
    stat, facts = _between_still_reads([pid], lambda: (procstat.read_stat(pid), _facts(pid)))
    argv = procstat.read_cmdline(pid)
    assert stat is not None and argv is not None and facts is not None
    rss, status = facts
    with proc.oneshot():
        assert procstat.full_name(stat.comm, argv) == proc.name()
        assert stat.ppid == proc.ppid() == os.getpid()
        assert stat.status == status == STATES.get(kind, psutil.STATUS_SLEEPING)
        assert stat.started / procstat.TICKS + psutil.boot_time() == proc.create_time()
        if kind != "busy":  # a busy child's memory and CPU move between the two reads
            assert stat.rss == rss
            times = proc.cpu_times()
            assert stat.cpu == pytest.approx(times.user + times.system, abs=1e-6)
    expected = [] if kind == "zombie" else proc.cmdline()
    assert argv == expected
    if kind == "odd-name":
        assert stat.comm == "a) b (c"
    if kind == "long-name":
        assert len(stat.comm) == 15 and stat.comm == "procstat-long-n"


def test_a_command_line_of_several_pages_is_read_whole():
    # procfs may hand a long cmdline over a page at a time: every argument comes back,
    # the one that straddles a page boundary included
    extra = [f"{i:04d}-" + "x" * (997 + i % 7) for i in range(20)]  # ~20 KB, 5 pages
    proc = _child("sleeping", *extra)
    try:
        argv = procstat.read_cmdline(proc.pid)
        assert argv == psutil.Process(proc.pid).cmdline()
        assert argv is not None and argv[-20:] == extra
    finally:
        _end(proc)


def test_a_process_that_is_gone_reads_as_none():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert procstat.read_stat(proc.pid) is None
    assert procstat.read_cmdline(proc.pid) is None


def test_the_tracker_describes_children_as_its_psutil_path_does(children):
    """Every fact but CPU % (a rate over each path's own interval) is the same from
    /proc's reads as from psutil's probes, zombie included."""
    tracker = ChildTracker(psutil.Process())
    still = [pid for kind, pid in children.items() if kind != "busy"]
    other = ChildTracker(psutil.Process())
    fast, slow = _between_still_reads(
        still, lambda: (tracker._facts_from_proc({}), other._facts_from_psutil({}))
    )
    assert fast is not None

    def comparable(facts: list[tuple]) -> dict[int, tuple]:
        return {f[0]: (*f[:5], f[7], None if f[0] == children["busy"] else f[6]) for f in facts}

    mine = set(children.values())
    assert mine <= set(comparable(fast))
    assert {p: v for p, v in comparable(fast).items() if p in mine} == {
        p: v for p, v in comparable(slow).items() if p in mine
    }


def test_cpu_percent_is_a_rate_since_the_last_look(children):
    """As psutil's cpu_percent(): 0.0 at the first look, then the share of one CPU used
    since: about none for a stopped child, some for a busy one."""
    tracker = ChildTracker(psutil.Process())
    first = {f[0]: f[5] for f in tracker._facts_from_proc({})}
    assert first[children["busy"]] == 0.0 and first[children["stopped"]] == 0.0
    busy = psutil.Process(children["busy"])
    start, deadline = sum(busy.cpu_times()[:2]), time.monotonic() + 30
    while sum(busy.cpu_times()[:2]) - start < 0.05:  # until it has run a while
        assert time.monotonic() < deadline, "the busy child never ran"
        os.sched_yield()
    second = {f[0]: f[5] for f in tracker._facts_from_proc({})}
    assert second[children["stopped"]] == 0.0
    assert 0.0 < second[children["busy"]] <= 100.0 * (os.cpu_count() or 1)


def test_a_child_that_ended_is_forgotten(children):
    tracker = ChildTracker(psutil.Process())
    proc = _child("sleeping")
    pid = proc.pid
    try:
        assert pid in {f[0] for f in tracker._facts_from_proc({})}
    finally:
        _end(proc)
    assert pid not in {f[0] for f in tracker._facts_from_proc({})}
    assert all(key[0] != pid for key in tracker._cpu)
    assert pid not in tracker._started
