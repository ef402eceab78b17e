"""Profile tab: start a sampling profile on the node, watch its flame graph grow while it
runs (each refresh reads the partial profile), stop it; split by thread or task, hide
idle waits, count on-CPU samples only, search. Any role may profile (see the README)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PyQt6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QWidget,
)

from agent.schema import Profile, ProfileFrame
from observer.client import Node
from observer.errors import BadRequest
from observer.gui.flame import FlameGraph, flame_tree
from observer.gui.link import Reply
from observer.gui.source import FrameWindow
from observer.gui.tab import Tab


def latest_profile(node: Node) -> Profile | None:
    """The node's running or latest profile; None when none was ever started there."""
    try:
        return node.profile_read()
    except BadRequest:
        return None


class ProfileTab(Tab):
    key = "profile"
    title = "Profile"

    def __init__(self) -> None:
        super().__init__()
        bar = QHBoxLayout()
        self.seconds = QDoubleSpinBox()
        self.seconds.setRange(0.1, 600.0)
        self.seconds.setValue(10.0)
        self.seconds.setSuffix(" s")
        self.rate = QSpinBox()
        self.rate.setRange(1, 1000)
        self.rate.setValue(100)
        self.rate.setSuffix(" Hz")
        self.start_button = QPushButton("Start")
        self.start_button.clicked.connect(self.start)
        self.stop_button = QPushButton("Stop")
        self.stop_button.clicked.connect(self.stop)
        self.split = QComboBox()
        self.split.addItems(["merged", "threads", "tasks"])
        self.split.currentTextChanged.connect(lambda _t: self.redraw())
        self.idle = QCheckBox("hide idle")
        self.idle.setChecked(True)
        self.idle.toggled.connect(lambda _on: self.redraw())
        self.cpu = QCheckBox("CPU only")
        self.cpu.toggled.connect(lambda _on: self.redraw())
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search (Ctrl-F)")
        self.search.setClearButtonEnabled(True)
        self.reset_button = QPushButton("Reset zoom")
        self.summary = QLabel("")
        for widget in (
            QLabel("Sample for"),
            self.seconds,
            QLabel("at"),
            self.rate,
            self.start_button,
            self.stop_button,
            QLabel("split"),
            self.split,
            self.idle,
            self.cpu,
            self.search,
            self.reset_button,
        ):
            bar.addWidget(widget)
        self.layout_.addLayout(bar)
        self.layout_.addWidget(self.summary)
        self.flame = FlameGraph()
        self.search.textChanged.connect(self.flame.set_search)
        self.flame.opened.connect(self.open_source)
        self.sources: list[QWidget] = []  # open source windows (kept alive while shown)
        self.reset_button.clicked.connect(lambda: self.flame.zoom(self.flame.root))
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.flame)
        self.layout_.addWidget(scroll, 1)
        self.profile: Profile | None = None

    # ------------------------------------------------------------ the tab

    def open_source(self, frame: ProfileFrame) -> None:
        """A flame frame was double-clicked: the source around its function, from the agent."""
        if self.link is not None:
            window = FrameWindow(self, self.link, frame)
            self.sources.append(window)
            window.show()

    def inspect_closed(self, window: QWidget) -> None:
        if window in self.sources:
            self.sources.remove(window)

    def job(self) -> Callable[[Node], Any]:
        return latest_profile

    def apply(self, value: Profile | None) -> None:
        self.profile = value
        self.redraw()

    def clear(self) -> None:
        self.profile = None
        self.redraw()

    def redraw(self) -> None:
        profile = self.profile
        if profile is None:
            self.summary.setText("No profile on this node yet: press Start.")
            self.flame.set_tree(flame_tree(_EMPTY))
            return
        tree = flame_tree(
            profile, self.split.currentText(), not self.idle.isChecked(), self.cpu.isChecked()
        )
        self.flame.set_tree(tree)
        self.summary.setText(
            f"profile #{profile.serial} ({profile.state}): {profile.elapsed:.1f} of "
            f"{profile.seconds:g} s at {profile.rate:g} Hz, {profile.ticks:,} ticks, "
            f"{tree.count:,} samples shown, {len(profile.frames):,} frames"
            + (f", {profile.dropped:,} dropped at the cap" if profile.dropped else "")
            + ("" if profile.cpu_known else " · CPU clocks unknown here: every sample is CPU")
        )
        self.stop_button.setEnabled(profile.state == "running")

    def focus_filter(self) -> None:
        self.search.setFocus()
        self.search.selectAll()

    def status_text(self) -> str:
        return self.summary.text()

    # ------------------------------------------------------------ actions

    def start(self) -> None:
        if self.link is None:
            return
        seconds, rate = float(self.seconds.value()), float(self.rate.value())
        self.link.request(
            "profile-start", lambda node: node.profile_start(seconds, rate), self._acted
        )

    def stop(self) -> None:
        if self.link is not None:
            self.link.request("profile-stop", lambda node: node.profile_stop(), self._acted)

    def _acted(self, reply: Reply) -> None:
        if reply.source is not self.link:
            return
        if not reply.ok:
            self.show_error(reply)
            return
        self.banner.say("")
        self.apply(reply.value)


_EMPTY = Profile(0, "", 0.0, 0.0, 1.0, 0.0, 0, 0, "", True, (), ())
