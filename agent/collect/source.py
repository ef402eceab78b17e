"""Source lines for stack frames, from a small private cache (never the host's linecache).

Every line leaves redacted (``redact_code``; a PEM private key's body lines, which say
nothing secret-looking one by one, are masked by where they stand in the file). The lines
the agent reported (stack frames, task and thread locations, allocation sites) are
remembered, boundedly, so a viewer may be shown source only around them.
"""

from __future__ import annotations

import os
import re
import threading
from collections import OrderedDict

from agent.redact import REDACTED, redact_code

_MAX_FILES = 64
_MAX_FILE_BYTES = 2 * 1024 * 1024
_MAX_LINE = 200
_MAX_REDACTED_LINES = 4096  # redacted lines kept per file (shown lines, redacted once)
_REPORTED_GENERATION = 4096  # (file, line) pairs per generation of the reported record
_PEM_BEGIN = re.compile(r"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----")
_PEM_END = "-----END"


class _Source:
    """A file's lines, which of them are inside a private key block, and the redacted ones
    made so far (each line is redacted once, when first shown)."""

    __slots__ = ("lines", "mtime", "redacted", "secret")

    def __init__(self, mtime: float, lines: list[str]) -> None:
        self.mtime = mtime
        self.lines = lines
        self.secret = _pem_body_lines(lines)
        self.redacted: dict[int, str] = {}

    def line(self, index: int) -> str:
        """Line ``index`` (0-based), redacted."""
        text = self.redacted.get(index)
        if text is None:
            text = self.lines[index]
            end = self.secret.get(index)
            if end is not None:  # inside a key: all of it, or what comes before its footer
                if end < 0:
                    text = REDACTED
                elif text[:end].strip():
                    text = REDACTED + text[end:]
            else:
                text = redact_code(text)
            if len(self.redacted) >= _MAX_REDACTED_LINES:
                self.redacted.clear()
            self.redacted[index] = text
        return text


_lock = threading.Lock()
_cache: OrderedDict[str, _Source] = OrderedDict()


def _pem_body_lines(lines: list[str]) -> dict[int, int]:
    """Lines after a PEM private key header and up to its footer (to the end if unclosed),
    each with where its footer starts (-1: no footer on that line, all of it is key)."""
    inside = False
    body: dict[int, int] = {}
    for index, line in enumerate(lines):
        if inside:
            end = line.find(_PEM_END)
            body[index] = end
            inside = end < 0
        elif "PRIVATE KEY" in line and _PEM_BEGIN.search(line) and _PEM_END not in line:
            inside = True
    return body


def _load(path: str) -> _Source | None:
    """A source file's lines (bounded), or None if it cannot be read."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    with _lock:
        hit = _cache.get(path)
        if hit is not None and hit.mtime == stat.st_mtime:
            _cache.move_to_end(path)
            return hit
    lines: list[str] = []
    if stat.st_size <= _MAX_FILE_BYTES:
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                lines = fh.read().splitlines()
        except OSError:
            lines = []
    source = _Source(stat.st_mtime, lines)
    with _lock:
        _cache[path] = source
        while len(_cache) > _MAX_FILES:
            _cache.popitem(last=False)
    return source


def _cut(text: str) -> str:
    """A line cut to a sane width."""
    return text if len(text) <= _MAX_LINE else text[: _MAX_LINE - 1] + "…"


def source_line(path: str, lineno: int) -> str:
    """The stripped, redacted text of ``path:lineno``, cut to a sane width; '' when
    unavailable. The line is remembered as reported."""
    if not path or path.startswith("<") or lineno < 1:
        return ""
    note_reported(path, lineno)
    source = _load(path)
    if source is None or lineno > len(source.lines):
        return ""
    return _cut(source.line(lineno - 1).strip())


def source_lines(path: str, first: int, last: int) -> list[str]:
    """Lines ``first``..``last`` (1-based, inclusive) of ``path``, redacted and cut."""
    if not path or path.startswith("<"):
        return []
    source = _load(path)
    if source is None:
        return []
    indices = range(max(first, 1) - 1, min(max(last, 0), len(source.lines)))
    return [_cut(source.line(index)) for index in indices]


# ---------------------------------------------------------------------------- reported lines


class _Reported:
    """(file, line) pairs the agent reported lately, in two generations of bounded size: a
    lookup finds the current and the previous one, a full generation retires the older.
    No lock: a lost note under a race costs one refused source request, never memory."""

    def __init__(self, generation: int) -> None:
        self.generation = generation
        self.current: dict[tuple[str, int], None] = {}
        self.previous: dict[tuple[str, int], None] = {}

    def note(self, path: str, line: int) -> None:
        """Remember ``path:line`` (called per task row: the common case is one lookup)."""
        key = (path, line)
        current = self.current
        if key in current or line <= 0 or not path:
            return
        current[key] = None
        if len(current) >= self.generation:
            self.previous, self.current = current, {}

    def nearest(self, path: str, line: int, window: int) -> int | None:
        """The reported line of ``path`` nearest to ``line``, if one is within ``window``."""
        current, previous = self.current, self.previous
        for distance in range(window + 1):
            for candidate in (line - distance, line + distance):
                key = (path, candidate)
                if key in current or key in previous:
                    return candidate
        return None


_reported = _Reported(_REPORTED_GENERATION)


# Remember that the agent reported ``path:line`` (a frame, a location, a site).
note_reported = _reported.note


def nearest_reported(path: str, line: int, window: int) -> int | None:
    """The reported line of ``path`` nearest to ``line`` within ``window`` lines, or None."""
    return _reported.nearest(path, line, max(0, window))
