"""The ``observer`` command: a thin front end over observer.client.

Human tables by default, ``--json`` for scripts; exit status 0 on success, otherwise
non-zero with a one-line reason on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from observer.errors import BadSetting, ObserverError

EXIT_ERROR = 1
EXIT_USAGE = 2


def _node_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("node", metavar="NODE", help="agent address, host:port")
    _credential_options(parser)


def _credential_options(parser: argparse.ArgumentParser, json_output: bool = True) -> None:
    parser.add_argument("--token-file", help="file holding the token (or set OBSERVER_TOKEN)")
    parser.add_argument("--fingerprint", help="pinned agent certificate, sha256:HEX")
    parser.add_argument("--cafile", help="CA bundle to verify the agent certificate instead")
    parser.add_argument("--cert", help="client certificate for mTLS")
    parser.add_argument("--key", help="client key for mTLS")
    parser.add_argument(
        "--no-tls", action="store_true", help="plain TCP (only for agents bound to loopback)"
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per call")
    if json_output:
        parser.add_argument("--json", action="store_true", help="machine-readable output")


def _spec(args: argparse.Namespace, address: str):  # type: ignore[no-untyped-def]
    """The node at ``address`` with the command line's credential options."""
    from observer.nodesfile import NodeSpec

    return NodeSpec(
        address=address,
        token_file=args.token_file or "",
        fingerprint=args.fingerprint or "",
        cafile=args.cafile or "",
        certfile=args.cert or "",
        keyfile=args.key or "",
        tls=not args.no_tls,
        timeout=args.timeout,
    )


def _connect(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from observer.client import connect

    node = connect(args.node, **_spec(args, args.node).connect_kwargs())
    if node.cert_warning:
        print(f"warning: {node.cert_warning}", file=sys.stderr)
    return node


def _check_arguments(args: argparse.Namespace) -> None:
    """Options every node command shares, checked before anything connects."""
    from observer.transport import check_timeout

    timeout = getattr(args, "timeout", None)
    if timeout is not None:
        check_timeout(timeout, "--timeout")


def _print_json(value: Any) -> None:
    """Records become objects keyed by field name; everything else is plain JSON."""
    from observer.format import to_json

    sys.stdout.write(to_json(value))
    sys.stdout.write("\n")


def _emit(args: argparse.Namespace, value: Any, text: str) -> int:
    """``value`` as JSON with --json, else one line of ``text``; exit status 0."""
    if args.json:
        _print_json(value)
    else:
        print(text)
    return 0


def _print_sections(sections: list[tuple[str, list[tuple[str, str]]]]) -> None:
    """(section, [(key, value)]) as the GUI's fact trees show them, in plain text."""
    for section, rows in sections:
        print(section)
        for key, value in rows:
            print(f"  {key:>28}  {value}")


# ---------------------------------------------------------------- commands


def cmd_ps(args: argparse.Namespace) -> int:
    from observer.format import (
        AGE_BOUND_NOTE,
        human_bytes,
        human_seconds,
        short_path,
        table,
        task_columns,
    )

    with _connect(args) as node:
        snap = node.snapshot(limit=args.limit, match=args.match or "")
    if args.json:
        _print_json(
            {
                "node": snap.process.node,
                "pid": snap.process.pid,
                "threads": snap.threads,
                "tasks": snap.tasks,
                "loops": snap.loops,
                "children": snap.children,
                "tasks_total": snap.tasks_total,
                "truncated": snap.truncated,
            }
        )
        return 0
    p = snap.process
    print(
        f"{p.node}  pid {p.pid}  {p.implementation} {p.python_version}  "
        f"cpu {p.cpu_percent:.1f}%  rss {human_bytes(p.rss)}  up {human_seconds(p.uptime)}  "
        f"threads {len(snap.threads)}  tasks {p.num_tasks}  children {len(snap.children)}"
    )
    print()
    print(
        table(
            ["ID", "NAME", "STATE", "CPU", "FUNCTION", "LOCATION"],
            [
                (
                    t.id,
                    t.name + (" [agent]" if t.is_agent else ""),
                    t.state,
                    f"{t.cpu_time:.2f}s" if t.cpu_time is not None else "",
                    t.function,
                    f"{short_path(t.file)}:{t.line}" if t.file else "",
                )
                for t in snap.threads
            ],
        )
    )
    print()
    print(
        table(
            ["ID", "NAME", "STATE", "AGE", "COROUTINE", "SUSPENDED AT", "AWAITING"],
            [task_columns(t) for t in snap.tasks],
        )
    )
    if any(not t.age_exact for t in snap.tasks):
        print(f"\nAGE >= ...: {AGE_BOUND_NOTE}")
    if snap.truncated:
        print(f"\n{len(snap.tasks)} of {snap.tasks_total} tasks shown (use --limit)")
    if snap.children:
        print()
        print(
            table(
                ["ID", "NAME", "STATUS", "CPU", "RSS", "COMMAND"],
                [
                    (
                        c.id,
                        c.name + (f" [agent {c.agent}]" if c.agent else ""),
                        c.status,
                        f"{c.cpu_percent:.1f}%" if c.cpu_percent is not None else "",
                        human_bytes(c.rss),
                        " ".join(c.cmdline),
                    )
                    for c in snap.children
                ],
            )
        )
    return 0


def cmd_tree(args: argparse.Namespace) -> int:
    from observer.format import short_path, tree_task_parts
    from observer.tree import build_tree

    with _connect(args) as node:
        snap = node.snapshot(limit=args.limit)
    root = build_tree(snap)
    if args.json:
        _print_json(root)
        return 0
    for depth, item in root.walk():
        parts = [f"{'  ' * depth}{item.kind} {item.name}", f"({item.id})"]
        if item.state:
            parts.append(item.state)
        if item.cpu:
            parts.append(item.cpu)
        if item.kind == "task":
            parts.extend(tree_task_parts(item))
            print("  ".join(parts))
            continue
        if item.function:
            parts.append(item.function)
        if item.location:
            file, _, line = item.location.rpartition(":")
            parts.append(f"{short_path(file)}:{line}")
        print("  ".join(parts))
    if snap.truncated:
        print(f"({len(snap.tasks)} of {snap.tasks_total} tasks shown; use --limit)")
    return 0


def cmd_stack(args: argparse.Namespace) -> int:
    with _connect(args) as node:
        stack, frames_locals = node.stack_with_locals(args.id, with_locals=args.locals)
    if args.json:
        _print_json({"stack": stack, "locals": frames_locals})
        return 0
    print(f"{stack.kind} {stack.name} ({stack.target}) {stack.state} - {stack.note}")
    if stack.awaiting:
        print(f"awaiting: {', '.join(stack.awaiting)}")
    for i, frame in enumerate(stack.frames):
        print(f'  File "{frame.file}", line {frame.line}, in {frame.function}')
        if frame.source:
            print(f"    {frame.source}")
        if args.locals and i < len(frames_locals):
            for var in frames_locals[i].variables:
                print(f"      {var.name} = {var.repr}")
    return 0


def cmd_kill(args: argparse.Namespace) -> int:
    with _connect(args) as node:
        result = node.kill(args.id, signal=args.signal, exception=args.exception)
    return _emit(args, result, result.message)


def cmd_info(args: argparse.Namespace) -> int:
    from observer.format import process_facts

    with _connect(args) as node:
        p = node.process()
    if args.json:
        _print_json(p)
        return 0
    _print_sections(process_facts(p))
    return 0


def cmd_mem(args: argparse.Namespace) -> int:
    if args.tool is not None:
        return _cmd_tracemalloc(args)
    from observer.format import census_text, human_bytes, memory_facts, signed_bytes, table

    with _connect(args) as node:
        memory = node.memory()
        census = node.census(args.top, baseline=args.baseline, growth=args.growth)
    if args.json:
        import dataclasses

        out = dataclasses.asdict(memory)
        meta = dataclasses.asdict(census)
        out["types"] = meta.pop("types")
        growth = meta.pop("growth")
        if args.growth:
            out["growth"] = growth
        out["census"] = meta
        _print_json(out)
        return 0
    _print_sections(memory_facts(memory))
    print(f"Census: {census_text(census)}")
    if args.baseline:
        print("Baseline recorded: `observer mem NODE --growth` shows what grows from here.")
    if args.growth:
        print(
            table(
                ["TYPE", "COUNT", "DELTA", "SIZE", "SIZE DELTA"],
                [
                    (
                        g.type,
                        f"{g.count:,}",
                        f"+{g.delta:,}",
                        human_bytes(g.size),
                        signed_bytes(g.size_delta),
                    )
                    for g in census.growth
                ],
                max_width=70,
            )
            if census.growth
            else "Nothing grew since the baseline."
        )
        return 0
    print(
        table(
            ["TYPE", "COUNT", "SIZE"],
            [(t.type, f"{t.count:,}", human_bytes(t.size)) for t in census.types],
            max_width=70,
        )
    )
    return 0


def _cmd_tracemalloc(args: argparse.Namespace) -> int:
    from observer.format import (
        human_bytes,
        short_path,
        signed_bytes,
        table,
        trace_text,
        tracemalloc_text,
    )

    action = args.action or "status"
    with _connect(args) as node:
        if action in ("start", "stop"):
            result = (
                node.tracemalloc_start(args.frames, keep=args.keep)
                if action == "start"
                else node.tracemalloc_stop()
            )
            return _emit(args, result, result.message)
        if action == "baseline":
            stamp = node.tracemalloc_baseline()
            text = "tracemalloc baseline recorded: `tracemalloc diff` shows what grows from here."
            return _emit(args, {"baseline": stamp}, text)
        if action == "status":
            status = node.memory().tracemalloc
            return _emit(args, status, tracemalloc_text(status))
        diff = action == "diff"
        stats = (
            node.tracemalloc_diff(args.top, args.group)
            if diff
            else node.tracemalloc_top(args.top, args.group)
        )
    if args.json:
        _print_json(stats)
        return 0
    print(trace_text(stats))
    if not stats.status.tracing:
        return 0
    headers = (
        ["SIZE", "BLOCKS"] + (["SIZE DIFF", "BLOCKS DIFF"] if diff else []) + ["WHERE", "SOURCE"]
    )
    rows = []
    for site in stats.sites:
        where = short_path(site.file, 3) + (f":{site.line}" if site.line else "")
        row: list[object] = [human_bytes(site.size), f"{site.count:,}"]
        if diff:
            row += [signed_bytes(site.size_diff), f"{site.count_diff:+,}"]
        rows.append([*row, where, site.source])
        if args.group == "traceback":
            rows += [
                ["", ""] + (["", ""] if diff else []) + [f"  from {short_path(tb, 3)}", ""]
                for tb in site.traceback[1:]
            ]
    print(table(headers, rows, max_width=80))
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    import time

    from observer.format import table

    with _connect(args) as node:
        records = node.audit(args.limit)
    if args.json:
        _print_json(records)
        return 0
    print(
        table(
            ["TIME", "PEER", "ROLE", "ACTION", "TARGET", "RESULT", "DETAIL"],
            [
                (
                    time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.time)),
                    r.peer,
                    r.role,
                    r.action,
                    r.target,
                    r.result,
                    r.detail,
                )
                for r in records
            ],
            max_width=100,
        )
    )
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    import time

    from observer.format import human_bytes, table

    with _connect(args) as node:
        history = node.history()
    if args.json:
        _print_json(history)
        return 0
    print(
        table(
            ["TIME", "CPU%", "RSS", "THREADS", "+AGENT", "TASKS", "LOOP LAG", "GC"],
            [
                (
                    time.strftime("%H:%M:%S", time.localtime(s.time)),
                    f"{s.cpu_percent:.1f}",
                    human_bytes(s.rss),
                    s.threads,
                    s.agent_threads,
                    s.tasks,
                    f"{s.loop_lag * 1000:.1f}ms" if s.loop_lag is not None else "",
                    s.gc_collections,
                )
                for s in history.samples[-args.last :]
            ],
        )
    )
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    from observer.keygen import generate

    hosts = tuple(args.host) if args.host else ("localhost", "127.0.0.1", "::1")
    try:
        km = generate(args.dir, hosts=hosts, overwrite=args.force)
    except FileExistsError as exc:
        raise ObserverError(f"{exc} (use --force)") from exc
    d = km.directory.resolve()
    print(f"wrote {km.cert}, {km.key}, {km.viewer_token}, {km.operator_token}")
    print(f"fingerprint: {km.fingerprint}")
    print(f"certificate expires on {km.not_after:%Y-%m-%d} (renew with --force before then)")
    print()
    print("embed the agent (in the production process):")
    print(
        f'  agent.start("127.0.0.1:7330", tls_cert="{d}/agent.crt", tls_key="{d}/agent.key",\n'
        f'              tokens={{"viewer": open("{d}/viewer.token").read().strip(),\n'
        f'                      "operator": open("{d}/operator.token").read().strip()}})'
    )
    print("or with environment variables:")
    print("  OBSERVER_AGENT_BIND=127.0.0.1:7330")
    print(f"  OBSERVER_AGENT_TOKEN_DIR={d}")
    print()
    print("connect (from the operator's machine):")
    print(f"  observer ps HOST:7330 --token-file {d}/operator.token --fingerprint {km.fingerprint}")
    return 0


def nodes_path(args: argparse.Namespace) -> Path:
    """The remembered-nodes file: ``--nodes-file``, else the one in the user config dir."""
    from observer.nodesfile import default_nodes_path

    return Path(args.nodes_file) if args.nodes_file else default_nodes_path()


def gui_specs(args: argparse.Namespace) -> list:  # type: ignore[type-arg]
    """Nodes for the window: those named on the command line, else the remembered ones."""
    from observer.nodesfile import load_nodes

    if not args.nodes:
        return load_nodes(nodes_path(args))
    return [_spec(args, address) for address in args.nodes]


def cmd_nodes(args: argparse.Namespace) -> int:
    from observer.fleet import Fleet
    from observer.format import cluster_table

    specs = gui_specs(args)
    if not specs:
        raise ObserverError(f"no nodes: name some, or remember them in {nodes_path(args)}")
    with Fleet(specs) as fleet:
        rows = fleet.refresh()
        errors = fleet.errors + [
            f"{link.label}: {link.cert_warning}"
            for link in fleet.links.values()
            if link.cert_warning
        ]
    if args.json:
        _print_json(rows)
    else:
        print(cluster_table(rows))
    for error in errors:
        print(f"warning: {error}", file=sys.stderr)
    return 0


def cmd_chaos(args: argparse.Namespace) -> int:
    """Run chaos in a worker thread so Ctrl-C only stops it: the summary still prints."""
    import time

    from observer.chaos import Chaos, ChaosEvent

    def show(event: ChaosEvent) -> None:
        if event.kind == "error":
            print(f"warning: {event.text}", file=sys.stderr, flush=True)
        elif not args.json and event.kind != "end":
            stamp = time.strftime("%H:%M:%S", time.localtime(event.time))
            print(f"{stamp}.{int(event.time * 1000) % 1000:03d}  {event.text}", flush=True)

    given = {
        key: value
        for key in ("kind", "every", "recovery_timeout", "exception")
        if (value := getattr(args, key)) is not None
    }
    chaos = Chaos(
        gui_specs(args),
        args.match,
        action=args.action,
        count=args.count,
        duration=args.duration,
        seed=args.seed,
        dry_run=args.dry_run,
        on_event=show,
        **given,
    ).start()
    status = 0
    try:
        summary = chaos.join(0.5)
        while summary is None:
            summary = chaos.join(0.5)
    except KeyboardInterrupt:
        print("stopping the chaos run…", file=sys.stderr, flush=True)
        chaos.stop()
        summary = chaos.join()
        status = 130
    assert summary is not None
    if args.json:
        _print_json(summary.to_dict())
    else:
        print(summary.text())
    return status


def cmd_gui(args: argparse.Namespace) -> int:
    from observer.gui.app import run_window

    return run_window(
        gui_specs(args),
        nodes_file=nodes_path(args),
        tab=args.tab,
        screenshot=Path(args.screenshot) if args.screenshot else None,
        after=args.after,
        verbose=args.verbose or None,  # None: $OBSERVER_VERBOSE decides
    )


def cmd_demo(args: argparse.Namespace) -> int:
    from observer.demo.launch import run

    return run(args)


# ---------------------------------------------------------------- parser


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line. Given the command about to run, only its sub-parser is built
    (all of them cost every call ~5 ms); for None or an unknown word, all of them (help,
    'invalid choice' errors)."""
    parser = argparse.ArgumentParser(
        prog="observer", description="Inspect live Python processes running the agent."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    only = command if command in COMMANDS else None
    for name, (fn, help_text, node, options) in COMMANDS.items():
        if only is not None and name != only:
            continue
        p = sub.add_parser(name, help=help_text, description=help_text)
        if node:
            _node_options(p)
        p.set_defaults(func=fn)
        if options is not None:
            options(p)
    return parser


def _limit_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--limit", type=int, default=100_000, help="at most this many tasks")


def _ps_options(p: argparse.ArgumentParser) -> None:
    _limit_options(p)
    p.add_argument("--match", help="only tasks whose name or coroutine contains this")


def _stack_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("id", metavar="ID", help="thread-N-S or task-N as ps prints it")
    p.add_argument("--locals", action="store_true", help="also show each frame's locals")


def _kill_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("id", metavar="ID", help="task-N, thread-N-S or pid-N as ps prints it")
    p.add_argument("--signal", choices=["TERM", "KILL", "INT"], help="for pid-N (default TERM)")
    p.add_argument("--exception", help="for a thread: builtin exception name (default SystemExit)")


def _mem_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("tool", nargs="?", choices=["tracemalloc"], help="tracemalloc ACTION")
    p.add_argument(
        "action",
        nargs="?",
        choices=["start", "stop", "top", "diff", "baseline", "status"],
        help="start/stop/baseline need the operator role; diff compares with the baseline",
    )
    p.add_argument("--top", type=int, default=25, help="show the N largest (default 25)")
    growth = p.add_mutually_exclusive_group()
    growth.add_argument(
        "--baseline", action="store_true", help="record the node's census baseline (operator)"
    )
    growth.add_argument("--growth", action="store_true", help="types grown since the baseline")
    p.add_argument("--frames", type=int, default=10, help="tracemalloc start: frames kept")
    p.add_argument(
        "--keep",
        action="store_true",
        help="tracemalloc start: keep tracing after this command ends (until stop or the "
        "agent stops); without it tracing stops when this command's connection closes",
    )
    p.add_argument(
        "--group",
        choices=["lineno", "traceback", "filename"],
        default="lineno",
        help="tracemalloc top/diff: group allocations by line, traceback or file",
    )


def _audit_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--limit", type=int, default=100)


def _history_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--last", type=int, default=30, help="show the last N samples")


def _keygen_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--host", action="append", help="host name/IP for the certificate (repeat)")
    p.add_argument("--force", action="store_true", help="overwrite existing files")


def _nodes_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("nodes", metavar="NODE", nargs="*", help="agent addresses (default: remembered)")
    _credential_options(p)
    p.add_argument("--nodes-file", help="remembered nodes (default: user config dir)")


def _chaos_command_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("nodes", metavar="NODE", nargs="+", help="agent addresses")
    _credential_options(p)
    _chaos_options(p)


def _gui_command_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("nodes", metavar="NODE", nargs="*", help="agent addresses (default: remembered)")
    _credential_options(p, json_output=False)
    _gui_options(p)


def _demo_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keys", help="key directory (default: user config dir)")
    p.add_argument("--no-wait", action="store_true", help="leave it running and return")
    p.add_argument("--no-gui", action="store_true", help="print CLI commands instead of a window")


Options = Callable[[argparse.ArgumentParser], None]

# name -> (function, help, takes NODE and its credentials, further options), in help order
COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], str, bool, Options | None]] = {
    "ps": (cmd_ps, "threads, tasks and child processes of a node", True, _ps_options),
    "tree": (
        cmd_tree,
        "process -> threads -> event loops -> tasks, and children",
        True,
        _limit_options,
    ),
    "stack": (cmd_stack, "full stack of a thread or await chain of a task", True, _stack_options),
    "kill": (
        cmd_kill,
        "cancel a task, raise in a thread, or signal a child process",
        True,
        _kill_options,
    ),
    "info": (cmd_info, "process facts: python, memory, fds, gc, exposed objects", True, None),
    "mem": (
        cmd_mem,
        "memory: RSS/USS, GC, objects by type and their growth, tracemalloc",
        True,
        _mem_options,
    ),
    "audit": (cmd_audit, "recent control actions recorded by the agent", True, _audit_options),
    "history": (cmd_history, "the agent's load history", True, _history_options),
    "keygen": (
        cmd_keygen,
        "create agent certificate, key and tokens in DIR",
        False,
        _keygen_options,
    ),
    "nodes": (
        cmd_nodes,
        "status and load of many nodes, one row each",
        False,
        _nodes_options,
    ),
    "chaos": (
        cmd_chaos,
        "kill matching tasks, threads or child processes at random and time their recovery",
        False,
        _chaos_command_options,
    ),
    "gui": (cmd_gui, "open the desktop observer on nodes", False, _gui_command_options),
    "demo": (
        cmd_demo,
        "run the demo service with the agent embedded",
        False,
        _demo_options,
    ),
}


def _chaos_options(parser: argparse.ArgumentParser) -> None:
    """Options left out stay None, so observer.chaos's defaults apply (and the parser does
    not import the engine: building it stays cheap for every other command)."""
    parser.add_argument(
        "--match", required=True, metavar="GLOB", help="target names, e.g. 'worker-*'"
    )
    parser.add_argument(
        "--kind", choices=["task", "thread", "process"], help="what to hit (default task)"
    )
    parser.add_argument(
        "--action",
        choices=["cancel", "raise", "term", "kill"],
        help="default by kind: task cancel, thread raise, process term",
    )
    parser.add_argument(
        "--every", type=float, metavar="SECONDS", help="between actions (default 1)"
    )
    howlong = parser.add_mutually_exclusive_group()
    howlong.add_argument("--count", type=int, help="this many actions (default 1)")
    howlong.add_argument("--duration", type=float, metavar="SECONDS", help="act for this long")
    parser.add_argument("--seed", type=int, help="repeat a run's picks (default: random, printed)")
    parser.add_argument("--dry-run", action="store_true", help="pick and report, touch nothing")
    parser.add_argument(
        "--recovery-timeout",
        type=float,
        metavar="SECONDS",
        help="wait this long for each replacement (default 15)",
    )
    parser.add_argument("--exception", help="for threads: builtin exception (default SystemExit)")


def _gui_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--nodes-file",
        "--nodes",
        dest="nodes_file",
        metavar="FILE",
        help="remembered nodes, opened when none is named (default: user config dir)",
    )
    from observer.gui import TABS  # imports nothing else: no Qt needed to build the parser

    parser.add_argument("--tab", choices=TABS, help="tab to open on")
    parser.add_argument("--screenshot", metavar="PNG", help="save the window as PNG and exit")
    parser.add_argument(
        "--after", type=float, default=1.0, help="seconds to wait after the first data"
    )
    parser.add_argument("--verbose", action="store_true", help="show Qt's own messages too")


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse ``argv``; ``mem`` takes its words after the node options too
    (``observer mem NODE --token-file F tracemalloc top``), which needs intermixed parsing."""
    if argv[:1] == ["mem"]:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                args = action.choices["mem"].parse_intermixed_args(argv[1:])
                args.command = "mem"
                return args
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(words[0] if words else "gui")
    args = _parse(parser, words)
    if args.command is None and not words:
        args = parser.parse_args(["gui"])  # plain `observer` opens the window
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        _check_arguments(args)
        return args.func(args)
    except BadSetting as exc:  # a malformed value the user typed: a usage error
        print(f"observer: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ObserverError as exc:
        print(f"observer: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
