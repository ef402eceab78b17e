"""Column widths that fit a view's content within its width, the most important first.

``share`` (Qt-free) splits the width: when every column's content fits, each gets it;
otherwise the columns are shared out by what their typical rows need (a few long ones,
such as a child's command line, are elided and whole in their tooltip): the ``first``
columns (names) first, up to a cap, and the others share the rest fairly, each getting
its content's width when that is below the fair share (short columns are never clipped),
the wider ones cut to the same share, then topped up from the widest where little is
missing; what is left then goes to the columns missing least first, up to their
longest row.
``ColumnFitter`` measures a Qt view's content, applies ``share`` when data arrives or the
view is resized, and leaves alone a column the user resized by hand.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from typing import Any

from PyQt6.QtCore import QEvent, QObject, QPoint, QTimer, pyqtSignal
from PyQt6.QtWidgets import QAbstractItemView, QHeaderView, QStyle, QTableView, QTreeView

MIN_WIDTH = 36  # px: no column is squeezed below this
FIRST_CAP = 0.4  # a "first" column takes at most this share of the width
PADDING = 6  # px added to a measured width, so text does not touch the next column
DONOR_KEEPS = 0.75  # the widest cut column gives at most a quarter of its share
TYPICAL = 0.8  # a column's typical width fits this share of its non-empty cells on screen


def share(
    wants: Sequence[int],
    available: int,
    first: Sequence[int] = (),
    pinned: Sequence[int] = (),
    minimum: int = MIN_WIDTH,
    cap: float = FIRST_CAP,
    typical: Sequence[int] | None = None,
) -> list[int]:
    """Widths for columns wanting ``wants`` px within ``available`` px (see the module);
    ``pinned`` columns (fixed, or sized by the user) get exactly what they want.
    ``typical`` (by column; default ``wants``) is what each column's usual rows need: the
    columns are shared out by that first, so one long row (a child's command line) does
    not take the room of every other column; what is then left goes to the columns
    missing least first (a Kind column's one "process" row), up to their whole want.
    """
    if sum(wants) <= available:
        return list(wants)  # everything fits: every column in full
    pins = set(pinned)
    usual = list(wants)
    if typical is not None:  # a column wanting no more than an equal share stays whole
        even = available // max(len(wants), 1)
        usual = [
            w if c in pins or w <= even else min(w, t)
            for c, (w, t) in enumerate(zip(wants, typical, strict=True))
        ]
    widths = _squeeze(usual, available, first, pinned, minimum, cap)
    if usual == list(wants):
        return widths
    left = available - sum(widths)
    limits = [min(w, int(available * cap)) if c in first else w for c, w in enumerate(wants)]
    cut = [c for c in range(len(wants)) if c not in pins and widths[c] < limits[c]]
    for column in sorted(cut, key=lambda c: limits[c] - widths[c]):  # short ones whole first
        extra = max(0, min(left, limits[column] - widths[column]))
        widths[column] += extra
        left -= extra
    return widths


def _squeeze(
    wants: Sequence[int],
    available: int,
    first: Sequence[int] = (),
    pinned: Sequence[int] = (),
    minimum: int = MIN_WIDTH,
    cap: float = FIRST_CAP,
) -> list[int]:
    """``share`` for columns wanting ``wants`` px, with no typical widths."""
    count = len(wants)
    if sum(wants) <= available:
        return list(wants)  # everything fits: every column in full
    widths = [0] * count
    floors = [min(minimum, max(w, 1)) for w in wants]
    left = available
    for column in pinned:
        widths[column] = wants[column]
        left -= wants[column]
    first = [c for c in first if c not in pinned]
    others = [c for c in range(count) if c not in first and c not in pinned]
    reserve = sum(floors[c] for c in others) + sum(floors[c] for c in first)
    for column in first:
        reserve -= floors[column]  # what the columns not yet given a width need at least
        room = max(floors[column], left - reserve)
        widths[column] = max(floors[column], min(wants[column], int(available * cap), room))
        left -= widths[column]
    # fair shares: a column wanting less than the share gets its want, the rest split evenly
    pending = sorted(others, key=lambda c: wants[c])
    while pending:
        fair = max(left, 0) // len(pending)
        column = pending[0]
        if wants[column] <= fair:
            widths[column] = wants[column]
            left -= wants[column]
            pending.pop(0)
            continue
        for column in pending:
            widths[column] = max(floors[column], fair)
        left -= sum(widths[c] for c in pending)
        _top_up(widths, wants, floors, pending)
        break
    return widths


def typical_width(widths: Sequence[int], share: float = TYPICAL) -> int:
    """The width that fits ``share`` of the rows measured (all of them when there are few:
    a handful of rows has no outliers to leave out); 0 for no rows."""
    if not widths:
        return 0
    ordered = sorted(widths)
    if len(ordered) < 5:
        return ordered[-1]
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def _top_up(widths: list[int], wants: Sequence[int], floors: list[int], cut: list[int]) -> None:
    """Give a cut column that misses only a little (a file:line a few px too long) its
    whole content, from the widest column, which keeps at least DONOR_KEEPS of its share."""
    donor = max(cut, key=lambda c: wants[c])
    least = max(floors[donor], int(widths[donor] * DONOR_KEEPS))
    for column in sorted(cut, key=lambda c: wants[c] - widths[c]):
        missing = wants[column] - widths[column]
        if column == donor or missing > widths[donor] - least:
            continue
        widths[column] += missing
        widths[donor] -= missing


class ColumnFitter(QObject):
    """Keeps a view's columns fitted to their content (``fit_later`` after new data).

    With ``grow_only`` (views that measure only the rows on screen) widths only grow with
    the content seen since ``reset``, so scrolling and refreshing never make the columns
    jump back and forth; without it every row is measured each time. Columns are fitted
    again, from what was last measured, whenever the view is resized. ``fixed`` columns
    keep the given width (a sparkline has no text to measure); ``optional`` ones are
    hidden while the others do not fit whole (a narrow node list drops the address).
    Measuring asks the model for every cell on screen (5-15 ms for the Tasks & threads
    table on this project's test machine), so ``fit_later`` fits at most once every
    ``every`` seconds, in an event of its own, and never loses the last change.
    """

    fitted = pyqtSignal()  # the columns were fitted: ``last_wants`` is what they needed

    def __init__(
        self,
        view: QTreeView | QTableView | QAbstractItemView,
        first: Sequence[int] = (),
        fixed: dict[int, int] | None = None,
        cap: float = FIRST_CAP,
        grow_only: bool = False,
        every: float = 0.5,
        optional: Sequence[int] = (),
        within: int = 0,
    ) -> None:
        super().__init__(view)
        self.view = view
        self.grow_only = grow_only
        self.every = every
        self.optional = tuple(optional)  # hidden while the others do not fit whole
        self.within = within  # see width_wanted
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.fit)
        self.first = tuple(first)
        self.cap = cap
        self.fixed = dict(fixed or {})
        self.user_sized: dict[int, int] = {}  # columns the user resized: their width
        self._seen: dict[int, int] = {}
        self._seen_typical: dict[int, int] = {}
        self.last_typical: list[int] = []  # what each column's typical rows needed
        self._fitted_at = 0.0  # time.monotonic() of the last fit
        self.last_wants: list[int] = []  # what each column needed at the last fit
        self._fitting = False
        header = self.header()
        header.setResizeContentsPrecision(0)  # measure the rows on screen, not 1000 of them
        header.sectionResized.connect(self._resized)
        header.sortIndicatorChanged.connect(lambda *_: self.fit())  # the arrow needs room
        self.viewport = view.viewport()
        assert self.viewport is not None
        self.viewport.installEventFilter(self)

    def header(self) -> QHeaderView:
        view = self.view
        header = view.header() if isinstance(view, QTreeView) else view.horizontalHeader()
        assert header is not None
        return header

    def reset(self) -> None:
        """Forget the content measured so far (another node is shown)."""
        self._seen.clear()
        self._seen_typical.clear()
        self._fitted_at = 0.0

    def wants(self, rows: dict[int, list[int]]) -> list[int]:
        """What each column's content (visible rows and header) needs, in px; ``rows``:
        each measured column's on-screen row widths (``_measured``)."""
        out = []
        for column in range(self.header().count()):
            if column in self.user_sized:
                want = self.user_sized[column]
            elif column in self.fixed:
                want = self.fixed[column]
            else:
                content = max(rows[column], default=0)
                want = max(self._header_want(column), content) + PADDING
                if self.grow_only:
                    want = max(self._seen.get(column, 0), want)
                    self._seen[column] = want
            out.append(want)
        return out

    def typical(self, wants: Sequence[int], rows: dict[int, list[int]]) -> list[int]:
        """What each column's typical rows on screen need (see typical_width), in px, at
        most its ``wants``; a fixed or user-sized column's entry is its ``wants``."""
        out = list(wants)
        for column in range(len(out)):
            if column in self.user_sized or column in self.fixed:
                continue
            usual = max(self._header_want(column), typical_width(rows[column])) + PADDING
            if self.grow_only:
                usual = max(self._seen_typical.get(column, 0), usual)
                self._seen_typical[column] = usual
            out[column] = min(out[column], usual)
        return out

    def _measured(self) -> dict[int, list[int]]:
        """Each measured (not fixed, not user-sized) column's on-screen row widths: one
        measure of every cell on screen serves both what a column wants and what its
        typical rows need (Qt's sizeHintForColumn measured them all a second time: ~10
        ms of a Processes fit with 9k rows open)."""
        view = self.view
        if isinstance(view, QTreeView):
            return self._tree_widths(view)
        return {
            column: list(self._row_widths(column))
            for column in range(self.header().count())
            if column not in self.user_sized and column not in self.fixed
        }

    def _tree_widths(self, view: QTreeView) -> dict[int, list[int]]:
        """A tree's measure (see ``_measured``), the tree's column with its rows'
        indentation; empty cells are left out (a Coroutine column is blank on thread
        rows). The rows on screen are walked once for all columns."""
        header = self.header()
        height = self.viewport.height()
        tree = max(0, view.treePosition())
        origin = header.sectionViewportPosition(tree)
        rows: list[tuple[Any, int]] = []  # (the row's index in the tree's column, indent)
        index = view.indexAt(QPoint(max(0, origin) + 1, 1))  # the top row on screen
        index = index.siblingAtColumn(tree) if index.isValid() else index
        while index.isValid():
            rect = view.visualRect(index)
            if rect.top() > height:
                break
            rows.append((index, max(0, rect.x() - origin)))
            index = view.indexBelow(index)
        measured: dict[int, list[int]] = {}
        for column in range(header.count()):
            if column in self.user_sized or column in self.fixed:
                continue
            widths = measured[column] = []
            for row, indent in rows:
                cell = row if column == tree else row.siblingAtColumn(column)
                if cell.data():
                    hint = view.sizeHintForIndex(cell).width()
                    widths.append(hint + indent if column == tree else hint)
        return measured

    def _row_widths(self, column: int) -> Iterator[int]:
        """Each on-screen row's width in ``column`` (a table's or list's); empty cells are
        left out."""
        view = self.view
        height = self.viewport.height()
        model = view.model()
        if model is None or model.rowCount() == 0:
            return
        top = max(0, view.rowAt(0)) if isinstance(view, QTableView) else 0
        bottom = view.rowAt(height - 1) if isinstance(view, QTableView) else -1
        last = model.rowCount() - 1 if bottom < 0 else bottom
        for row in range(top, last + 1):
            index = model.index(row, column)
            if index.data():
                yield view.sizeHintForIndex(index).width()

    def _header_want(self, column: int) -> int:
        """The header's width for ``column``; Qt's hint keeps room for the sort arrow in
        every column, but only the sorted one shows it."""
        header = self.header()
        hint = header.sectionSizeHint(column)
        if header.isSortIndicatorShown() and header.sortIndicatorSection() != column:
            style = header.style()
            if style is not None:
                hint -= style.pixelMetric(QStyle.PixelMetric.PM_HeaderMarkSize)
                hint -= 2 * style.pixelMetric(QStyle.PixelMetric.PM_HeaderMargin)
        return hint

    def fit_later(self) -> None:
        """Fit once the current event is done, or ``every`` seconds after the last fit."""
        if self._timer.isActive():
            return
        wait = self._fitted_at + self.every - time.monotonic() if self._fitted_at else 0.0
        self._timer.start(max(0, int(wait * 1000)))

    def fit(self, measure: bool = True) -> None:
        """Size the columns to their content within the view's width, now (``measure``
        False: to the content measured last time, as when only the width changed)."""
        header = self.header()
        available = self.viewport.width()
        if header.count() == 0 or available <= 0:
            return
        if measure or len(self.last_wants) != header.count() or not self.last_typical:
            self._timer.stop()
            model = self.view.model()
            empty = model is None or model.rowCount() == 0
            self._fitted_at = 0.0 if empty else time.monotonic()  # the first rows: at once
            rows = self._measured()
            self.last_wants = self.wants(rows)
            self.last_typical = self.typical(self.last_wants, rows)
        wants = list(self.last_wants)
        hidden = self._hide_optional(wants, available)
        for column in hidden:
            wants[column] = 0
        pinned = set(self.user_sized) | set(self.fixed) | hidden
        typical = [min(w, t) for w, t in zip(wants, self.last_typical, strict=True)]
        widths = share(wants, available, self.first, sorted(pinned), cap=self.cap, typical=typical)
        self._fitting = True
        try:
            for column, width in enumerate(widths):
                header.setSectionHidden(column, column in hidden)
                if column not in hidden and header.sectionSize(column) != width:
                    header.resizeSection(column, width)
        finally:
            self._fitting = False
        self.fitted.emit()

    def _hide_optional(self, wants: list[int], available: int) -> set[int]:
        """The optional columns to hide so that the others fit whole (the last one first)."""
        hidden: set[int] = set()
        for column in reversed(self.optional):
            if sum(w for c, w in enumerate(wants) if c not in hidden) <= available:
                break
            hidden.add(column)
        return hidden

    def width_wanted(self) -> int:
        """The width every column needed at the last fit, or without the optional ones
        when that is more than ``within`` (for a pane sized to fit)."""
        whole = sum(self.last_wants)
        if whole <= self.within or not self.optional:
            return whole
        return sum(w for c, w in enumerate(self.last_wants) if c not in self.optional)

    def _resized(self, column: int, _old: int, new: int) -> None:
        """A resize not made by ``fit`` is the user's (or the stretching last section's)."""
        header = self.header()
        if self._fitting or (column == header.count() - 1 and header.stretchLastSection()):
            return
        self.user_sized[column] = new

    def eventFilter(self, watched: QObject | None, event: QEvent | None) -> bool:
        if watched is self.viewport and event is not None and event.type() == QEvent.Type.Resize:
            self.fit(measure=False)
        return False
