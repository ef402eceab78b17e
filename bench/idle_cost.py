"""What an embedded agent costs a host at rest: its threads' CPU per second of wall time.

    python bench/idle_cost.py [--rounds 5] [--window 10] [--loops 1,4] [--old PATH]

Each run starts a fresh host (this file with ``--child``): the agent embedded (stall
catcher on at its default threshold, or ``--stall-threshold``), ``--loops`` event loops
(the main one plus loops in threads), each with ``--tasks`` idle tasks, nobody observing.
After a warm-up it reads each ``observer-agent*`` thread's CPU clock over ``--window``
seconds and prints ms of CPU a second, per thread and in all, and the same for the host's
own (loop) threads, which the heartbeats wake. ``--old PATH`` runs the same
host on the agent of another tree (e.g. a worktree of the old commit) too, interleaved
with this one, the order alternating every round. Reported: median, min and max of the
agent's ms/s per setting, and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def child(args: argparse.Namespace) -> None:
    """The host: agent, loops and idle tasks; prints ``result: {json}`` and exits."""
    sys.path.insert(0, args.root)
    import asyncio
    import threading

    import agent
    from agent import compat

    keys = Path(args.keys)
    agent.start(
        "127.0.0.1:0",
        tls_cert=str(keys / "agent.crt"),
        tls_key=str(keys / "agent.key"),
        tokens={"operator": (keys / "operator.token").read_text().strip()},
        name="bench-idle",
        stall_threshold=args.stall_threshold,
    )

    async def idle_loop() -> None:
        never = asyncio.Event()
        tasks = [asyncio.create_task(never.wait()) for _ in range(args.tasks)]
        await never.wait()
        del tasks

    for i in range(args.loops - 1):
        threading.Thread(
            target=asyncio.run, args=(idle_loop(),), name=f"loop-{i + 1}", daemon=True
        ).start()

    def agent_cpu() -> dict[str, float]:
        return {
            f"{t.name}#{t.native_id}": compat.thread_cpu_time(t.native_id) or 0.0
            for t in threading.enumerate()
        }

    async def measure() -> None:
        main = asyncio.create_task(idle_loop())
        await asyncio.sleep(args.warmup)
        before, t0 = agent_cpu(), time.monotonic()
        await asyncio.sleep(args.window)
        after, t1 = agent_cpu(), time.monotonic()
        per = {
            name: (after[name] - before.get(name, 0.0)) * 1000 / (t1 - t0)
            for name in after
            if after[name] - before.get(name, 0.0) > 0
        }
        ours = {k: v for k, v in per.items() if k.startswith("observer-agent")}
        host = sum(v for k, v in per.items() if k not in ours)  # the loops' threads
        result = {"total": sum(ours.values()), "host": host, "threads": ours}
        print(f"result: {json.dumps(result)}", flush=True)
        main.cancel()

    asyncio.run(measure())
    os._exit(0)


def run_one(tree: Path, keys: Path, args: argparse.Namespace) -> dict:
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", "--root", str(tree)]
    argv += ["--keys", str(keys), "--loops", str(args.loops_now), "--tasks", str(args.tasks)]
    argv += ["--window", str(args.window), "--warmup", str(args.warmup)]
    argv += ["--stall-threshold", str(args.stall_threshold)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=args.window + 60, cwd=tree)
    for line in out.stdout.splitlines():
        if line.startswith("result: "):
            return json.loads(line[len("result: ") :])
    raise RuntimeError(f"no result from the host: {out.stderr.strip()[-400:]}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--window", type=float, default=10.0, help="seconds measured a run")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--loops", default="1,4", help="event loops in the host, per setting")
    parser.add_argument("--tasks", type=int, default=100, help="idle tasks per loop")
    parser.add_argument("--stall-threshold", type=float, default=0.1)
    parser.add_argument("--old", help="another tree whose agent runs interleaved with this one")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--root", default=str(ROOT), help=argparse.SUPPRESS)
    parser.add_argument("--keys", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.loops = int(args.loops)
        child(args)
        return
    sys.path.insert(0, str(ROOT))
    from observer.keygen import generate

    trees = {"new": ROOT} | ({"old": Path(args.old).resolve()} if args.old else {})
    loops = [int(n) for n in args.loops.split(",") if n]
    results: dict[tuple[str, int], list[float]] = {(t, n): [] for t in trees for n in loops}
    hosts: dict[tuple[str, int], list[float]] = {(t, n): [] for t in trees for n in loops}
    with tempfile.TemporaryDirectory(prefix="bench-idle-") as name:
        keys = Path(name) / "keys"
        generate(keys)
        for r in range(args.rounds):
            order = list(trees.items())
            if r % 2:
                order.reverse()
            for n in loops:
                for label, tree in order:
                    args.loops_now = n
                    result = run_one(tree, keys, args)
                    results[(label, n)].append(result["total"])
                    hosts[(label, n)].append(result["host"])
                    busiest = sorted(result["threads"].items(), key=lambda kv: -kv[1])[:3]
                    shown = ", ".join(f"{k.split('#')[0]} {v:.2f}" for k, v in busiest)
                    print(
                        f"round {r + 1}: {label} {n} loop(s): {result['total']:.2f} ms/s "
                        f"({shown}); the loops' threads {result['host']:.2f} ms/s",
                        flush=True,
                    )
    print()
    print(
        f"agent CPU at rest, ms per second: {args.rounds} runs x {args.window:g} s, "
        f"stall threshold {args.stall_threshold:g} s, {args.tasks} idle tasks a loop; "
        f"load average {os.getloadavg()[0]:.2f} (1 min) at the end"
    )
    for (label, n), values in results.items():
        host = hosts[(label, n)]
        print(
            f"{label:>4} {n} loop(s): agent median {statistics.median(values):.2f} "
            f"(min {min(values):.2f}, max {max(values):.2f}); the host's loop threads "
            f"{statistics.median(host):.2f} ({min(host):.2f}-{max(host):.2f})"
        )


if __name__ == "__main__":
    main()
