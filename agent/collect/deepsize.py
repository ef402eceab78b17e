"""Approximate deep size of one object, walked with gc.get_referents within a budget.

gc.get_referents runs each type's C traverse function: no host code runs. Classes,
modules, functions and code are shared infrastructure, not the object's own memory,
so the walk does not enter them (as pympler's asizeof does by default).
"""

from __future__ import annotations

import gc
import sys
import time
import types

from agent.collect.census import c_sizeof, layout_size

MAX_OBJECTS = 200_000
MAX_DEPTH = 64
TIME_BUDGET = 0.05
_SHARED = (
    type,
    types.ModuleType,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.CodeType,
    types.FrameType,
    types.MethodType,
)


def _size(obj: object, safe: dict[int, bool]) -> int:
    tp = type(obj)
    ok = safe.get(id(tp))  # by id: a metaclass may define __hash__/__eq__ (host code)
    if ok is None:
        ok = safe[id(tp)] = c_sizeof(tp)
    if not ok:
        return layout_size(obj)
    try:
        return sys.getsizeof(obj)
    except Exception:
        return layout_size(obj)


def deep_size(
    obj: object,
    *,
    max_objects: int = MAX_OBJECTS,
    max_depth: int = MAX_DEPTH,
    budget: float = TIME_BUDGET,
) -> tuple[int, int, bool]:
    """(bytes, objects reached, complete): shallow sizes of everything ``obj`` holds."""
    deadline = time.perf_counter() + budget
    seen = {id(obj)}
    safe: dict[int, bool] = {}
    total = _size(obj, safe)
    layer = [obj]
    depth = 0
    complete = True
    while layer:
        if depth >= max_depth or time.perf_counter() > deadline:
            complete = False
            break
        depth += 1
        following = []
        for ref in gc.get_referents(*layer):
            if issubclass(type(ref), _SHARED) or id(ref) in seen:
                continue
            seen.add(id(ref))
            total += _size(ref, safe)
            following.append(ref)
            if len(seen) >= max_objects:
                return total, len(seen), False
        layer = following
    return total, len(seen), complete
