"""``python -m agent run [options] -- script.py args | -m module args``.

Runs any Python program with the agent embedded and no change to its code.
"""

from __future__ import annotations

import argparse
import errno
import os
import runpy
import sys
from collections.abc import Sequence

from agent.version import AGENT_VERSION, PROTOCOL_VERSION


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m agent")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser(
        "run",
        help="run a program with the agent embedded",
        usage="python -m agent run [options] -- (script.py | -m module) [args...]",
        description="Options not given fall back to OBSERVER_AGENT_* environment variables.",
    )
    run.add_argument("--bind", help="host:port (default 127.0.0.1:7330; port 0 = any free port)")
    run.add_argument("--name", help="node name shown in the observer")
    run.add_argument("--keys", help="directory made by `observer keygen` (cert, key, tokens)")
    run.add_argument("--tls-cert")
    run.add_argument("--tls-key")
    run.add_argument("--viewer-token-file")
    run.add_argument("--operator-token-file")
    run.add_argument("--client-ca", help="require client certificates signed by this CA")
    run.add_argument("--audit-file", help="append the audit to this file (JSON lines, 0600)")
    run.add_argument(
        "--max-sessions",
        type=int,
        metavar="N",
        help="observers connected at once; one more is told 'agent busy' (default 16)",
    )
    run.add_argument("--metrics", metavar="ADDR", help="serve Prometheus metrics at host:port")
    run.add_argument(
        "--metrics-public", action="store_true", default=None, help="allow a non-loopback ADDR"
    )
    run.add_argument("--metrics-token-file", help="scrapers must send this bearer token")
    run.add_argument(
        "--metrics-tls", action="store_true", default=None, help="serve metrics over TLS"
    )
    run.add_argument(
        "--no-workers",
        dest="workers",
        action="store_false",
        help="forked workers get no agent of their own (by default each gets one on "
        "loopback, reached through this agent)",
    )
    run.add_argument(
        "--stall-threshold",
        type=float,
        metavar="SECONDS",
        help="a loop blocked this long is recorded as a stall (default 0.1; 0 = off)",
    )
    run.add_argument(
        "--print-address", action="store_true", help="print 'agent: HOST:PORT' when listening"
    )
    sub.add_parser("version", help="print agent and protocol versions")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if "--" in args_list:
        split = args_list.index("--")
        own, target = args_list[:split], args_list[split + 1 :]
    else:
        own, target = args_list, []
    args = _parser().parse_args(own)
    if args.command == "version":
        print(f"runtime-observer agent {AGENT_VERSION}, protocol {PROTOCOL_VERSION}")
        return 0
    if args.command != "run":
        _parser().print_help()
        return 2
    if not target:
        print("python -m agent run: give a program after --", file=sys.stderr)
        return 2

    import agent
    from agent.config import key_dir_files, read_token_file

    from_dir = key_dir_files(args.keys) if args.keys else {}
    token_files = {
        "viewer": args.viewer_token_file or from_dir.get("viewer"),
        "operator": args.operator_token_file or from_dir.get("operator"),
    }
    try:
        tokens = None
        if any(token_files.values()):
            tokens = {role: read_token_file(path) for role, path in token_files.items() if path}
        server = agent.start(
            args.bind,
            tls_cert=args.tls_cert or from_dir.get("tls_cert"),
            tls_key=args.tls_key or from_dir.get("tls_key"),
            tokens=tokens,
            name=args.name,
            client_cafile=args.client_ca,
            audit_file=args.audit_file,
            max_sessions=args.max_sessions,
            metrics=args.metrics,
            metrics_public=args.metrics_public,
            metrics_token=(
                read_token_file(args.metrics_token_file) if args.metrics_token_file else None
            ),
            metrics_tls=args.metrics_tls,
            workers=args.workers,
            stall_threshold=args.stall_threshold,
        )
    except agent.ConfigError as exc:  # unsafe or broken settings: fix them first
        print(f"python -m agent run: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the port is taken: the program runs anyway, without the agent
        print(_not_listening(exc, target), file=sys.stderr, flush=True)
    else:
        if args.print_address:
            print(f"agent: {server.address}", flush=True)
            if server.metrics is not None:
                print(f"metrics: {server.metrics.address}", flush=True)
        else:
            print(f"runtime-observer agent listening on {server.address}", file=sys.stderr)

    if target[0] == "-m":
        if len(target) < 2:
            print("python -m agent run: -m needs a module name", file=sys.stderr)
            return 2
        sys.argv = [target[1], *target[2:]]
        runpy.run_module(target[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = list(target)
        sys.path.insert(0, os.path.dirname(os.path.abspath(target[0])))
        runpy.run_path(target[0], run_name="__main__")
    return 0


def _not_listening(exc: OSError, target: list[str]) -> str:
    """One line: the agent did not start and why (naming the address or file), that the
    program runs without it, and, for a taken port, how services can share the host."""
    program = " ".join(target[:2]) if target[0] == "-m" else target[0]
    why = exc.strerror or str(exc)
    if exc.filename:
        why += f": {exc.filename}"
    hint = ""
    if exc.errno == errno.EADDRINUSE:
        hint = (
            " (give each service on this host its own port, --bind 127.0.0.1:7331, or"
            " --bind 127.0.0.1:0 for a free one: `observer nodes --local` finds them)"
        )
    return f"python -m agent run: agent not started, {why}; running {program} without it{hint}"


if __name__ == "__main__":
    sys.exit(main())
