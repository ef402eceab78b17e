"""``observer profile NODE --seconds 10 [--rate 100] [--threads|--tasks] [--format F] -o OUT``:
sample a node's stacks for a while and write the profile (speedscope, collapsed, json), or
print its busiest functions."""

from __future__ import annotations

import argparse
import json
import sys

FORMATS = ("speedscope", "collapsed", "json", "top")


def profile_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seconds", type=float, default=10.0, help="how long to sample (default 10)")
    p.add_argument("--rate", type=float, default=100.0, help="samples a second (default 100)")
    split = p.add_mutually_exclusive_group()
    split.add_argument(
        "--threads", action="store_const", const="threads", dest="split", help="one per thread"
    )
    split.add_argument(
        "--tasks", action="store_const", const="tasks", dest="split", help="one per asyncio task"
    )
    p.add_argument(
        "--no-idle", action="store_true", help="hide stacks that wait (selectors, locks, queues)"
    )
    p.add_argument("--cpu", action="store_true", help="on-CPU samples only (else wall time)")
    p.add_argument(
        "--format",
        choices=FORMATS,
        default=None,
        help="speedscope (default with -o), collapsed (flamegraph.pl), json, top (default)",
    )
    p.add_argument("-o", "--output", default="", help="write here ('-' for stdout)")


def cmd_profile(args: argparse.Namespace) -> int:
    from observer.cli_commands import _connect, one_process
    from observer.cli_output import to_json
    from observer.profile_export import collapsed, fold, speedscope, top_functions

    split = args.split or "merged"
    fmt = args.format or ("speedscope" if args.output else "top")
    with _connect(args) as session:
        node = one_process(session, args)
        print(
            f"profiling {node.name} for {args.seconds:g} s at {args.rate:g} Hz ...",
            file=sys.stderr,
        )
        profile = node.profile(args.seconds, args.rate)
    idle = not args.no_idle
    if fmt == "speedscope":
        text = json.dumps(speedscope(profile, split, idle, args.cpu, name=f"{node.name}"))
    elif fmt == "collapsed":
        text = collapsed(profile, split, idle, args.cpu)
    elif fmt == "json":
        text = to_json(profile)
    else:
        folded = fold(profile, "merged", idle, args.cpu).values()
        total = max(1, sum(sum(stacks.values()) for stacks in folded))
        rows = [f"{'self':>7} {'total':>7}  function"]
        for label, own, whole in top_functions(profile, idle, args.cpu):
            rows.append(f"{own * 100 / total:6.1f}% {whole * 100 / total:6.1f}%  {label}")
        text = "\n".join(rows) + "\n"
    summary = (
        f"{profile.ticks} ticks over {profile.elapsed:.1f} s ({profile.state}), "
        f"{len(profile.stacks)} stacks, {len(profile.frames)} frames"
        + (f", {profile.dropped} samples dropped at the cap" if profile.dropped else "")
    )
    if args.output and args.output != "-":
        with open(args.output, "w", encoding="utf-8") as out:
            out.write(text)
        print(f"{summary}; wrote {fmt} to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        print(summary, file=sys.stderr)
    return 0
