"""Source lines for stack frames, from a small private cache (never the host's linecache)."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict

_MAX_FILES = 64
_MAX_FILE_BYTES = 2 * 1024 * 1024
_MAX_LINE = 200

_lock = threading.Lock()
_cache: OrderedDict[str, tuple[float, list[str]]] = OrderedDict()


def _load(path: str) -> list[str]:
    """Read a source file's lines (bounded), or nothing if it cannot be read."""
    try:
        stat = os.stat(path)
    except OSError:
        return []
    with _lock:
        hit = _cache.get(path)
        if hit is not None and hit[0] == stat.st_mtime:
            _cache.move_to_end(path)
            return hit[1]
    if stat.st_size > _MAX_FILE_BYTES:
        lines: list[str] = []
    else:
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                lines = fh.read().splitlines()
        except OSError:
            lines = []
    with _lock:
        _cache[path] = (stat.st_mtime, lines)
        while len(_cache) > _MAX_FILES:
            _cache.popitem(last=False)
    return lines


def source_line(path: str, lineno: int) -> str:
    """The stripped text of ``path:lineno``, cut to a sane width; '' when unavailable."""
    if not path or path.startswith("<") or lineno < 1:
        return ""
    lines = _load(path)
    if lineno > len(lines):
        return ""
    text = lines[lineno - 1].strip()
    return text if len(text) <= _MAX_LINE else text[: _MAX_LINE - 1] + "…"


def source_lines(path: str, first: int, last: int) -> list[str]:
    """Lines ``first``..``last`` (1-based, inclusive) of ``path``, each cut to a sane width."""
    if not path or path.startswith("<"):
        return []
    lines = _load(path)[max(first, 1) - 1 : max(last, 0)]
    return [text if len(text) <= _MAX_LINE else text[: _MAX_LINE - 1] + "…" for text in lines]
