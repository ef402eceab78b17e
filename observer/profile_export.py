"""A Profile (agent.schema) folded into the forms other tools read: collapsed stacks for
``flamegraph.pl`` ("a;b;c N" lines) and speedscope's JSON file format ("sampled" profiles).

Pure functions over the interned form the agent sends; the CLI and the GUI share them.
"""

from __future__ import annotations

import collections
from typing import Any

from agent.schema import Profile, ProfileFrame

SPEEDSCOPE_SCHEMA = "https://www.speedscope.app/file-format-schema.json"
SPLITS = ("merged", "threads", "tasks")


def frame_label(frame: ProfileFrame) -> str:
    """'function (file:line)', safe for a collapsed line: no ';' and no line breaks."""
    where = f" ({frame.file}:{frame.line})" if frame.file else ""
    return _clean(f"{frame.function}{where}")


_BREAKS = str.maketrans(dict.fromkeys("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029", " "))


def _clean(text: str) -> str:
    """No ';' (the separator) and no character any reader may take for a line break."""
    return text.replace(";", ":").translate(_BREAKS) or "?"


def group_of(thread: str, task: str, split: str) -> str:
    """The flame graph a row belongs to: one for all, one per thread, or one per task
    (rows with no task go to their thread's)."""
    if split == "threads":
        return f"thread {thread}"
    if split == "tasks":
        return f"task {task}" if task else f"thread {thread}"
    return "all"


def fold(
    profile: Profile, split: str = "merged", idle: bool = True, cpu: bool = False
) -> dict[str, collections.Counter[tuple[int, ...]]]:
    """Sample counts per stack (frame indices), per group; ``idle=False`` drops stacks that
    stand in a wait, ``cpu=True`` counts on-CPU samples only."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}")
    groups: dict[str, collections.Counter[tuple[int, ...]]] = {}
    for row in profile.stacks:
        if row.idle and not idle:
            continue
        count = row.cpu if cpu else row.samples
        if count <= 0:
            continue
        key = group_of(row.thread, row.task, split)
        groups.setdefault(key, collections.Counter())[tuple(row.frames)] += count
    return dict(sorted(groups.items()))


def collapsed(profile: Profile, split: str = "merged", idle: bool = True, cpu: bool = False) -> str:
    """flamegraph.pl's input: one "root;caller;callee N" line per distinct stack; split
    profiles put the thread or task as the root frame."""
    labels = [frame_label(f) for f in profile.frames]
    lines = []
    for group, stacks in fold(profile, split, idle, cpu).items():
        prefix = [_clean(group)] if split != "merged" else []
        for stack, count in sorted(stacks.items()):
            names = prefix + [labels[i] for i in stack]
            if names:
                lines.append(f"{';'.join(names)} {count}")
    return "\n".join(lines) + ("\n" if lines else "")


def parse_collapsed(text: str) -> dict[tuple[str, ...], int]:
    """Read collapsed stacks back (as flamegraph.pl does: the count after the last space)."""
    out: dict[tuple[str, ...], int] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        stack, _, count = line.rpartition(" ")
        key = tuple(stack.split(";"))
        out[key] = out.get(key, 0) + int(count)
    return out


def speedscope(
    profile: Profile,
    split: str = "merged",
    idle: bool = True,
    cpu: bool = False,
    name: str = "runtime-observer profile",
) -> dict[str, Any]:
    """speedscope's file format: shared frames, one "sampled" profile per group, weights in
    seconds (samples / rate)."""
    period = 1.0 / profile.rate if profile.rate > 0 else 1.0
    frames = [
        {"name": f.function or "?", "file": f.file, "line": f.line}
        if f.file
        else {"name": f.function or "?"}
        for f in profile.frames
    ]
    profiles = []
    for group, stacks in fold(profile, split, idle, cpu).items():
        samples = [list(stack) for stack, _ in sorted(stacks.items())]
        weights = [count * period for _, count in sorted(stacks.items())]
        profiles.append(
            {
                "type": "sampled",
                "name": group,
                "unit": "seconds",
                "startValue": 0,
                "endValue": sum(weights),
                "samples": samples,
                "weights": weights,
            }
        )
    return {
        "$schema": SPEEDSCOPE_SCHEMA,
        "shared": {"frames": frames},
        "profiles": profiles,
        "name": name,
        "activeProfileIndex": 0,
        "exporter": "runtime-observer",
    }


def top_functions(
    profile: Profile, idle: bool = True, cpu: bool = False, limit: int = 20
) -> list[tuple[str, int, int]]:
    """(frame label, self samples, total samples) of the busiest functions, most self first."""
    own: collections.Counter[int] = collections.Counter()
    total: collections.Counter[int] = collections.Counter()
    for stacks in fold(profile, "merged", idle, cpu).values():
        for stack, count in stacks.items():
            if stack:
                own[stack[-1]] += count
            for index in set(stack):
                total[index] += count
    labels = [frame_label(f) for f in profile.frames]
    ranked = sorted(total, key=lambda i: (-own[i], -total[i]))[:limit]
    return [(labels[i], own[i], total[i]) for i in ranked]
