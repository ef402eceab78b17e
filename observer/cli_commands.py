"""The ``observer`` command's commands: each takes the parsed arguments, asks the client
(one node, or many through the fleet or a chaos run) and hands the result to
observer.cli_output; it returns the exit status. Failures are ObserverErrors, which
observer.cli turns into one line on stderr.

What only some commands need (the client, the fleet, keygen, Qt) is imported by them,
so a call pays only for its own command.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from observer import cli_output as out
from observer.errors import ObserverError

if TYPE_CHECKING:
    from observer.client import Node
    from observer.nodesfile import NodeSpec


# ---------------------------------------------------------------- nodes from arguments


def node_spec(args: argparse.Namespace, address: str) -> NodeSpec:
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


def nodes_path(args: argparse.Namespace) -> Path:
    """The remembered-nodes file: ``--nodes-file``, else the one in the user config dir."""
    from observer.nodesfile import default_nodes_path

    return Path(args.nodes_file) if args.nodes_file else default_nodes_path()


def gui_specs(args: argparse.Namespace) -> list[NodeSpec]:
    """Nodes for the window: those named on the command line (and with ``--local`` the
    agents running on this host), else the remembered ones."""
    from observer.nodesfile import load_nodes

    local = getattr(args, "local", False)
    if not args.nodes and not local:
        return load_nodes(nodes_path(args))
    addresses = list(args.nodes)
    if local:
        from agent.registry import local_agents

        addresses += [a for a in local_agents().values() if a not in addresses]
    return [node_spec(args, address) for address in addresses]


def _connect(args: argparse.Namespace) -> Node:
    from observer.client import connect

    node = connect(args.node, **node_spec(args, args.node).connect_kwargs())
    if node.cert_warning:
        print(f"warning: {node.cert_warning}", file=sys.stderr)
    return node


# ---------------------------------------------------------------- one node


def cmd_ps(args: argparse.Namespace) -> int:
    from observer.taskcpucmd import task_cpu_map

    exits: tuple[Any, ...] = ()
    match = args.match or ""
    with _connect(args) as node:
        if args.process == "all":  # the node, then every worker at once through it
            processes: list[Any] = [node]
            snaps = [node.snapshot(limit=args.limit, match=match)]
            found, workers = node.worker_snapshots(limit=args.limit, match=match)
            for pid, snap in sorted(workers.items()):
                if isinstance(snap, ObserverError):
                    print(f"worker {pid}: {snap}", file=sys.stderr)
                else:
                    snaps.append(snap)
                    processes.append(node.worker(pid))
            exits = found.exits
        else:
            processes = _processes(node, args)
            snaps = [n.snapshot(limit=args.limit, match=match) for n in processes]
        cpus = [task_cpu_map(n, args.window) if args.sort == "cpu" else None for n in processes]
    if args.sort == "cpu" and all(c is None for c in cpus):
        return 1
    if args.json:
        if args.process == "all":
            out.print_json([out.ps_json(s, c) for s, c in zip(snaps, cpus, strict=True)])
        else:
            out.print_json(out.ps_json(snaps[0], cpus[0]))
    else:
        print("\n\n".join(out.ps_text(s, c) for s, c in zip(snaps, cpus, strict=True)))
        if exits:
            print("\n" + out.exits_text(exits))
    return 0


def _processes(node: Node, args: argparse.Namespace) -> list[Any]:
    """--process: the node itself (none) or one worker (PID), reached through the node's
    session (``all`` is cmd_ps's: one fan-out)."""
    if not args.process:
        return [node]
    return [node.worker(args.process)]


def one_process(node: Node, args: argparse.Namespace) -> Any:
    """--process PID: that worker of the node (reached through the node's session), read
    as the node itself would be; without it, the node."""
    process = getattr(args, "process", None)
    return node.worker(process) if process else node


def worker_pid(node: Node) -> int | None:
    """The pid of a worker reached through its master (one_process), else None."""
    from observer.client import WorkerNode  # loaded already: a node exists

    return node.pid if isinstance(node, WorkerNode) else None


def _in_process(node: Node, args: argparse.Namespace) -> tuple[Any, str]:
    """The process an ID lives in and the ID there: ``--process PID`` or ``pid-N/ID``."""
    pid, sep, rest = args.id.partition("/")
    if sep and pid.startswith("pid-"):
        return node.worker(pid), rest
    return (node.worker(args.process) if args.process else node), args.id


def _worker_snapshots(node: Node, snap: Any, limit: int) -> tuple[dict[int, Any], Any]:
    """Each worker's snapshot (one that runs an agent), all in one round trip through
    the node, and the worker set (how recent workers ended); a worker that cannot answer
    (it just died, or is frozen) gives why, not a failed command."""
    pids = [child.pid for child in snap.children if child.agent]
    found, snaps = node.worker_snapshots([node.worker(pid) for pid in pids], limit=limit)
    workers = {
        pid: f"unreachable: {got}" if isinstance(got, ObserverError) else got
        for pid, got in snaps.items()
    }
    return workers, found


def cmd_tree(args: argparse.Namespace) -> int:
    from observer.tree import build_tree, graft_workers

    exits: tuple[Any, ...] = ()
    with _connect(args) as node:
        snap = node.snapshot(limit=args.limit)
        workers: dict[int, Any] = {}
        if args.workers:
            workers, found = _worker_snapshots(node, snap, args.limit)
            exits = found.exits
    root = graft_workers(build_tree(snap), workers, exits)
    if args.json:
        out.print_json(root)
    else:
        print(out.tree_text(root, snap))
    return 0


def cmd_stack(args: argparse.Namespace) -> int:
    with _connect(args) as node:
        where, target = _in_process(node, args)
        stack, frames_locals = where.stack_with_locals(target, with_locals=args.locals)
    if args.json:
        out.print_json({"stack": stack, "locals": frames_locals})
    else:
        print(out.stack_text(stack, frames_locals, args.locals))
    return 0


def cmd_kill(args: argparse.Namespace) -> int:
    with _connect(args) as node:
        where, target = _in_process(node, args)
        result = where.kill(target, signal=args.signal, exception=args.exception)
    return out.emit(args.json, result, result.message)


def cmd_info(args: argparse.Namespace) -> int:
    from observer.format import process_facts

    with _connect(args) as node:  # one round trip: the process and its threads
        p, _children, _exits, threads = one_process(node, args).system()
    if args.json:
        out.print_json(p)
    else:  # the host's threads apart from the agent's own, as the System tab counts them
        agent_threads = sum(t.is_agent and t.alive for t in threads)
        print(out.sections_text(process_facts(p, agent_threads)))
    return 0


def cmd_mem(args: argparse.Namespace) -> int:
    if args.tool is not None:
        return _cmd_tracemalloc(args)
    with _connect(args) as session:
        node = one_process(session, args)
        memory = node.memory()
        census = node.census(args.top, baseline=args.baseline, growth=args.growth)
    if args.json:
        out.print_json(out.mem_json(memory, census, args.growth))
    else:
        print(out.mem_text(memory, census, args.baseline, args.growth, worker_pid(node)))
    return 0


def _cmd_tracemalloc(args: argparse.Namespace) -> int:
    from observer.format import tracemalloc_text

    action = args.action or "status"
    with _connect(args) as session:
        node = one_process(session, args)
        if action in ("start", "stop"):
            result = (
                node.tracemalloc_start(args.frames, keep=args.keep)
                if action == "start"
                else node.tracemalloc_stop()
            )
            return out.emit(args.json, result, result.message)
        if action == "baseline":
            stamp = node.tracemalloc_baseline()
            text = "tracemalloc baseline recorded: `tracemalloc diff` shows what grows from here."
            return out.emit(args.json, {"baseline": stamp}, text)
        if action == "status":
            status = node.memory().tracemalloc
            return out.emit(args.json, status, tracemalloc_text(status, worker_pid(node)))
        diff = action == "diff"
        stats = (
            node.tracemalloc_diff(args.top, args.group)
            if diff
            else node.tracemalloc_top(args.top, args.group)
        )
    if args.json:
        out.print_json(stats)
    else:
        print(out.trace_sites_text(stats, diff, args.group))
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    with _connect(args) as node:
        records = node.audit(args.limit)
    if args.json:
        out.print_json(records)
    else:
        print(out.audit_text(records))
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    with _connect(args) as node:
        history = one_process(node, args).history()
    if args.json:
        out.print_json(history)
    else:
        print(out.history_text(history, args.last))
    return 0


# ---------------------------------------------------------------- keys


def cmd_keygen(args: argparse.Namespace) -> int:
    if args.show:
        from observer.keygen import certificate_facts

        try:
            facts = certificate_facts(args.dir)
        except ValueError as exc:
            raise ObserverError(str(exc)) from None
        print(out.certificate_text(*facts))
        return 0
    from observer.keygen import generate

    hosts = tuple(args.host) if args.host else ("localhost", "127.0.0.1", "::1")
    try:
        km = generate(args.dir, hosts=hosts, overwrite=args.force)
    except FileExistsError as exc:
        raise ObserverError(f"{exc} (use --force)") from exc
    print(out.keygen_text(km))
    return 0


# ---------------------------------------------------------------- many nodes


def cmd_nodes(args: argparse.Namespace) -> int:
    from observer.fleet import Fleet
    from observer.format import cluster_table

    specs = gui_specs(args)
    if not specs and args.local:
        raise ObserverError("no agent of this user is running on this host")
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
        out.print_json(rows)
    else:
        print(cluster_table(rows))
    for error in errors:
        print(f"warning: {error}", file=sys.stderr)
    return 0


def cmd_chaos(args: argparse.Namespace) -> int:
    """Run chaos in a worker thread so Ctrl-C only stops it: the summary still prints."""
    from observer.chaos import Chaos, ChaosEvent

    def show(event: ChaosEvent) -> None:
        if event.kind == "error":
            print(f"warning: {event.text}", file=sys.stderr, flush=True)
        elif not args.json and event.kind != "end":
            print(out.chaos_event_line(event), flush=True)

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
        out.print_json(summary.to_dict())
    else:
        print(summary.text())
    return status


# ---------------------------------------------------------------- programs


def cmd_gui(args: argparse.Namespace) -> int:
    from observer.gui.app import run_window

    return run_window(
        gui_specs(args),
        nodes_file=nodes_path(args),
        tab=args.tab,
        worker=args.worker,
        screenshot=Path(args.screenshot) if args.screenshot else None,
        after=args.after,
        verbose=args.verbose or None,  # None: $OBSERVER_VERBOSE decides
    )


def cmd_demo(args: argparse.Namespace) -> int:
    from observer.demo.launch import run

    return run(args)
