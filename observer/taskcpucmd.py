"""``observer cpu NODE [--on [--keep] | --off] [--top N] [--window S] [--json]``: CPU per
asyncio task over the last S seconds (agent.collect.taskcpu), like ``recon:proc_window``."""

from __future__ import annotations

import argparse
import sys

from agent.schema import TaskCpu

DEFAULT_TOP = 20
DEFAULT_WINDOW = 10.0
OFF_HINT = "CPU per task is off on this node: turn it on with `observer cpu NODE --on` (operator)"


def cpu_options(p: argparse.ArgumentParser) -> None:
    switch = p.add_mutually_exclusive_group()
    switch.add_argument(
        "--on",
        action="store_true",
        help="turn it on (operator, audited); it stays on until --off or the agent stops",
    )
    switch.add_argument("--off", action="store_true", help="turn it off (operator, audited)")
    p.add_argument("--top", type=int, default=DEFAULT_TOP, metavar="N", help="busiest N tasks")
    p.add_argument(
        "--window",
        type=float,
        default=DEFAULT_WINDOW,
        metavar="S",
        help="over the last S seconds (at most 120; default 10)",
    )
    p.add_argument(
        "--process", metavar="PID", help="a worker of the node, reached through its session"
    )


def cpu_text(report: TaskCpu) -> str:
    """The window's totals, then one row per task, the busiest first."""
    from observer.format import table, task_label

    if not report.enabled:
        return report.note or OFF_HINT
    share = report.cpu / report.covered * 100 if report.covered > 0 else 0.0
    head = (
        f"tasks used {report.cpu * 1000:.0f} ms of CPU in {report.steps:,} steps over the last "
        f"{report.covered:.1f} s ({share:.1f}% of a core); turned on by {report.by}"
    )
    if report.untracked:
        head += f"; {report.untracked * 1000:.0f} ms in tasks past the per-second cap"
    rows = []
    for row in report.rows:
        if not row.name and not row.coroutine:
            break  # the rows below the top are ids only (for the GUI's column)
        pct = row.cpu / report.covered * 100 if report.covered > 0 else 0.0
        rows.append(
            (
                row.task,
                task_label(row.name, row.coroutine) + ("" if row.alive else " (finished)"),
                f"{row.cpu * 1000:.1f}",
                f"{pct:.1f}%",
                f"{row.wall * 1000:.1f}",
                f"{row.steps:,}",
                row.coroutine,
            )
        )
    body = table(["ID", "NAME", "CPU MS", "CPU", "WALL MS", "STEPS", "COROUTINE"], rows)
    return f"{head}\n{body}" if rows else f"{head}\nno task ran a step in that time"


def cmd_cpu(args: argparse.Namespace) -> int:
    from observer.cli_commands import _connect
    from observer.cli_output import print_json

    with _connect(args) as node:
        target = node.worker(args.process) if args.process else node
        if args.on or args.off:
            result = target.task_cpu_start(keep=True) if args.on else target.task_cpu_stop()
            if args.json:
                print_json(result)
            else:
                print(result.message)
            return 0
        report = target.task_cpu(args.window, max(0, args.top), max(0, args.top))
    if args.json:
        print_json(report)
        return 0
    print(cpu_text(report))
    return 0 if report.enabled else 1


def task_cpu_map(node: object, window: float) -> TaskCpu | None:
    """For ``ps --sort cpu``: the node's report, or None (said on stderr) while it is off."""
    report = node.task_cpu(window, 0)  # type: ignore[attr-defined]
    if report.enabled:
        return report
    print(report.note or OFF_HINT, file=sys.stderr)
    return None
