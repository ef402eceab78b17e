"""How the agent's work on a request shares the GIL with the host: slices of at most
SLICE_SECONDS, and after a slice that kept a busy host waiting, a pause long enough for
the host to keep most of its core.

Why the pause: an agent thread that asks for the GIL again right after handing it over
gets it back at the host loop's next wait for I/O, every loop iteration; on a busy core
the loop then runs at about half speed for the whole pass, and a request in flight meets
several slices (bench/overhead.py, aiohttp + 10k tasks polled once a second: p99 x1.36
of no observer with 0.5 ms slices and no pause). Whether the host is busy is read, not
guessed: the host is busy when this thread was kept from the GIL (or the CPU) well past
its short sleep, or when the process's other threads used the CPU for much of the time it
stood aside (the process's CPU clock less this thread's) at two hand-overs in a row. The
wait is the sharper of the two: Linux adds a thread running on another CPU into the
process's clock only at a scheduler tick, so over a sub-millisecond hand-over the clock
mostly says nothing of a host thread spinning beside it (a test met 21 of 40 such
hand-overs judged idle). And one hand-over's clock alone says little: an idle host's loop
catching up on a timer that came due during a 2 ms slice runs through the whole of a
0.1 ms hand-over (bench/snapshot.py's idle host: 100-123 of 640-720 hand-overs in a cold
pass were judged busy so, each costing two 2 ms naps and the slices' regrowth; 7 of
740-1180 with the second look). The first such hand-over only shortens the next slice,
so the second look comes soon. On an idle host none of this happens: the pass then goes
on at full speed, and its slices grow up to SLICE_MAX, since each hand-over is a timed
sleep (~0.12 ms on a VM) that nobody is waiting for (a cold listing of 100k tasks spent
~150 of its ~750 ms in them at 0.5 ms slices). A host thread that wakes meanwhile waits
at most SLICE_MAX, well within the agent's 10 ms bound on a host's stall.

Between the parts of a request's work (the pass, the answer, threads, process, children)
and inside the longer ones (a thread's or a socket's probe) ``pause_point`` hands over
too: plain Python code keeps the GIL from a waiting host thread for the whole switch
interval (5 ms by default), and those parts run back to back.

One slice per thread, whatever runs in it: each step of a request continues the slice
its thread is in (slice_end), and the loops look at the clock every ~0.1 ms of quiet work.
Measured under load (aiohttp + wrk on the host's one core, 10k tasks polled once a
second), the agent's thread ran 0.5-4.5 ms of CPU between hand-overs while each step
began a slice of its own and checked the clock every 1,024 tasks; now about one slice.

Each frame a thread receives starts its work on it: a run and a slice of its own
(request_begins, called by agent.channel); each frame it sends ends that run
(request_ends): the wait for the peer that follows holds no GIL. The CPU each
thread runs between two hand-overs is counted (run_lengths, read by bench/overhead.py):
the longest run is the longest a host request waiting for the GIL could wait, and a regression shows
there as a number before it shows in p99's noise.
"""

from __future__ import annotations

import sys
import threading
import time
from types import CodeType

# hold the GIL at most about this long before handing it over: a request the host's loop
# serves meanwhile waits this long at most (bench/overhead.py: p99 x1.57 of no observer
# at 3 ms slices, x1.36 at 0.5 ms; a cold 100k listing took as long either way). Each
# slice meets every request in flight (wrk's 32 at once), so a refresh's some 40 slices
# touch more than 1% of a second's requests: the slice is what p99 rises by
SLICE_SECONDS = 0.00025
SLICE_MAX = 0.002  # a slice's length at most, reached while the host stays idle
YIELD = 0.00005  # seconds slept between slices (sleep(0) rarely lets a waiter in)
# the host is busy when its threads used the CPU at least this share of a hand-over's
# time (a saturated loop: all of it; a loop with a 1 ms timer: a tenth or so, once in a
# while; an idle one: nothing)
BUSY_SHARE = 0.5
# ... or when the hand-over's sleep outlasted its length by this much: something held the GIL
# (an idle VM wakes from it within ~0.18 ms 999 times in 1000)
KEPT = 0.0005
BACKOFF = 8  # slices' worth of time stayed away then: a busy host keeps ~8/9 of its core

_clock = time.perf_counter
_process = time.process_time
_own = time.thread_time
_slice = SLICE_SECONDS  # the next slice's length: shared by passes, racy on purpose (a hint)
_busy = False  # whether the last hand-over found the host busy: shared too, a hint as well
_crowded = False  # whether the host's threads used the CPU through most of the last one
_held = threading.local()  # .ends: when this thread's current slice should end;
# .cpu_at: its CPU clock when its current run began (None: in none); .asker: where that was

# CPU an agent thread used between two of its hand-overs ("runs"): what a host thread
# waiting for the GIL meanwhile waits out at most, the figure p99 rises by. Counters
# only, racy on purpose (a readout); read with run_lengths().
RUN_EDGES = (0.0005, 0.001, 0.002, 0.005)  # seconds: runs longer than each are counted
_runs = [0, 0.0, 0.0]  # runs seen, their CPU seconds, the longest
_runs_over = [0] * len(RUN_EDGES)
Asker = tuple[CodeType, int] | None  # the code that asked for a hand-over, and the line
_longest_at: tuple[Asker, Asker] = (None, None)  # its two hand-overs


def slice_end() -> float:
    """The clock at which this thread should next hand the GIL over: the end of the slice
    its last hand-over began. Work run back to back (a pass's steps, then the answer's
    parts) shares that one slice instead of each step starting a slice of its own (under
    load, steps that each began a fresh slice kept the GIL 1-4 ms at a time). A request
    marked by request_begins starts a slice there; a thread that has marked none and not
    handed over since its last work hands over at its first check."""
    return getattr(_held, "ends", 0.0)


def judge(
    nap: float, away: float, used: float, was_busy: bool, was_crowded: bool
) -> tuple[bool, bool]:
    """(busy, crowded) for a hand-over that slept ``nap`` and was away ``away`` seconds
    while the host's threads used ``used`` seconds of CPU, given the last one's: kept
    waiting means busy at once; the host's clock (crowded) only when the last hand-over
    found it busy or crowded too (see the module's docstring)."""
    crowded = used > BUSY_SHARE * away
    return away > nap + KEPT or (crowded and (was_busy or was_crowded)), crowded


def hand_over() -> float:
    """Give the GIL up between two slices, for longer when the host's threads used the
    CPU meanwhile (see the module's docstring); the clock the next slice should end at.

    While the host stays busy, each hand-over is one long sleep, judged by itself: a short
    sleep first would make this thread take the GIL once more per slice (a wake-up, a
    wait for the host's next I/O and a switch back on the host's core) only to see what
    the last hand-over already saw."""
    global _slice, _busy, _crowded
    started, own = _clock(), _own()
    others = _process() - own
    asker, began = _asker(), getattr(_held, "cpu_at", None)
    if began is not None:
        _note_run(own - began, _held.asker, asker)
    _held.asker = asker
    nap = BACKOFF * SLICE_SECONDS if _busy else YIELD
    time.sleep(nap)
    away = _clock() - started
    _held.cpu_at = own = _own()
    busy, crowded = judge(nap, away, _process() - own - others, _busy, _crowded)
    if busy and not _busy:
        time.sleep(BACKOFF * SLICE_SECONDS)
    _busy, _crowded = busy, crowded
    _slice = SLICE_SECONDS if busy or crowded else min(2 * _slice, SLICE_MAX)
    _held.ends = ends = _clock() + _slice
    return ends


def request_begins() -> None:
    """This thread starts work on a frame that arrived (a request, or a worker's reply):
    its run and a slice start here. Before it the thread waited on the network, without
    the GIL: no part of a run, and nothing a hand-over at its first check would give the
    host back."""
    _held.cpu_at, _held.asker = _own(), _asker()
    _held.ends = _clock() + _slice


def request_ends() -> None:
    """This thread sent a frame and now waits for the peer: its run ends here, and none
    is counted while it waits."""
    began = getattr(_held, "cpu_at", None)
    if began is not None:
        _note_run(_own() - began, _held.asker, _asker())
    _held.cpu_at = None


def _asker() -> Asker:
    """Where the hand-over was asked for: the first frame outside this module."""
    try:
        frame = sys._getframe(2)  # hand_over's caller: pause_point, or a pass's loop
    except ValueError:  # no such frame: nowhere to name
        return None
    while frame is not None and frame.f_code.co_filename == __file__:
        frame = frame.f_back
    return (frame.f_code, frame.f_lineno) if frame is not None else None


def _note_run(run: float, began: Asker, ended: Asker) -> None:
    """Count one run, which began where ``began`` asked (a hand-over, or a request's
    start) and ended where ``ended`` asked."""
    global _longest_at
    if run <= 0.0:
        return
    _runs[0] += 1
    _runs[1] += run
    if run > _runs[2]:
        _runs[2] = run
        _longest_at = (began, ended)
    for index, edge in enumerate(RUN_EDGES):
        if run <= edge:
            break
        _runs_over[index] += 1


def run_lengths(reset: bool = False) -> dict[str, object]:
    """The runs counted so far (since the last reset): how many, their CPU, the longest,
    and how many were longer than each of RUN_EDGES (keys in ms). A request's runs go
    from its start (request_begins) to its end (request_ends), cut at each hand-over;
    a thread that marks no requests counts from one hand-over to the next.
    ``longest_between``: the code that asked for the hand-over the longest run began
    at and the one it ended at ('function (file:line)', the line that asked): where to
    look."""
    global _longest_at
    runs, spent, longest = _runs
    out: dict[str, object] = {
        "runs": runs,
        "cpu_ms": round(spent * 1000.0, 3),
        "longest_ms": round(longest * 1000.0, 3),
        "over_ms": {
            f"{edge * 1000.0:g}": count for edge, count in zip(RUN_EDGES, _runs_over, strict=True)
        },
        "longest_between": [_where(asker) for asker in _longest_at],
    }
    if reset:
        _runs[:] = [0, 0.0, 0.0]
        _runs_over[:] = [0] * len(RUN_EDGES)
        _longest_at = (None, None)
    return out


def _where(asker: Asker) -> str:
    """'function (file:line)' of where a hand-over was asked for, '' for nowhere."""
    if asker is None:
        return ""
    code, line = asker
    name = getattr(code, "co_qualname", code.co_name)  # 3.11+
    return f"{name} ({code.co_filename.rsplit('/', 1)[-1]}:{line})"


def pause_point() -> None:
    """Between two parts of a request's work: hand the GIL over when this thread's slice
    (since its last hand-over) is spent. Python code otherwise keeps the GIL from a
    waiting host thread for the whole switch interval (5 ms by default)."""
    if _clock() > slice_end():
        hand_over()
