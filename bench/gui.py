"""GUI cost at 100k tasks: refresh, sort, memory, filter keys, and input latency over a
slow link, each printed against its target (issue 12, "GUI at 100k").

    QT_QPA_PLATFORM=offscreen python bench/gui.py [--tasks 100000] [--delay 0.2]
                                                  [--churn 50] [--root /work/main]

Drives a real MainWindow (paused, so it refreshes only when asked) against a bench host
(bench/host.py) and measures on the GUI thread:

a) Processes and Table refreshes: request->reply (request -> the link worker finished:
   network, agent, decoding, row building), apply (``tab.apply_seconds``), paint (one forced
   ``viewport().repaint()`` after ``applied``; it includes the view's pending item layout
   unless Qt already ran it inside the event loop), reply->painted (worker finished ->
   painted and the event queue drained, wall clock: queueing + apply + status bar + layout +
   paint), and the worst GUI-thread stall from request to painted (a 5 ms QTimer: longest
   gap between ticks minus 5 ms; the worker's GIL holds show up here too). Before each
   steady refresh the host cancels ``--churn`` sleepers and starts as many new ones; the
   model's signals are counted (rows inserted, removed, changed; resets and layout
   changes): a steady refresh should touch about 2 x churn rows, never reset.
   ``--natural``: no forced repaint; the event loop runs NATURAL_MS after the reply was
   applied, so Qt lays out and paints when it would on its own and the stall meter ticks
   wherever Qt lets it (no paint or reply->painted figure then).
b) Table sort of all rows (``view.sortByColumn``, as a header click, plus a repaint).
c) Observer RSS before loading and with both tabs holding the rows; then the cost of each
   key typed into each tab's filter box (key event, refilter, repaint, events drained).
d) Through a DelayProxy (``--delay`` each way, in its own process): refreshes while key
   presses are posted to the filter box every 20 ms from another thread (latency from when
   each was due to when the box's event filter saw it; the stall meter is off meanwhile),
   then refreshes with the stall meter on.

Targets: reply->painted <= 300 ms, no stall > 50 ms, sort <= 300 ms, RSS <= 500 MB,
filter <= 50 ms per key, input latency p95 <= 50 ms, steady refresh: no reset.
``--root DIR`` runs the GUI, client and agent of another checkout (e.g. a worktree of
main) with this script, for before/after figures in the same session.

``--workers W`` (issue 13) instead measures a master with W forked workers, each with
``--tasks`` idle tasks and the master as many of its own (bench/workers_tree.py's host):
the Processes tab (every worker's subtree, loops expanded) and the Tasks & threads table,
``--refreshes`` steady refreshes with no churn, then as many with ``--churn`` tasks
replaced in the master and in each worker before each; then the same against one node
without workers holding the same total task count. Each row adds the link worker
thread's CPU for the refresh's job (``job cpu``: fetch, decode, tree walk and diff).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import math
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
from PyQt6.QtCore import PYQT_VERSION_STR, QT_VERSION_STR, QEvent, QEventLoop, QObject, Qt, QTimer
from PyQt6.QtGui import QKeyEvent
from PyQt6.QtTest import QTest
from PyQt6.QtWidgets import QApplication, QWidget

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from snapshot import CODE, Host  # noqa: E402  (--root: puts that checkout first)

from observer.client import connect  # noqa: E402
from observer.gui.link import NodeLink, Status  # noqa: E402
from observer.gui.tab_processes import ProcessesTab  # noqa: E402
from observer.gui.tab_table import TableTab  # noqa: E402
from observer.gui.window import MainWindow  # noqa: E402
from observer.keygen import KeyMaterial, generate  # noqa: E402
from observer.nodesfile import NodeSpec  # noqa: E402

TIMEOUT = 180.0  # seconds any one wait may take before the bench gives up
TICK_MS = 5
KEY_PERIOD = 0.02
REFRESH_TARGET = 0.300
STALL_TARGET = 0.050
SORT_TARGET = 0.300
RSS_TARGET = 500 * 1024 * 1024
INPUT_TARGET = 0.050
FILTER_TARGET = 0.050
SORT_COLUMNS = ((0, "Name"), (2, "ID"), (5, "Age"), (3, "State"))


def ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1000:.0f}"


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def wait_for(
    signal: Any, timeout: float = TIMEOUT, until: Callable[[], bool] | None = None
) -> bool:
    """Run the event loop until ``signal`` fires (and ``until()`` holds), or time out."""
    if until is not None and until():
        return True
    loop = QEventLoop()
    fired: list[bool] = []

    def on_signal(*_args: object) -> None:
        if until is None or until():
            fired.append(True)
            loop.quit()

    timer = QTimer()
    timer.setSingleShot(True)
    timer.timeout.connect(loop.quit)
    signal.connect(on_signal)
    timer.start(int(timeout * 1000))
    try:
        loop.exec()
    finally:
        timer.stop()
        signal.disconnect(on_signal)
    return bool(fired)


class StallMeter:
    """A 5 ms timer on the GUI thread; ``worst`` is the longest gap between ticks minus 5 ms."""

    def __init__(self) -> None:
        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(self._tick)
        self.worst = 0.0
        self._last = time.perf_counter()
        self.timer.start()

    def _tick(self) -> None:
        now = time.perf_counter()
        self.worst = max(self.worst, now - self._last - TICK_MS / 1000)
        self._last = now

    def reset(self) -> None:
        self._last = time.perf_counter()
        self.worst = 0.0

    def start(self) -> None:
        self.reset()
        self.timer.start()

    def stop(self) -> None:
        """Off while input latency is measured: each tick is a Python call that queues for
        the GIL behind the link's worker, which would delay the key events too."""
        self.timer.stop()

    def settle(self) -> float:
        """Let one more tick through, so a gap still open is counted; return ``worst``."""
        wait_for(self.timer.timeout, 1.0)
        return self.worst


class InputProbe(QObject):
    """Post a key press to ``widget`` every 20 ms from a thread; time until the widget sees it.

    Each press is due on a fixed 20 ms grid; if the posting thread itself was held up (the
    GIL), the overdue presses are posted at once and still timed from when they were due, as
    input queued by the OS would be. Right-arrow in an empty line edit changes nothing.
    """

    def __init__(self, widget: QWidget) -> None:
        super().__init__()
        self.widget = widget
        self.latencies: list[float] = []
        self._due: deque[float] = deque()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._post, name="input-probe", daemon=True)
        self._press()  # the first key event creates Qt's keyboard device: on the GUI thread
        widget.installEventFilter(self)

    @staticmethod
    def _press() -> QKeyEvent:
        return QKeyEvent(QEvent.Type.KeyPress, Qt.Key.Key_Right, Qt.KeyboardModifier.NoModifier)

    def eventFilter(self, obj: QObject | None, event: QEvent | None) -> bool:
        if (
            obj is self.widget
            and event is not None
            and event.type() == QEvent.Type.KeyPress
            and self._due
        ):
            self.latencies.append(time.perf_counter() - self._due.popleft())
        return False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        QApplication.processEvents()  # deliver what is still posted
        self.widget.removeEventFilter(self)

    def _post(self) -> None:
        start = time.perf_counter()
        sent = 0
        while not self._stop.is_set():
            due = start + sent * KEY_PERIOD
            wait = due - time.perf_counter()
            if wait > 0 and self._stop.wait(wait):
                return
            while due <= time.perf_counter():
                self._due.append(due)
                QApplication.postEvent(self.widget, self._press())
                sent += 1
                due = start + sent * KEY_PERIOD


def rss() -> int:
    return psutil.Process().memory_info().rss


ViewTab = ProcessesTab | TableTab


def show(window: MainWindow, key: str) -> ViewTab:
    """Make ``key`` the shown tab and wait until it has drawn fresh data."""
    current = window.current_tab()
    tab = window.show_tab(key)
    assert isinstance(tab, (ProcessesTab, TableTab))
    if tab is current:
        tab.refresh()  # switching tabs refreshes the new one; staying does not
    if not wait_for(tab.applied):
        raise SystemExit(f"{key}: no reply applied within {TIMEOUT:.0f}s")
    return tab


class Touched:
    """Rows a model's signals touched since ``clear``: inserted, removed, changed; resets
    and layout changes (each of those redraws every row)."""

    KINDS = ("inserted", "removed", "changed", "reset", "layout")

    def __init__(self, model: Any) -> None:
        self.counts = dict.fromkeys(self.KINDS, 0)
        model.rowsInserted.connect(lambda _p, a, b: self._add("inserted", b - a + 1))
        model.rowsRemoved.connect(lambda _p, a, b: self._add("removed", b - a + 1))
        model.dataChanged.connect(lambda a, b, *_: self._add("changed", b.row() - a.row() + 1))
        model.modelReset.connect(lambda: self._add("reset", 1))
        model.layoutChanged.connect(lambda *_: self._add("layout", 1))

    def _add(self, kind: str, rows: int) -> None:
        self.counts[kind] += rows

    def clear(self) -> dict[str, int]:
        counts, self.counts = self.counts, dict.fromkeys(self.KINDS, 0)
        return counts


HOST: Host | None = None  # the bench host, for churn between refreshes
CHURN = 0


def churn() -> None:
    """Cancel CHURN sleepers in the host and start as many (waits until it has)."""
    if HOST is not None and CHURN:
        HOST.ask(f"churn {CHURN}", "churned")


def refresh_cycle(
    tab: ViewTab, meter: StallMeter | None, switch: MainWindow | None = None
) -> dict[str, float]:
    """One refresh: request (or switch to the tab), wait for the reply to be applied, paint
    once, drain the event queue. Times are in seconds; no meter, no stall figure."""
    if switch is None:
        churn()
    touched = TOUCHED.get(id(tab.model))
    if touched is not None:
        touched.clear()
    if meter is not None:
        meter.reset()
    cpu = time.thread_time()  # the GUI thread's own CPU: what load on the box does not inflate
    JOB_CPU[tab.key] = float("nan")
    requested = time.time()
    if switch is not None:
        switch.show_tab(tab.key)
    else:
        tab.refresh()
    if not wait_for(tab.applied):
        raise SystemExit(f"{tab.key}: no reply applied within {TIMEOUT:.0f}s")
    if NATURAL:  # Qt lays out and paints when it would on its own; the meter ticks between
        QTest.qWait(NATURAL_MS)
        paint = painted = float("nan")
    else:
        started = time.perf_counter()
        tab.view.viewport().repaint()
        paint = time.perf_counter() - started
        QApplication.processEvents()
        painted = time.time()
    out = {
        "reply": tab.last_applied - requested,  # last_applied = when the worker finished
        "apply": tab.apply_seconds,
        "paint": paint,
        "painted": painted - tab.last_applied,  # nan with --natural
        "stall": meter.settle() if meter is not None else float("nan"),
        "cpu": time.thread_time() - cpu,
        "job": JOB_CPU[tab.key],
    }
    if touched is not None:
        out.update({k: float(v) for k, v in touched.clear().items()})
    return out


TOUCHED: dict[int, Touched] = {}
NATURAL = False  # --natural: no forced repaint (see refresh_cycle)
NATURAL_MS = 150  # how long the event loop then runs after a reply was applied
JOB_CPU: dict[str, float] = {}  # tab key -> the link worker's CPU for its last job


def time_jobs(tab: ViewTab) -> None:
    """Wrap ``tab.job`` so each job records the link worker thread's CPU in JOB_CPU."""
    make = tab.job

    def job() -> Callable[[Any], Any]:
        inner = make()

        def run(node: Any) -> Any:
            started = time.thread_time()
            try:
                return inner(node)
            finally:
                JOB_CPU[tab.key] = time.thread_time() - started

        return run

    tab.job = job  # type: ignore[method-assign]


def print_cycles(label: str, cycles: list[dict[str, float]], first: int = 0) -> tuple[bool, bool]:
    """Rows for each refresh; returns whether the refresh and stall targets were met."""
    for n, c in enumerate(cycles):
        name = "first load" if n < first else f"refresh {n - first + 1}"
        rows = (
            f"{c['inserted']:.0f}/{c['removed']:.0f}/{c['changed']:.0f}/"
            f"{c['reset'] + c['layout']:.0f}"
            if "reset" in c
            else ""
        )
        print(
            f"  {label:<22} {name:<11} {ms(c['reply']):>10} {ms(c['apply']):>8} "
            f"{ms(c['paint']):>7} {ms(c['painted']):>15} {ms(c['stall']):>13} "
            f"{ms(c['cpu']):>7} {ms(c.get('job', math.nan)):>7}   {rows}"
        )
    steady = cycles[first:] or cycles
    paints = [c["painted"] for c in steady if not math.isnan(c["painted"])]  # nan: --natural
    painted = max(paints, default=math.nan)
    ok_painted = not paints or painted <= REFRESH_TARGET
    line = f"  {'':<22} {'worst':<11} {'':>10} {'':>8} {'':>7} {ms(painted):>15}"
    stalls = [c["stall"] for c in steady if not math.isnan(c["stall"])]
    if not stalls:
        print(f"{line} {'-':>13}   <= {ms(REFRESH_TARGET)} {verdict(ok_painted)}")
        return ok_painted, True
    stall = max(stalls)
    ok_stall = stall <= STALL_TARGET
    print(
        f"{line} {ms(stall):>13}   <= {ms(REFRESH_TARGET)} {verdict(ok_painted)}, "
        f"<= {ms(STALL_TARGET)} {verdict(ok_stall)}"
    )
    print(
        f"  {'':<22} {'median':<11} {'':>10} {'':>8} {'':>7} "
        f"{ms(statistics.median(paints) if paints else math.nan):>15} "
        f"{ms(statistics.median(stalls)):>13} {ms(statistics.median(c['cpu'] for c in steady)):>7}"
        f" {ms(statistics.median(c.get('job', math.nan) for c in steady)):>7}"
    )
    resets = sum(c.get("reset", 0) + c.get("layout", 0) for c in steady)
    if any("reset" in c for c in steady):
        touched = max(c["inserted"] + c["removed"] + c["changed"] for c in steady)
        ok_rows = resets == 0
        print(
            f"  {'':<22} steady refreshes: {resets:.0f} resets/layout changes, at most "
            f"{touched:.0f} rows touched (churn {CHURN} a process: {2 * CHURN} rows each; "
            f"a span redone at once re-inserts the rows kept in it)   target: no reset: "
            f"{verdict(ok_rows)}"
        )
        ok_stall = ok_stall and ok_rows
    return ok_painted, ok_stall


CYCLE_HEADER = (
    f"  {'tab':<22} {'':<11} {'req->reply':>10} {'apply':>8} {'paint':>7} "
    f"{'reply->painted':>15} {'worst stall':>13} {'gui cpu':>7} {'job cpu':>7}   (ms)   "
    "rows ins/rem/chg/resets"
)


def measure_refreshes(window: MainWindow, meter: StallMeter, refreshes: int) -> list[str]:
    """a) first load, then ``refreshes`` refreshes of Processes and of Table (also sorted)."""
    misses: list[str] = []
    print("\na) refresh, direct link")
    print(CYCLE_HEADER)
    tabs: tuple[tuple[ViewTab, str], ...] = (
        (window.processes, "Processes"),
        (window.table, "Table (agent order)"),
    )
    for tab, label in tabs:
        assert window.current_tab() is not tab
        first = refresh_cycle(tab, meter, switch=window)  # showing a tab refreshes it
        cycles = [first, *(refresh_cycle(tab, meter) for _ in range(refreshes))]
        ok_painted, ok_stall = print_cycles(label, cycles, first=1)
        if not ok_painted:
            misses.append(f"{label}: reply->painted")
        if not ok_stall:
            misses.append(f"{label}: GUI stall during refresh")
    table = window.table
    table.view.sortByColumn(0, Qt.SortOrder.AscendingOrder)
    QApplication.processEvents()
    cycles = [refresh_cycle(table, meter) for _ in range(refreshes)]
    ok_painted, ok_stall = print_cycles("Table (sorted by Name)", cycles)
    if not ok_painted:
        misses.append("Table sorted: reply->painted")
    if not ok_stall:
        misses.append("Table sorted: GUI stall during refresh")
    table.view.sortByColumn(-1, Qt.SortOrder.AscendingOrder)
    return misses


def measure_sort(window: MainWindow) -> list[str]:
    """b) sort all rows of the table by a few columns, both orders, as a header click does."""
    table = window.table
    print(f"\nb) table sort, {table.model.rowCount():,} rows (sortByColumn + repaint, ms)")
    print(f"  {'column':<8} {'ascending':>10} {'descending':>11}")
    worst = 0.0
    for column, name in SORT_COLUMNS:
        times = []
        for order in (Qt.SortOrder.AscendingOrder, Qt.SortOrder.DescendingOrder):
            started = time.perf_counter()
            table.view.sortByColumn(column, order)
            table.view.viewport().repaint()
            times.append(time.perf_counter() - started)
            QApplication.processEvents()
        worst = max(worst, *times)
        print(f"  {name:<8} {ms(times[0]):>10} {ms(times[1]):>11}")
    table.view.sortByColumn(-1, Qt.SortOrder.AscendingOrder)
    ok = worst <= SORT_TARGET
    print(f"  worst {ms(worst)} ms, target <= {ms(SORT_TARGET)}: {verdict(ok)}")
    return [] if ok else ["table sort"]


def drain() -> None:
    """Run what a key press set off: the filter, the view's layout, one paint (posted as an
    UpdateRequest, handled by the event loop as it would be between two key presses)."""
    QApplication.processEvents()
    QApplication.processEvents()  # a layout done in the first pass may post the paint


def filter_typing(window: MainWindow, rounds: int = 3) -> list[str]:
    """Each key typed into each tab's filter: key event, refilter, layout and paint (events
    drained; typing 'sleeper-99999' then clearing the box, ``rounds`` times; ms per key)."""
    print("\n  filter: typing 'sleeper-99999' then clearing it (ms per key, all rounds)")
    misses = []
    tabs: tuple[ViewTab, ...] = (window.processes, window.table)
    for tab in tabs:
        show(window, tab.key)
        box = tab.filter
        keys: list[float] = []
        cpus: list[float] = []  # the GUI thread's CPU per key: what load does not inflate
        firsts: list[float] = []
        clears: list[float] = []
        for _ in range(rounds):
            for n, char in enumerate("sleeper-99999"):
                started, cpu = time.perf_counter(), time.thread_time()
                QTest.keyClick(box, char)
                drain()
                keys.append(time.perf_counter() - started)
                cpus.append(time.thread_time() - cpu)
                if n == 0:
                    firsts.append(keys[-1])
            started = time.perf_counter()
            box.clear()
            drain()
            clears.append(time.perf_counter() - started)
        worst = max(*keys, *clears)
        ok = worst <= FILTER_TARGET
        print(
            f"  {tab.key:<10} median {ms(statistics.median(keys))}, first key "
            f"{'/'.join(ms(x) for x in firsts)}, max {ms(max(keys))}, clear "
            f"{'/'.join(ms(x) for x in clears)}   target <= {ms(FILTER_TARGET)} per key: "
            f"{verdict(ok)}"
        )
        print(
            f"  {'':<10} GUI-thread CPU per key: median {ms(statistics.median(cpus))}, "
            f"max {ms(max(cpus))}"
        )
        if not ok:
            misses.append(f"{tab.key} filter per key")
    return misses


def start_proxy(address: str, delay: float) -> tuple[subprocess.Popen, str]:
    """The DelayProxy in its own process, so its threads do not share the GUI's GIL."""
    argv = [sys.executable, str(ROOT / "bench" / "delayproxy.py"), address, "--delay", str(delay)]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("proxy: "):
        proc.kill()
        raise SystemExit(f"proxy failed to start: {line!r}")
    return proc, line.split()[1]


def measure_delayed(
    window: MainWindow,
    meter: StallMeter,
    km: KeyMaterial,
    address: str,
    delay: float,
    refreshes: int,
) -> list[str]:
    """d) the Processes tab over a slow link: refreshes with key presses posted every 20 ms
    (stall meter off), then refreshes with the stall meter on (no key presses)."""
    spec = NodeSpec(
        address=address,
        token_file=str(km.operator_token),
        fingerprint=km.fingerprint,
        timeout=TIMEOUT,
    )
    link = window.add_link(spec)
    window.nodes.setCurrentItem(window.nodes.item_of(link))  # refreshes the shown tab
    tab = window.processes
    window.show_tab(tab.key)
    if not wait_for(tab.applied, until=lambda: tab.link is link and tab.last_applied > 0):
        raise SystemExit(f"no reply through the proxy within {TIMEOUT:.0f}s: {link.error}")
    window.ping(link)
    wait_for(link.changed, until=lambda: not link.busy)
    ping_rtt = link.rtt or 0.0
    probe = InputProbe(tab.filter)
    meter.stop()
    probe.start()
    started = time.perf_counter()
    try:
        typed = [refresh_cycle(tab, None) for _ in range(refreshes)]
        snapshot_rtt = link.rtt or 0.0
    finally:
        probe.stop()
        meter.start()
    elapsed = time.perf_counter() - started
    timed = [refresh_cycle(tab, meter) for _ in range(refreshes)]
    print(f"\nd) Processes tab through DelayProxy, {ms(delay)} ms each way")
    print(
        f"  round trip: hello ping {ms(ping_rtt)} ms, snapshot call {ms(snapshot_rtt)} ms "
        f"(link.rtt); link {link.status.value}"
    )
    print(CYCLE_HEADER)
    ok_typed, _ = print_cycles("with key presses", typed)
    ok_timed, ok_stall = print_cycles("with 5 ms stall meter", timed)
    ok_painted = ok_typed and ok_timed
    lat = sorted(probe.latencies) or [0.0]
    p95 = lat[min(len(lat) - 1, int(len(lat) * 0.95))]
    ok_input = p95 <= INPUT_TARGET
    print(
        f"  input latency: median {ms(statistics.median(lat))}, p95 {ms(p95)}, "
        f"max {ms(lat[-1])} ms; over 50 ms: {sum(x > INPUT_TARGET for x in lat)}/{len(lat)} "
        f"presses in {elapsed:.1f}s   target p95 <= {ms(INPUT_TARGET)}: {verdict(ok_input)}"
    )
    misses = [] if ok_input else ["delayed link: input latency"]
    if not ok_painted:
        misses.append("delayed link: reply->painted")
    if not ok_stall:
        misses.append("delayed link: GUI stall during refresh")
    return misses


@contextmanager
def profiled(title: str, limit: int = 14) -> Iterator[None]:
    profile = cProfile.Profile()
    profile.enable()
    try:
        yield
    finally:
        profile.disable()
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(limit)
        print(f"\n--- profile: {title} (by own time)")
        print("\n".join(out.getvalue().splitlines()[4:]))


def profile_apply(window: MainWindow, km: KeyMaterial, address: str) -> None:
    """--profile: the worker's job and the GUI's apply+paint of each tab, under cProfile."""
    node = connect(address, token_file=km.operator_token, fingerprint=km.fingerprint, timeout=60)
    tabs: tuple[ViewTab, ...] = (window.processes, window.table)
    try:
        for tab in tabs:
            show(window, tab.key)
            with profiled(f"{tab.key} job (link worker thread, holds the GIL)"):
                value = tab.job()(node)
            with profiled(f"{tab.key} apply + repaint (GUI thread)"):
                tab.apply(value)
                tab.view.viewport().repaint()
                window._update_status()  # what status_changed triggers after an apply
    finally:
        node.close()


class WorkersHost(Host):
    """bench/workers_tree.py's host: a master forking ``workers`` workers, each with
    ``tasks`` idle tasks (the master as many); ``churn N`` replaces N in each of them."""

    def __init__(self, keys: Path, workers: int, tasks: int, churn: int) -> None:
        argv = [sys.executable, str(ROOT / "bench" / "workers_tree.py"), "--host", str(keys)]
        argv += [str(workers), str(tasks), "--root", str(CODE)]
        env = dict(os.environ, PYTHONPATH=str(CODE), WORKER_CHURN=str(churn))
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, bufsize=1
        )
        self.address = self.ask("", "agent")[0]
        self.pids = [int(p) for p in self.ask("", "workers")[0].split(",")]
        self.psutil = psutil.Process(self.proc.pid)

    def send(self, word: str) -> None:
        if word:
            super().send(word)


def wait_workers(km: KeyMaterial, address: str, pids: list[int]) -> None:
    """Until the master lists every worker's agent and each has answered once (woken)."""
    node = connect(address, token_file=km.operator_token, fingerprint=km.fingerprint, timeout=60)
    try:
        deadline = time.monotonic() + TIMEOUT
        while sum(bool(c.agent) for c in node.children()) < len(pids):
            if time.monotonic() > deadline:
                raise SystemExit("the workers' agents did not show up")
            QTest.qWait(50)  # polling the master, not synchronising with it
        for pid in pids:
            node.worker(pid).snapshot(limit=10)
    finally:
        node.close()


def expand_loops(tab: ProcessesTab) -> int:
    """Open every loop (and what holds it), as a user reading all tasks would; rows shown."""
    data = tab.model.data_
    assert data is not None
    for item in data.by_id.values():
        if item.kind in ("process", "child", "thread", "loop") and item.children:
            index = tab.model.index_of(item.id)
            if index.isValid():
                tab.view.setExpanded(index, True)
    QApplication.processEvents()
    return sum(1 for item in data.by_id.values() if item.kind == "task")


GAP = 0.3  # s between --workers refreshes: an agent shares a task pass for 0.25 s


def spaced(tab: ViewTab, meter: StallMeter) -> dict[str, float]:
    """One refresh, GAP after the last, so each sees a new task pass (the GUI's own
    refreshes are 1 s apart); without the gap a node without workers saw the churn only
    every few refreshes."""
    QTest.qWait(int(GAP * 1000))
    return refresh_cycle(tab, meter)


def shown_tasks(tab: ProcessesTab) -> int:
    """Task rows the view lays out: those whose every ancestor is expanded."""
    data = tab.model.data_
    assert data is not None
    count = 0
    for item in data.by_id.values():
        if item.kind != "task":
            continue
        up = item.parent
        while up is not None and up is not data.root:
            if not tab.view.isExpanded(tab.model.index_of(up.id)):
                break
            up = up.parent
        count += up is data.root
    return count


EXPAND = True  # --as-opened: leave the tree as the tab first opens it


def measure_node(window: MainWindow, meter: StallMeter, title: str, refreshes: int) -> None:
    """Processes (loops expanded) and Table: steady refreshes, then with churn."""
    global CHURN
    churned = CHURN
    print(f"\n{title}")
    print(CYCLE_HEADER)
    tabs: tuple[ViewTab, ...] = (window.processes, window.table)
    for tab in tabs:
        show(window, tab.key)
        if isinstance(tab, ProcessesTab):
            if EXPAND:
                expand_loops(tab)
            print(
                f"  ({shown_tasks(tab):,} task rows laid out, "
                f"{'loops expanded' if EXPAND else 'as the tab first opens'})"
            )
        try:
            CHURN = 0
            steady = [spaced(tab, meter) for _ in range(refreshes)]
            CHURN = churned
            moving = [spaced(tab, meter) for _ in range(refreshes)]
        finally:
            CHURN = churned
        print_cycles(f"{tab.key} steady", steady)
        print_cycles(f"{tab.key} churn {churned}", moving)


def switch_node(window: MainWindow, km: KeyMaterial, address: str) -> NodeLink:
    """Add a node and make it the current one; wait until the shown tab drew it."""
    spec = NodeSpec(
        address=address,
        token_file=str(km.operator_token),
        fingerprint=km.fingerprint,
        timeout=TIMEOUT,
    )
    link = window.add_link(spec)
    wait_up(link)
    window.nodes.setCurrentItem(window.nodes.item_of(link))
    tab = window.current_tab()
    if isinstance(tab, (ProcessesTab, TableTab)):
        wait_for(tab.applied, until=lambda: tab.link is link and not link.busy)
    return link


def workers_main(args: argparse.Namespace) -> None:
    """--workers: a master with workers against one node of the same total task count."""
    global HOST
    app = QApplication.instance() or QApplication(sys.argv[:1])
    procs: list[subprocess.Popen] = []
    window: MainWindow | None = None
    total = (args.workers + 1) * args.tasks
    with tempfile.TemporaryDirectory() as tmp:
        km = generate(Path(tmp) / "keys")
        try:
            master = WorkersHost(km.directory, args.workers, args.tasks, CHURN)
            procs.append(master.proc)
            wait_workers(km, master.address, master.pids)
            window = MainWindow(nodes_file=None)
            window.set_paused(True)
            for tab in (window.processes, window.table):
                TOUCHED[id(tab.model)] = Touched(tab.model)
                time_jobs(tab)
            window.show()
            meter = StallMeter()
            print(
                f"runtime-observer GUI bench, workers ({CODE}): master + {args.workers} "
                f"workers x {args.tasks:,} tasks ({total:,} in all), churn {CHURN}/process/"
                f"refresh, load {' '.join(f'{x:.2f}' for x in os.getloadavg())}, python "
                f"{sys.version.split()[0]}, Qt {QT_VERSION_STR}, platform {app.platformName()}"
            )
            HOST = master
            switch_node(window, km, master.address)
            measure_node(
                window, meter, f"master + {args.workers} workers x {args.tasks:,}", args.refreshes
            )
            plain = HOST = Host(km.directory, total, depth=1, monitor=False)
            procs.append(plain.proc)
            switch_node(window, km, plain.address)
            measure_node(window, meter, f"one node, {total:,} tasks, no workers", args.refreshes)
            print(f"  load {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        finally:
            if window is not None:
                window.close()
            for proc in procs:
                proc.kill()
                proc.wait()


def wait_up(link: NodeLink) -> None:
    if not wait_for(link.changed, until=lambda: link.status is Status.UP and not link.busy):
        raise SystemExit(f"node did not come up within {TIMEOUT:.0f}s: {link.error}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--delay", type=float, default=0.2, help="proxy delay each way (s)")
    parser.add_argument("--refreshes", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="cProfile job and apply too")
    parser.add_argument("--churn", type=int, default=50, help="tasks replaced per refresh")
    parser.add_argument("--root", help="the checkout whose GUI/client/agent to measure")
    parser.add_argument("--workers", type=int, default=0, help="a master with these workers")
    parser.add_argument("--as-opened", action="store_true", help="--workers: do not expand")
    parser.add_argument(
        "--natural", action="store_true", help="no forced repaint: Qt paints when it would"
    )
    args = parser.parse_args()
    global HOST, CHURN, EXPAND, NATURAL
    CHURN, EXPAND, NATURAL = args.churn, not args.as_opened, args.natural
    if args.workers:
        workers_main(args)
        return

    app = QApplication.instance() or QApplication(sys.argv[:1])
    misses: list[str] = []
    procs: list[subprocess.Popen] = []
    window: MainWindow | None = None
    with tempfile.TemporaryDirectory() as tmp:
        km = generate(Path(tmp) / "keys")
        try:
            host = HOST = Host(km.directory, args.tasks, depth=1, monitor=False)
            procs.append(host.proc)
            address = host.address
            window = MainWindow(nodes_file=None)
            window.set_paused(True)
            for tab in (window.processes, window.table):
                TOUCHED[id(tab.model)] = Touched(tab.model)
                time_jobs(tab)
            window.show()
            meter = StallMeter()
            QApplication.processEvents()
            rss_before = rss()
            print(
                f"runtime-observer GUI bench ({CODE}): {args.tasks:,} tasks, churn "
                f"{CHURN}/refresh, load {' '.join(f'{x:.2f}' for x in os.getloadavg())}, python "
                f"{sys.version.split()[0]}, Qt {QT_VERSION_STR} / PyQt {PYQT_VERSION_STR}, "
                f"{os.cpu_count()} cpus, platform {app.platformName()}"
            )
            link = window.add_link(
                NodeSpec(
                    address=address,
                    token_file=str(km.operator_token),
                    fingerprint=km.fingerprint,
                    timeout=TIMEOUT,
                )
            )
            wait_up(link)
            misses += measure_refreshes(window, meter, args.refreshes)
            misses += measure_sort(window)

            rows = window.table.model.rowCount()
            items = len(window.processes.model.data_.by_id) if window.processes.model.data_ else 0
            rss_loaded = rss()
            ok = rss_loaded <= RSS_TARGET
            print(f"\nc) observer memory (RSS), {items:,} tree rows + {rows:,} table rows held")
            print(f"  before loading {rss_before / 2**20:.0f} MB")
            print(
                f"  both tabs loaded {rss_loaded / 2**20:.0f} MB   target <= "
                f"{RSS_TARGET / 2**20:.0f} MB: {verdict(ok)}"
            )
            if not ok:
                misses.append("observer RSS")
            misses += filter_typing(window)
            if args.profile:
                profile_apply(window, km, address)

            proxy, proxied = start_proxy(address, args.delay)
            procs.append(proxy)
            misses += measure_delayed(window, meter, km, proxied, args.delay, args.refreshes)
            after = rss()
            gc.collect()
            print(
                f"  RSS after moving to the proxied node {after / 2**20:.0f} MB, "
                f"after gc.collect() {rss() / 2**20:.0f} MB"
            )
        finally:
            if window is not None:
                window.close()
            for proc in procs:
                proc.kill()
                proc.wait()
    print("\nmissed: " + ("; ".join(misses) if misses else "nothing"))


if __name__ == "__main__":
    main()
