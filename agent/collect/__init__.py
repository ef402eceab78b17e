"""Pure probes: each reads host state and returns wire records, guarded, never raising."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import psutil

T = TypeVar("T")
D = TypeVar("D")


def guarded(call: Callable[[], T], default: D) -> T | D:
    """Run one OS probe, answering ``default`` when the OS refuses or the process is gone."""
    try:
        return call()
    except (psutil.Error, OSError, AttributeError, NotImplementedError):
        return default
