"""Load charts: CPU, RSS, threads, tasks, loop lag and GC rate over a sliding time window.

Filled from the agent's history ring on connect, so a fresh window already shows the
last minutes; afterwards each refresh asks only for samples newer than the last one.
Lines break where samples are missing, and the bar says how often the data shown was
really sampled (``observer.gui.sampling``): the agent samples less often while nobody
is connected.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyqtgraph as pg
from PyQt6.QtWidgets import QComboBox, QHBoxLayout, QLabel

from agent.schema import History, HistorySample, StallEvent
from observer.client import Node
from observer.errors import ObserverError
from observer.format import human_bytes, stall_cells
from observer.gui.sampling import lone, spacing, with_breaks
from observer.gui.tab import Tab

AXIS_WIDTH = 52  # px of every chart's value axis
KEEP_SAMPLES = 3600  # an hour at the agent's connected rate, bounded
WINDOWS = ((60, "1 min"), (120, "2 min"), (300, "5 min"), (600, "10 min"))
LAG = 4  # the event-loop lag chart: stalls are marked on it
KEEP_STALLS = 200


@dataclass(frozen=True)
class Series:
    """One chart: how to read a value from consecutive samples and how to print it."""

    title: str
    unit: str
    colour: str
    value: Callable[[HistorySample, HistorySample | None], float]
    text: Callable[[float], str]
    note: Callable[[HistorySample], str] | None = None  # more about the newest sample


def _gc_rate(s: HistorySample, prev: HistorySample | None) -> float:
    if prev is None or s.time <= prev.time:
        return 0.0
    return max(0.0, (s.gc_collections - prev.gc_collections) / (s.time - prev.time))


SERIES: tuple[Series, ...] = (
    Series("CPU", "%", "#0969da", lambda s, p: s.cpu_percent, lambda v: f"{v:.1f}%"),
    Series("RSS", "MiB", "#8250df", lambda s, p: s.rss / 2**20, lambda v: human_bytes(v * 2**20)),
    Series(  # the host's own: the agent's threads come and go with observers
        "Threads",
        "",
        "#1a7f37",
        lambda s, p: float(s.threads),
        lambda v: f"{v:.0f}",
        lambda s: f" (+{s.agent_threads} agent)",
    ),
    Series("Tasks", "", "#bf3989", lambda s, p: float(s.tasks), lambda v: f"{v:,.0f}"),
    Series(
        "Event-loop lag",
        "ms",
        "#cf222e",
        lambda s, p: (s.loop_lag or 0.0) * 1000,
        lambda v: f"{v:.1f} ms",
    ),
    Series("GC collections", "/s", "#9a6700", _gc_rate, lambda v: f"{v:.1f}/s"),
)


class ChartsTab(Tab):
    key = "charts"
    title = "Load charts"

    def __init__(self) -> None:
        super().__init__()
        bar = QHBoxLayout()
        bar.addWidget(QLabel("Window:"))
        self.window_box = QComboBox()
        for seconds, label in WINDOWS:
            self.window_box.addItem(label, seconds)
        self.window_box.currentIndexChanged.connect(lambda _i: self._redraw())
        bar.addWidget(self.window_box)
        self.interval_label = QLabel("")
        self.interval_label.setToolTip(
            "How often the agent sampled the data shown: every second or so while an "
            "observer is connected, less often (10 s by default) while none is. A line "
            "breaks where samples are missing: the agent was stopped, frozen or unreachable."
        )
        bar.addWidget(self.interval_label)
        bar.addStretch(1)
        self.layout_.addLayout(bar)
        pg.setConfigOptions(antialias=True, background="w", foreground="#24292f")
        self.graphs = pg.GraphicsLayoutWidget()
        self.layout_.addWidget(self.graphs, 1)
        self.plots: list[pg.PlotItem] = []
        self.curves: list[pg.PlotDataItem] = []
        self.dots: list[pg.ScatterPlotItem] = []
        for i, series in enumerate(SERIES):
            plot = self.graphs.addPlot(
                row=i // 2, col=i % 2, axisItems={"bottom": pg.DateAxisItem()}
            )
            plot.showGrid(x=True, y=True, alpha=0.25)
            plot.setMenuEnabled(False)
            plot.setMouseEnabled(x=False, y=False)
            plot.hideButtons()
            if series.unit:
                plot.setLabel("left", series.unit)
            plot.getAxis("left").enableAutoSIPrefix(False)  # no "(x0.001)" on the axis
            plot.getAxis("left").setWidth(AXIS_WIDTH)  # time axes line up across the rows
            if self.plots:
                plot.setXLink(self.plots[0])
            curve = plot.plot(
                pen=pg.mkPen(series.colour, width=2),
                fillLevel=0,
                brush=pg.mkBrush(series.colour + "30"),
                connect="finite",  # a NaN between two samples breaks the line there
            )
            dots = pg.ScatterPlotItem(size=5, pen=None, brush=pg.mkBrush(series.colour))
            plot.addItem(dots)  # samples no line reaches, so they are not lost
            self.plots.append(plot)
            self.curves.append(curve)
            self.dots.append(dots)
        self.stall_marks = pg.ScatterPlotItem(
            size=11,
            symbol="t",
            pen=pg.mkPen("#82071e"),
            brush=pg.mkBrush("#cf222e"),
            hoverable=True,
            tip=self._stall_tip,
        )
        self.plots[LAG].addItem(self.stall_marks)  # a triangle at each stall: when, how long
        self.stalls: deque[StallEvent] = deque(maxlen=KEEP_STALLS)
        self.samples: deque[HistorySample] = deque(maxlen=KEEP_SAMPLES)
        self.interval = 0.0  # the agent's sampling interval while an observer is connected
        self.stall_count = ""  # " · N stalls" in the lag chart's title
        self._titles([])

    @property
    def window_seconds(self) -> int:
        return int(self.window_box.currentData())

    def set_window(self, seconds: int) -> None:
        """Show the last ``seconds`` (60-600)."""
        index = self.window_box.findData(seconds)
        if index >= 0:
            self.window_box.setCurrentIndex(index)

    def job(self) -> Callable[[Node], Any]:
        since = self.samples[-1].time if self.samples else 0.0
        newest = self.stalls[-1] if self.stalls else None
        stalls_since = newest.start + newest.duration if newest is not None else 0.0

        def fetch(node: Node) -> tuple[History, tuple[StallEvent, ...]]:
            history = node.history(since)
            try:  # the stalls ended since the newest marked: usually none, a tiny reply
                stalls = node.stalls(stalls_since).stalls
            except ObserverError:  # an agent without the stall catcher: no marks
                stalls = ()
            return history, stalls

        return fetch

    def clear(self) -> None:
        self.samples.clear()
        self.stalls.clear()
        self._redraw()

    def apply(self, value: tuple[History, tuple[StallEvent, ...]]) -> None:
        history, stalls = value
        last = self.samples[-1].time if self.samples else 0.0
        self.samples.extend(s for s in history.samples if s.time > last)
        known = {e.serial for e in self.stalls}
        self.stalls.extend(e for e in stalls if e.serial not in known)
        self.interval = history.interval
        self._redraw()

    def _redraw(self) -> None:
        samples = list(self.samples)
        if not samples:
            for curve, dots in zip(self.curves, self.dots, strict=True):
                curve.setData([], [])
                dots.setData([], [])
            self.stall_marks.setData([], [])
            self.stall_count = ""
            self.interval_label.setText("")
            self._titles(samples)
            return
        end = samples[-1].time
        start = end - self.window_seconds
        first = next((i for i, s in enumerate(samples) if s.time >= start), len(samples))
        first = max(0, first - 1)  # one point before the window, so the line enters it
        shown = samples[first:]
        xs = np.fromiter((s.time for s in shown), float, len(shown))
        holes = spacing(xs, self.interval)
        alone = lone(holes.gaps) & (xs >= start)  # not the point before the window
        for series, curve, dots in zip(SERIES, self.curves, self.dots, strict=True):
            ys = np.fromiter(
                (
                    series.value(s, samples[first + i - 1] if first + i > 0 else None)
                    for i, s in enumerate(shown)
                ),
                float,
                len(shown),
            )
            curve.setData(*with_breaks(xs, ys, holes.gaps))
            dots.setData(xs[alone], ys[alone])
        self._mark_stalls(start)
        self.plots[0].setXRange(start, end, padding=0)
        self._say_rate(xs[xs >= start], holes.gap_count)
        self._titles(samples)

    def _mark_stalls(self, start: float) -> None:
        """A triangle on the lag chart at each stall in the window, as high as it lasted."""
        shown = [e for e in self.stalls if e.start + e.duration >= start]
        self.stall_marks.setData(
            x=[e.start for e in shown],
            y=[e.duration * 1000 for e in shown],
            data=[e.serial for e in shown],
        )
        count = f" · {len(shown)} stall{'s' if len(shown) != 1 else ''}" if shown else ""
        self.stall_count = count

    def _stall_tip(self, x: float, y: float, data: Any) -> str:
        event = next((e for e in self.stalls if e.serial == data), None)
        if event is None:
            return ""
        when, lasted, loop, culprit, where, running = stall_cells(event)
        return f"stall at {when}: {lasted} on {loop}\n{culprit} {where}\n{running}".strip()

    def _say_rate(self, times: np.ndarray, gaps: int) -> None:
        """How often the data in the window was sampled, and where it has holes."""
        text = spacing(times, self.interval).rate_text(self.interval)
        if gaps:
            text += f"; {gaps} gap{'s' if gaps != 1 else ''} without samples"
        self.interval_label.setText(text)

    def _titles(self, samples: list[HistorySample]) -> None:
        for series, plot in zip(SERIES, self.plots, strict=True):
            now = ""
            if samples:
                prev = samples[-2] if len(samples) > 1 else None
                now = f": {series.text(series.value(samples[-1], prev))}"
                if series.note is not None:
                    now += series.note(samples[-1])
            marks = self.stall_count if plot is self.plots[LAG] else ""
            plot.setTitle(f"<b>{series.title}</b>{now}{marks}", size="10pt")

    def point_count(self) -> int:
        """How many samples the first chart draws (for tests and the status bar)."""
        _xs, ys = self.curves[0].getData()
        return 0 if ys is None else int(np.isfinite(ys).sum())

    def breaks(self) -> int:
        """Where the first chart's line is broken (a NaN between two samples)."""
        _xs, ys = self.curves[0].getData()
        return 0 if ys is None else int(np.isnan(ys).sum())

    def status_text(self) -> str:
        return f"{len(self.samples)} samples" if self.samples else ""
