"""CPU per task for the Processes and Tasks & threads tabs (Qt-free, run in the link's
worker): each task's share of a core over the last WINDOW seconds, asked only while the
node's CPU per task is on (and, while it is off, once every RECHECK seconds, to notice
someone else turning it on), so a refresh costs no second round trip for nothing."""

from __future__ import annotations

import time
from dataclasses import dataclass

from observer.client import Node
from observer.errors import ObserverError

WINDOW = 10.0  # seconds the CPU column covers
RECHECK = 10.0  # seconds between asking a node whose CPU per task is off
LIMIT = 20_000  # tasks with a figure per refresh (the busiest)


@dataclass
class CpuState:
    """What a tab knows of a node's CPU per task: on, off (or unknown: None), since when."""

    enabled: bool | None = None
    checked: float = 0.0  # time.monotonic() of the last answer
    note: str = ""  # why it cannot run on this node (before 3.12), or ""
    covered: float = 0.0


def task_cpu(node: Node, state: CpuState, force: bool = False) -> dict[str, float] | None:
    """{task id: % of a core over the window} while the node's CPU per task is on, else
    None; asks the node only when it is on, when ``force``d or every RECHECK seconds."""
    if not force and state.enabled is False and time.monotonic() - state.checked < RECHECK:
        return None
    try:
        report = node.task_cpu(WINDOW, 0, LIMIT)
    except ObserverError:  # an agent from before CPU per task: keep asking seldom
        state.enabled, state.checked = False, time.monotonic()
        return None
    state.enabled, state.checked, state.note = report.enabled, time.monotonic(), report.note
    state.covered = report.covered
    if not report.enabled or report.covered <= 0:
        return None
    return {row.task: row.cpu / report.covered * 100.0 for row in report.rows}
