"""``observer stalls NODE [--since S] [--json]``: the event-loop stalls a node's agent caught."""

from __future__ import annotations

import argparse
import time

DETAIL_LAST = 3  # stalls printed in full under the table (the newest)


def stalls_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--since",
        type=float,
        default=0.0,
        metavar="S",
        help="only stalls that ended in the last S seconds (default: all the agent kept)",
    )
    p.add_argument(
        "--detail", type=int, default=DETAIL_LAST, metavar="N", help="print the last N in full"
    )


def cmd_stalls(args: argparse.Namespace) -> int:
    from observer.cli_commands import _connect, one_process
    from observer.cli_output import print_json as _print_json
    from observer.format import stall_table, stall_text

    with _connect(args) as session:
        node = one_process(session, args)
        since = 0.0
        if args.since > 0:  # "the last S seconds" on the agent's clock, not the laptop's
            since = node.stalls(time.time() + 3600).time - args.since
        listing = node.stalls(since)
    if args.json:
        _print_json(listing)
        return 0
    if listing.threshold <= 0:
        print("the stall catcher is off on this node (OBSERVER_AGENT_STALL_THRESHOLD=0)")
        return 0
    kept = len(listing.stalls)
    print(
        f"{kept} stall{'s' if kept != 1 else ''} over {listing.threshold * 1000:.0f} ms "
        f"({listing.total} since the agent started, the last {listing.capacity} kept)"
    )
    if not listing.stalls:
        return 0
    print(stall_table(listing.stalls))
    for event in listing.stalls[-max(0, args.detail) :] if args.detail > 0 else ():
        print()
        print(stall_text(event))
    return 0
