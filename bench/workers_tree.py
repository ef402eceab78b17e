"""The full tree of a master and its workers, fetched through the master, against one
process's own snapshot.

    python bench/workers_tree.py [--workers 8] [--tasks 1000] [--runs 7]

A master (agent with workers=True, ``--tasks`` idle asyncio tasks of its own) forks
``--workers`` workers, each with ``--tasks`` idle tasks and the agent it gets at the
fork. Measured, interleaved, ``--runs`` times each (full listings: no delta from an
earlier call):

- ``own``: the master's own snapshot on its session (one process, ``--tasks`` tasks);
- ``worker``: one worker's snapshot relayed through the master;
- ``tree``: what ``observer tree`` fetches: the master's snapshot, then every worker's
  in one round trip through the master, which asks them all at once (agent.fanout);
  when the checkout measured has no fan-out (``--root`` of an older one), each worker's
  through the master, one after another on the one session, as it did then;
- ``fanout``: that one fan-out round trip alone, its replies decoded into snapshots;
- ``steady``: a refresh as the Processes tab made it every second: the master's and
  each worker's listing a delta from the previous one (nothing changed), the workers'
  through the fan-out (one after another with an older checkout), every task's record
  handed back;
- ``changes``: the same fetch as the Processes tab made it with two round trips
  (Node.changes, then Node.worker_changes): only the records that changed (none) are
  made;
- ``combined``: that fetch in one round trip (Node.tree_changes: the master makes its
  own delta while its workers make theirs), as the Processes tab makes it now;
- ``gui``: the Processes tab's whole steady refresh in its link's worker
  (observer.gui.workers.process_tree_delta: the fetch, then the rows that changed).

``--root DIR`` measures another checkout (its agent and client) instead of this one;
run it alternately with this one to compare (see the README).

Reported: medians (and range) in ms, the tree / own ratio (issue 13's target: at most
2x) and the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if "--root" in sys.argv:
    ROOT = Path(sys.argv[sys.argv.index("--root") + 1]).resolve()
sys.path.insert(0, str(ROOT))

TARGET = 2.0


async def park(
    count: int, stop_when_orphaned: int | None, churns: list | None = None, done: int = -1
) -> None:
    """``count`` idle named tasks; ends once the master is gone (a worker's case).

    Churn (bench/gui.py): a worker replaces its ``WORKER_CHURN`` oldest tasks on SIGUSR1
    and then writes a byte to ``done`` (a pipe the master reads); the master registers in
    ``churns`` how to replace N of its own from another thread."""

    async def idle(k: int) -> None:
        await asyncio.sleep(3600 + k)

    made = [count]
    tasks = collections.deque(asyncio.create_task(idle(k), name=f"idle-{k}") for k in range(count))

    def churn(n: int) -> None:
        for _ in range(min(n, len(tasks))):
            tasks.popleft().cancel()
        for _ in range(n):
            tasks.append(asyncio.create_task(idle(made[0]), name=f"idle-{made[0]}"))
            made[0] += 1
        if done >= 0:  # after the cancelled tasks' steps, which cancel() scheduled
            asyncio.get_running_loop().call_soon(os.write, done, b".")

    loop = asyncio.get_running_loop()
    if churns is not None:
        churns.append(lambda n: loop.call_soon_threadsafe(churn, n))
        churns.append(lambda: asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop).result())
    elif int(os.environ.get("WORKER_CHURN", "0")):
        loop.add_signal_handler(signal.SIGUSR1, churn, int(os.environ["WORKER_CHURN"]))
    while stop_when_orphaned is None or os.getppid() == stop_when_orphaned:
        await asyncio.sleep(0.5)
    for task in tasks:
        task.cancel()


def host(keys: str, workers: int, tasks: int) -> None:
    """The master: agent first, then the forks, then its own tasks on a loop thread;
    ``churn N`` on stdin replaces N of the master's tasks and signals every worker to
    replace its WORKER_CHURN (answers ``churned: N``)."""
    import agent
    from tests.hosts.common import start_agent

    server = start_agent(keys, "tree-master", workers=True)
    pids = []
    done, told = os.pipe()  # each worker writes a byte once it has churned
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            try:
                asyncio.run(park(tasks, os.getppid(), done=told))
            finally:
                os._exit(0)
        pids.append(pid)
    churns: list = []
    threading.Thread(target=asyncio.run, args=(park(tasks, None, churns),), daemon=True).start()
    print(f"agent: {server.address}", flush=True)
    print(f"workers: {','.join(map(str, pids))}", flush=True)
    for line in sys.stdin:  # until the bench closes our stdin
        if line.startswith("churn ") and churns:
            count = int(line.split()[1])
            churns[0](count)
            signalled = pids if int(os.environ.get("WORKER_CHURN", "0")) else []
            for pid in signalled:
                os.kill(pid, signal.SIGUSR1)  # with no handler it would end the worker
            churns[1]()  # the master's churn ran (the loop got past it)
            got = 0
            while got < len(signalled):  # and every worker's did
                got += len(os.read(done, len(signalled) - got))
            print(f"churned: {count}", flush=True)
    agent.stop()


def gui_refresh(node):  # type: ignore[no-untyped-def]
    """The Processes tab's steady refresh, fetch and rows (observer.gui.workers), as its
    link's worker makes it every second (nothing changed: a small delta)."""
    from observer.gui.delta import Shadow
    from observer.gui.workers import process_tree_delta

    shadow = Shadow()

    def gui() -> None:
        delta = process_tree_delta(node, shadow)
        assert delta.full is None or len(shadow.rows) > 1, "no rows"

    return gui


def refresh_cpu(refresh, master: int, workers: list[int], count: int) -> tuple[float, float]:
    """CPU milliseconds (user + system, psutil) one refresh costs the master and the
    workers together, over ``count`` refreshes back to back."""
    import psutil

    procs = [psutil.Process(pid) for pid in (master, *workers)]

    def used() -> list[float]:
        return [sum(p.cpu_times()[:2]) for p in procs]

    before = used()
    for _ in range(count):
        refresh()
    after = used()
    spent = [(a - b) * 1000 / count for a, b in zip(after, before, strict=True)]
    return spent[0], sum(spent[1:])


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--host", nargs=3, metavar=("KEYS", "WORKERS", "TASKS"))
    parser.add_argument("--root", help="the checkout to measure (default: this one)")
    parser.add_argument(
        "--cpu",
        type=int,
        default=0,
        metavar="N",
        help="then N steady combined refreshes: the CPU each costs the master and the workers",
    )
    args = parser.parse_args()
    if args.host:
        host(args.host[0], int(args.host[1]), int(args.host[2]))
        return

    from observer.client import connect
    from observer.keygen import generate
    from observer.taskcache import TaskCache
    from tests.helpers import HostProcess, line_value, wait_until

    limit = args.tasks + 1000
    with tempfile.TemporaryDirectory() as tmp:
        km = generate(Path(tmp) / "keys")
        counts = [str(args.workers), str(args.tasks)]
        argv = [sys.executable, __file__, "--host", str(km.directory), *counts]
        proc = HostProcess([*argv, "--root", str(ROOT)])
        try:
            address = line_value(proc, "agent")
            pids = [int(p) for p in line_value(proc, "workers").split(",")]
            node = connect(address, token_file=km.operator_token, fingerprint=km.fingerprint)
            wait_until(
                lambda: sum(bool(c.agent) for c in node.children()) == args.workers, timeout=60
            )
            for pid in pids:  # each worker's agent built (the first call wakes it)
                node.worker(pid).snapshot(limit=limit)

            def own() -> None:
                node._tasks = TaskCache()  # a full listing, as a first look gets
                snap = node.snapshot(limit=limit)
                assert len(snap.tasks) >= args.tasks, len(snap.tasks)

            def worker() -> None:
                snap = node.worker(pids[0]).snapshot(limit=limit)  # a new WorkerNode: full
                assert len(snap.tasks) >= args.tasks, len(snap.tasks)

            fanned = hasattr(node, "worker_snapshots")

            def fanout() -> int:
                _found, snaps = node.worker_snapshots(limit=limit)  # fresh: full listings
                return sum(len(s.tasks) for s in snaps.values())

            def tree() -> None:
                node._tasks = TaskCache()
                snap = node.snapshot(limit=limit)
                if fanned:
                    seen = fanout()
                else:
                    seen = sum(
                        len(node.worker(c.pid).snapshot(limit=limit).tasks)
                        for c in snap.children
                        if c.agent
                    )
                assert seen >= args.workers * args.tasks, seen

            held = [node.worker(pid) for pid in pids]  # their task caches: deltas

            def steady() -> None:
                node.snapshot(limit=limit)
                if fanned:
                    _found, snaps = node.worker_snapshots(held, limit=limit)
                    seen = sum(len(s.tasks) for s in snaps.values())
                else:
                    seen = sum(len(w.snapshot(limit=limit).tasks) for w in held)
                assert seen >= args.workers * args.tasks, seen

            fns = {"own": own, "worker": worker, "tree": tree, "steady": steady}
            if fanned:
                fns["fanout"] = fanout
            if hasattr(node, "worker_changes"):
                changed = [node.worker(pid) for pid in pids]
                cursors = {pid: (0, 0) for pid in pids}
                mine = [(0, 0)]

                def changes() -> None:
                    mine[0] = node.changes(mine[0], limit).cursor
                    held = [(w, cursors[w.pid]) for w in changed]
                    _found, got = node.worker_changes(held, limit=limit)
                    for pid, one in got.items():
                        cursors[pid] = one.cursor

                fns["changes"] = changes
            if hasattr(node, "tree_changes"):
                joined = [node.worker(pid) for pid in pids]
                at = {pid: (0, 0) for pid in pids}
                ours = [(0, 0)]

                def combined() -> None:
                    held = [(w, at[w.pid]) for w in joined]
                    master, _found, got = node.tree_changes(ours[0], held, limit)
                    ours[0] = master.cursor
                    for pid, one in got.items():
                        at[pid] = one.cursor

                fns["combined"] = combined
            fns["gui"] = gui_refresh(node)
            figures: dict[str, list[float]] = {name: [] for name in fns}
            for fn in fns.values():
                fn()  # warm
            for run in range(args.runs):
                names = list(fns)
                order = names[run % len(names) :] + names[: run % len(names)]
                for name in order:
                    figures[name].append(timed(fns[name]))
            if args.cpu and "combined" in fns:
                spent = refresh_cpu(fns["combined"], proc.proc.pid, pids, args.cpu)
            node.close()
        finally:
            proc.stop()
    load = os.getloadavg()
    print(
        f"{ROOT}: master + {args.workers} workers x {args.tasks} tasks; {args.runs} "
        f"interleaved runs; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    for name, values in figures.items():
        m = statistics.median(values) * 1000
        print(f"  {name:7s} {m:8.1f} ms  ({min(values) * 1000:.1f}-{max(values) * 1000:.1f})")
    ratio = statistics.median(figures["tree"]) / statistics.median(figures["own"])
    verdict = "met" if ratio <= TARGET else "NOT met"
    print(f"  tree / own = {ratio:.2f}x (target <= {TARGET:g}x: {verdict})")
    ratio = statistics.median(figures["tree"]) / statistics.median(figures["worker"])
    print(f"  tree / worker = {ratio:.2f}x")
    if args.cpu and "combined" in figures:
        master, workers = spent
        print(
            f"  CPU per steady combined refresh ({args.cpu}): master {master:.2f} ms, "
            f"workers {workers:.2f} ms together ({workers / args.workers:.2f} ms each)"
        )
    for name in ("changes", "combined"):
        if name in figures:
            ratio = statistics.median(figures[name]) / statistics.median(figures["own"])
            print(f"  {name} / own = {ratio:.2f}x")


if __name__ == "__main__":
    main()
