"""Walk frames and coroutine chains into FrameInfo records and safe, redacted locals."""

from __future__ import annotations

import types
from collections.abc import Iterator
from typing import Any

from agent.collect.source import note_reported, source_line
from agent.compat import code_name
from agent.redact import REDACTED, is_sensitive
from agent.saferepr import safe_children, safe_len, safe_repr, safe_type_name
from agent.schema import FrameInfo, Variable

MAX_FRAMES = 200
MAX_LOCALS = 200


def code_location(frame: types.FrameType | None) -> tuple[str, str, int]:
    """(function, file, line) of a frame, or empty values for None; the place is remembered
    as reported (thread and task listings show it), so a viewer may read source around it."""
    if frame is None:
        return "", "", 0
    code = frame.f_code
    file, line = code.co_filename, frame.f_lineno or 0
    note_reported(file, line)
    return code_name(code), file, line


def thread_frames(frame: types.FrameType | None) -> list[types.FrameType]:
    """A thread's frames, outermost first (bounded to the innermost MAX_FRAMES)."""
    frames: list[types.FrameType] = []
    while frame is not None and len(frames) < MAX_FRAMES:
        frames.append(frame)
        frame = frame.f_back
    frames.reverse()
    return frames


_STEPS = {
    types.CoroutineType: ("cr_frame", "cr_await"),
    types.GeneratorType: ("gi_frame", "gi_yieldfrom"),
    types.AsyncGeneratorType: ("ag_frame", "ag_await"),
}


_NO_STEP: set[type] = set()


def chain_step(awaitable: Any) -> tuple[types.FrameType | None, Any]:
    """(frame, next awaitable) for one link of an await chain; (None, None) at the end."""
    kind = type(awaitable)
    attrs = _STEPS.get(kind)
    if attrs is None:
        if kind in _NO_STEP:  # futures and other plain awaitables end the chain
            return None, None
        for frame_attr, next_attr in _STEPS.values():  # e.g. Cython coroutines
            if hasattr(kind, frame_attr):
                attrs = (frame_attr, next_attr)
                break
        else:
            if len(_NO_STEP) < 1000:
                _NO_STEP.add(kind)
            return None, None
    frame = getattr(awaitable, attrs[0], None)
    if not isinstance(frame, types.FrameType):
        return None, None
    return frame, getattr(awaitable, attrs[1], None)


def coroutine_chain(coro: Any) -> Iterator[tuple[Any, types.FrameType]]:
    """(coroutine, frame) pairs of an await chain, outermost first."""
    seen = 0
    while coro is not None and seen < MAX_FRAMES:
        frame, following = chain_step(coro)
        if frame is None:
            return
        yield coro, frame
        coro = following
        seen += 1


def frame_infos(frames: list[types.FrameType]) -> tuple[FrameInfo, ...]:
    """FrameInfo records with source lines for a list of frames."""
    out = []
    for index, frame in enumerate(frames):
        function, file, line = code_location(frame)
        out.append(FrameInfo(index, function, file, line, source_line(file, line)))
    return tuple(out)


def frame_variables(frame: types.FrameType) -> tuple[tuple[Variable, ...], bool]:
    """Safe, redacted locals of a frame, and whether the list was truncated."""
    try:
        items = list(frame.f_locals.items())
    except Exception:
        return (), False
    variables = []
    for name, value in items[:MAX_LOCALS]:
        variables.append(describe_variable(str(name), value))
    return tuple(variables), len(items) > MAX_LOCALS


def describe_variable(name: str, value: Any) -> Variable:
    """A Variable record for one value, redacting it when the name looks secret."""
    if is_sensitive(name):
        return Variable(name, safe_type_name(value), REDACTED, None, True, False)
    try:
        expandable = bool(safe_children(value, max_items=1))
    except Exception:
        expandable = False
    return Variable(
        name, safe_type_name(value), safe_repr(value), safe_len(value), False, expandable
    )
