"""``observer metrics NODE``: print the node's Prometheus exposition, fetched over the
observer's authenticated link (the metrics port need not be reachable from here)."""

from __future__ import annotations

import argparse
import json
import sys


def metrics_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--openmetrics", action="store_true", help="OpenMetrics text instead of Prometheus 0.0.4"
    )
    p.add_argument("--url", action="store_true", help="print only the endpoint's URL")


def cmd_metrics(args: argparse.Namespace) -> int:
    from observer import cli_commands

    with cli_commands._connect(args) as node:
        url, text = node.metrics(args.openmetrics)
    if args.json:
        print(json.dumps({"url": url, "exposition": text}))
    elif args.url:
        print(url)
    else:
        print(f"# {url}", file=sys.stderr)
        sys.stdout.write(text)
    return 0
