"""The ``observer`` command line: one sub-command per job, parsed here and run by
observer.cli_commands (which prints through observer.cli_output).

Human tables by default, ``--json`` for scripts; exit status 0 on success, otherwise
non-zero with a one-line reason on stderr.
"""

from __future__ import annotations

import argparse
import functools
import gc
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from observer.errors import BadSetting, ObserverError
from observer.gcpause import gc_paused

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


def _check_arguments(args: argparse.Namespace) -> None:
    """Options every node command shares, checked before anything connects."""
    from observer.transport import check_timeout

    timeout = getattr(args, "timeout", None)
    if timeout is not None:
        check_timeout(timeout, "--timeout")


class _Formatter(argparse.HelpFormatter):
    """argparse's help formatter with the terminal measured once: argparse makes one for
    every argument added (to check its metavar), and each would import shutil (and its
    archive modules, ~3 ms of every call) to ask the terminal its size again."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=_help_width())


@functools.cache
def _help_width() -> int:
    """What argparse uses: the terminal's width ($COLUMNS first, else 80) less 2."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns) - 2
    try:
        return (os.get_terminal_size(sys.__stdout__.fileno()).columns or 80) - 2
    except (AttributeError, ValueError, OSError):
        return 78


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line. Given the command about to run, only its sub-parser is built
    (all of them cost every call ~5 ms); for None or an unknown word, all of them (help,
    'invalid choice' errors)."""
    parser = argparse.ArgumentParser(
        prog="observer",
        description="Inspect live Python processes running the agent.",
        formatter_class=_Formatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    only = command if command in COMMANDS else None
    for name, (fn, help_text, node, options) in COMMANDS.items():
        if only is not None and name != only:
            continue
        p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=_Formatter)
        if node:
            _node_options(p)
        p.set_defaults(func=fn)
        if options is not None:
            options(p)
    return parser


def _limit_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--limit", type=int, default=100_000, help="at most this many tasks")


def _tree_options(p: argparse.ArgumentParser) -> None:
    _limit_options(p)
    p.add_argument(
        "--no-workers",
        dest="workers",
        action="store_false",
        help="leave out what runs inside workers (by default each worker that runs an "
        "agent shows its threads, loops and tasks under its row)",
    )


def _ps_options(p: argparse.ArgumentParser) -> None:
    _limit_options(p)
    p.add_argument("--match", help="only tasks whose name or coroutine contains this")
    p.add_argument(
        "--process",
        metavar="PID|all",
        help="a worker of the node, or all: the node, then each worker running an agent "
        "(reached through the node's session)",
    )
    p.add_argument(
        "--sort",
        choices=("cpu",),
        help="cpu: tasks by CPU over the last --window seconds, busiest first, with a CPU "
        "column (needs CPU per task on: observer cpu NODE --on)",
    )
    p.add_argument("--window", type=float, default=10.0, metavar="S", help="for --sort cpu")


def _process_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--process",
        metavar="PID",
        help="the ID is in this worker of the node, reached through the node's session "
        "(or write the ID as pid-N/ID)",
    )


def _worker_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--process",
        metavar="PID",
        help="read this worker of the node instead (PID or pid-N, as ps prints it), "
        "reached through the node's session",
    )


def _with_worker(options: Options | None) -> Options:
    """A command's options plus --process PID (one worker of the node)."""

    def add(p: argparse.ArgumentParser) -> None:
        if options is not None:
            options(p)
        _worker_option(p)

    return add


def _stack_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("id", metavar="ID", help="thread-N-S or task-N as ps prints it")
    p.add_argument("--locals", action="store_true", help="also show each frame's locals")
    _process_option(p)


def _kill_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("id", metavar="ID", help="task-N, thread-N-S or pid-N as ps prints it")
    p.add_argument("--signal", choices=["TERM", "KILL", "INT"], help="for pid-N (default TERM)")
    p.add_argument("--exception", help="for a thread: builtin exception name (default SystemExit)")
    _process_option(p)


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
    _worker_option(p)
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
    p.add_argument(
        "--show",
        action="store_true",
        help="write nothing: print the fingerprint of DIR/agent.crt (or of DIR, a certificate)",
    )


def _nodes_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("nodes", metavar="NODE", nargs="*", help="agent addresses (default: remembered)")
    _credential_options(p)
    p.add_argument("--nodes-file", help="remembered nodes (default: user config dir)")
    _local_option(p)


def _local_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--local",
        action="store_true",
        help="also every agent of this user running on this host (port 0 included)",
    )


def _chaos_command_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("nodes", metavar="NODE", nargs="+", help="agent addresses")
    _credential_options(p)
    _chaos_options(p)


def _gui_command_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("nodes", metavar="NODE", nargs="*", help="agent addresses (default: remembered)")
    _credential_options(p, json_output=False)
    _gui_options(p)
    _local_option(p)


def _demo_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keys", help="key directory (default: user config dir)")
    p.add_argument("--no-wait", action="store_true", help="leave it running and return")
    p.add_argument("--no-gui", action="store_true", help="print CLI commands instead of a window")


# The options of commands whose modules hold them, imported only when that command's
# parser is built (taskcpucmd imports agent.schema, the largest import of a call).


def metrics_options(p: argparse.ArgumentParser) -> None:
    from observer.metricscmd import metrics_options

    metrics_options(p)


def profile_options(p: argparse.ArgumentParser) -> None:
    from observer.profilecmd import profile_options

    profile_options(p)


def stalls_options(p: argparse.ArgumentParser) -> None:
    from observer.stallcmd import stalls_options

    stalls_options(p)


def cpu_options(p: argparse.ArgumentParser) -> None:
    from observer.taskcpucmd import cpu_options

    cpu_options(p)


Options = Callable[[argparse.ArgumentParser], None]

# name -> (its function, "module.name" in observer: imported by main when run), help,
# takes NODE and its credentials, further options), in help order
COMMANDS: dict[str, tuple[str, str, bool, Options | None]] = {
    "ps": (
        "cli_commands.cmd_ps",
        "threads, tasks and child processes of a node",
        True,
        _ps_options,
    ),
    "tree": (
        "cli_commands.cmd_tree",
        "process -> threads -> event loops -> tasks, and children",
        True,
        _tree_options,
    ),
    "stack": (
        "cli_commands.cmd_stack",
        "full stack of a thread or await chain of a task",
        True,
        _stack_options,
    ),
    "kill": (
        "cli_commands.cmd_kill",
        "cancel a task, raise in a thread, or signal a child process",
        True,
        _kill_options,
    ),
    "info": (
        "cli_commands.cmd_info",
        "process facts: python, memory, fds, gc, exposed objects",
        True,
        _worker_option,
    ),
    "mem": (
        "cli_commands.cmd_mem",
        "memory: RSS/USS, GC, objects by type and their growth, tracemalloc",
        True,
        _mem_options,
    ),
    "audit": (
        "cli_commands.cmd_audit",
        "recent control actions recorded by the agent",
        True,
        _audit_options,
    ),
    "history": (
        "cli_commands.cmd_history",
        "the agent's load history",
        True,
        _with_worker(_history_options),
    ),
    "metrics": (
        "metricscmd.cmd_metrics",
        "the node's Prometheus metrics as a scrape sees them",
        True,
        metrics_options,
    ),
    "stalls": (
        "stallcmd.cmd_stalls",
        "event-loop stalls: when a loop was blocked, for how long, by which line",
        True,
        _with_worker(stalls_options),
    ),
    "cpu": (
        "taskcpucmd.cmd_cpu",
        "CPU per asyncio task over the last seconds, busiest first (--on/--off: operator)",
        True,
        cpu_options,
    ),
    "profile": (
        "profilecmd.cmd_profile",
        "sample the node's stacks for a while: flame graph exports, busiest functions",
        True,
        _with_worker(profile_options),
    ),
    "keygen": (
        "cli_commands.cmd_keygen",
        "create agent certificate, key and tokens in DIR",
        False,
        _keygen_options,
    ),
    "nodes": (
        "cli_commands.cmd_nodes",
        "status and load of many nodes, one row each",
        False,
        _nodes_options,
    ),
    "chaos": (
        "cli_commands.cmd_chaos",
        "kill matching tasks, threads or child processes at random and time their recovery",
        False,
        _chaos_command_options,
    ),
    "gui": (
        "cli_commands.cmd_gui",
        "open the desktop observer on nodes",
        False,
        _gui_command_options,
    ),
    "demo": (
        "cli_commands.cmd_demo",
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
    parser.add_argument(
        "--worker",
        metavar="PID|N|NAME",
        help="open this worker of the (first) node as a node of its own: its pid, its "
        "place among the workers oldest first (1 = oldest), or a glob on its role label "
        "('http-worker-2', 'ForkPoolWorker-*')",
    )
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
    # Start-up (parsing, importing the command's modules and, for a node command, the
    # client) runs with the cyclic GC paused, and what it made is then set aside from the
    # GC's scans (gc.freeze) while the command runs: some forty young collections, each
    # scanning the modules just imported, were ~10 ms of a 110 ms `observer ps`. Put back
    # (gc.unfreeze, into the oldest generation) when the command returns, so a caller in
    # the same process finds its GC as it was; never where someone else froze objects.
    freeze = gc.get_freeze_count() == 0
    with gc_paused():
        words = list(sys.argv[1:] if argv is None else argv)
        parser = build_parser(words[0] if words else "gui")
        args = _parse(parser, words)
        if args.command is None and not words:
            args = parser.parse_args(["gui"])  # plain `observer` opens the window
        if not getattr(args, "func", None):
            parser.print_help()
            return EXIT_USAGE
        run = _command(args.func, COMMANDS[args.command][2])
        if freeze:
            gc.freeze()
    try:
        _check_arguments(args)
        return run(args)
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
    finally:
        if freeze:
            gc.unfreeze()


def run() -> NoReturn:
    """The ``observer`` program (``python -m observer``, the console script): main(), its
    output flushed, then the process ends without tearing the interpreter down when
    nothing is left that would run then (no thread but this one, no atexit callback
    but the agent package's, with no agent to stop): unloading every module, OpenSSL's
    cleanup and a last full collection were ~9 ms of CPU of a ~70 ms `observer ps`,
    spent on memory the kernel frees anyway. Anything else, or a flush that fails,
    ends as a plain ``sys.exit`` would."""
    import atexit

    count = getattr(atexit, "_ncallbacks", None)  # CPython's; elsewhere: exit normally
    before = count() if count is not None else -1
    had_agent = "agent" in sys.modules
    code = main()
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except Exception:
        sys.exit(code)  # Python reports it on its way out, as it always did
    if before == 0 and count is not None and _nothing_at_exit(count(), had_agent):
        os._exit(code)
    sys.exit(code)


def _nothing_at_exit(registered: int, had_agent: bool) -> bool:
    """Whether interpreter shutdown would run nothing of anyone's, given the atexit
    registrations made during main() (CPython counts registrations, unregistered ones
    too): none but the agent package's own (made when a command imported it: it stops
    a running agent, and none runs here), no other thread to wait for or cut short, no
    interactive prompt to come."""
    agent = sys.modules.get("agent")
    expected = 0
    if agent is not None and not had_agent:
        if agent._server is not None or agent._dormant is not None:
            return False
        expected = 1  # agent/__init__'s atexit.register(stop)
    if registered != expected or sys.flags.inspect:
        return False
    threading = sys.modules.get("threading")
    return threading is None or threading.active_count() == 1


def _command(where: str, node: bool) -> Callable[[argparse.Namespace], int]:
    """The function a COMMANDS entry names ("module.function" in observer), imported now;
    for a command that talks to a node, the client too (it would be imported anyway)."""
    module, _, name = where.rpartition(".")
    if node:
        importlib.import_module("observer.client")
    return getattr(importlib.import_module(f"observer.{module}"), name)


if __name__ == "__main__":
    run()
