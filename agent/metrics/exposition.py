"""Metric families and a small, strict writer of the Prometheus text format (0.0.4) and
OpenMetrics 1.0.0, with the stdlib only.

Strict: a name, label or sample the formats do not allow raises ExpositionError when the
family is built, so a bad family is caught (and skipped by the caller) before a byte of it
is written, and the output always parses. Family names follow OpenMetrics: a counter's
family is named without ``_total`` (its sample carries it), an info family without
``_info``; the 0.0.4 writer adds those suffixes to the TYPE and HELP lines, as
prometheus_client does.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_LABELS = 16  # per sample: ours carry at most four
MAX_LABEL_VALUE = 256  # characters: a bound on what one value can cost a scrape
# the samples a family of each type may carry, by suffix
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "unknown": ("",),
}
# reserved endings a family name may not have, by type (its samples add them)
_RESERVED = ("_total", "_created", "_bucket", "_count", "_sum", "_info")
PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"

Labels = tuple[tuple[str, str], ...]


class ExpositionError(ValueError):
    """A family that neither format allows (a bug in the collector that built it)."""


def check_labels(labels: Mapping[str, str] | Iterable[tuple[str, str]]) -> Labels:
    """Labels as a tuple of (name, value), names checked, values str and bounded."""
    items = tuple(labels.items() if isinstance(labels, Mapping) else labels)
    if len(items) > MAX_LABELS:
        raise ExpositionError(f"{len(items)} labels on one sample (at most {MAX_LABELS})")
    seen = set()
    for name, value in items:
        if type(name) is not str or not LABEL.match(name) or name.startswith("__"):
            raise ExpositionError(f"bad label name {name!r}")
        if name in seen:
            raise ExpositionError(f"label {name!r} given twice")
        seen.add(name)
        if type(value) is not str or len(value) > MAX_LABEL_VALUE:
            raise ExpositionError(f"label {name!r}: value must be a str of <= 256 characters")
    return items


@dataclass(frozen=True)
class Sample:
    suffix: str
    labels: Labels
    value: float


@dataclass
class Family:
    """One metric family: name (OpenMetrics style), type, help text and its samples."""

    name: str
    type: str
    help: str
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.type not in SUFFIXES:
            raise ExpositionError(f"{self.name}: unknown type {self.type!r}")
        if type(self.name) is not str or not NAME.match(self.name):
            raise ExpositionError(f"bad metric name {self.name!r}")
        if self.name.endswith(_RESERVED):
            raise ExpositionError(f"{self.type} family {self.name!r} has a reserved suffix")
        if type(self.help) is not str or _CONTROL.search(self.help):
            raise ExpositionError(f"{self.name}: help must be text without control characters")
        self._keys: set[tuple[str, Labels]] = set()

    def add(self, value: float, labels: Mapping[str, str] | Labels = (), suffix: str = "") -> None:
        """One sample; its suffix must belong to the family's type, its labels be new."""
        if suffix not in SUFFIXES[self.type]:
            raise ExpositionError(f"{self.name}: suffix {suffix!r} not allowed for {self.type}")
        checked = check_labels(labels)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ExpositionError(f"{self.name}: value {value!r} is not a number")
        counts = self.type in ("counter", "histogram") and suffix != "_created"
        if counts and (math.isnan(value) or value < 0):
            raise ExpositionError(f"{self.name}: {self.type} value {value!r} below zero")
        key = (suffix, checked)
        if key in self._keys:
            raise ExpositionError(f"{self.name}{suffix}: the same labels twice: {checked}")
        self._keys.add(key)
        self.samples.append(Sample(suffix, checked, value))

    def relabelled(self, extra: Labels) -> Family:
        """A copy whose every sample carries ``extra`` labels first (a worker's series)."""
        copy = Family(self.name, self.type, self.help)
        copy.take(self, extra)
        return copy

    def take(self, other: Family, extra: Labels = ()) -> None:
        """Add ``other``'s samples (checked when ``other`` took them), each with ``extra``
        labels first (checked here once): the merge of many workers' families without
        checking every label of every sample again."""
        if other.type != self.type:
            raise ExpositionError(f"{self.name}: {other.type} vs {self.type}")
        extra = check_labels(extra)
        names = {k for k, _v in extra}
        for s in other.samples:
            labels = extra + s.labels if extra else s.labels
            if extra and (len(labels) > MAX_LABELS or any(k in names for k, _v in s.labels)):
                raise ExpositionError(f"{self.name}: labels {labels} clash or are too many")
            key = (s.suffix, labels)
            if key in self._keys:
                raise ExpositionError(f"{self.name}{s.suffix}: the same labels twice: {labels}")
            self._keys.add(key)
            self.samples.append(Sample(s.suffix, labels, s.value) if extra else s)


def gauge(name: str, help: str, value: float | None = None) -> Family:
    family = Family(name, "gauge", help)
    if value is not None:
        family.add(value)
    return family


def counter(name: str, help: str, value: float | None = None) -> Family:
    family = Family(name, "counter", help)
    if value is not None:
        family.add(value, suffix="_total")
    return family


def info(name: str, help: str, labels: Mapping[str, str]) -> Family:
    family = Family(name, "info", help)
    family.add(1, labels, "_info")
    return family


def add_histogram(
    family: Family,
    bounds: Sequence[float],
    counts: Sequence[int],
    total: float,
    labels: Labels = (),
) -> None:
    """Add one histogram's samples: ``counts[i]`` observations fell at or under
    ``bounds[i]`` and above the bound before it; ``counts[-1]`` (one more than bounds)
    above every bound. Written cumulative, with the +Inf bucket, ``_count`` and ``_sum``."""
    if len(counts) != len(bounds) + 1:
        raise ExpositionError(f"{family.name}: {len(counts)} counts for {len(bounds)} bounds")
    running = 0
    for bound, count in zip([*bounds, math.inf], counts, strict=True):
        running += count
        family.add(running, (*labels, ("le", format_value(bound))), "_bucket")
    family.add(running, labels, "_count")
    family.add(max(0.0, total), labels, "_sum")


def format_value(value: float) -> str:
    """A number as both formats (and Go's ParseFloat) read it; floats as Python's repr."""
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(float(value))


def _escape(text: str, quote: bool) -> str:
    text = text.replace("\\", "\\\\").replace("\n", "\\n")
    return text.replace('"', '\\"') if quote else text


def _labels_text(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v, True)}"' for k, v in labels) + "}"


def _family_text(family: Family, openmetrics: bool) -> list[str]:
    name, kind = family.name, family.type
    if openmetrics:
        head = name
        lines = [f"# TYPE {head} {kind}", f"# HELP {head} {_escape(family.help, True)}"]
    else:
        head = name + {"counter": "_total", "info": "_info"}.get(kind, "")
        shown = {"info": "gauge", "unknown": "untyped"}.get(kind, kind)
        lines = [f"# HELP {head} {_escape(family.help, False)}", f"# TYPE {head} {shown}"]
    for s in family.samples:
        if s.suffix == "_created" and not openmetrics:
            continue
        lines.append(f"{name}{s.suffix}{_labels_text(s.labels)} {format_value(s.value)}")
    return lines


@dataclass(frozen=True)
class Rendered:
    body: bytes
    content_type: str
    series: int  # sample lines written
    dropped: int  # families left out by the series cap


def render(families: Iterable[Family], openmetrics: bool, max_series: int) -> Rendered:
    """The exposition of ``families`` in one format; whole families beyond ``max_series``
    samples are left out (never half a histogram) and counted."""
    lines: list[str] = []
    series = dropped = 0
    for family in families:
        if not family.samples:
            continue
        if series + len(family.samples) > max_series:
            dropped += 1
            continue
        series += len(family.samples)
        lines.extend(_family_text(family, openmetrics))
    if openmetrics:
        lines.append("# EOF")
    body = ("\n".join(lines) + "\n").encode("utf-8", "replace")
    return Rendered(body, OPENMETRICS if openmetrics else PROMETHEUS, series, dropped)


def wants_openmetrics(accept: str) -> bool:
    """Whether an Accept header asks for OpenMetrics text (Prometheus' scraper does)."""
    for part in accept.split(","):
        media = part.split(";", 1)[0].strip().lower()
        if media == "application/openmetrics-text":
            params = part.lower().replace(" ", "")
            return ";q=0," not in params + "," and "q=0.0" not in params
    return False
