"""A GUI tab's steady refresh at scale, without Qt: what the link's worker does per refresh
(the client call plus working out the rows that changed) and what the agent does.

    python bench/follow.py [--tasks 100000] [--churn 50] [--repeat 5] [--root /work/main]
                           [--shape chains|flat|gather]

A bench host (bench/host.py, 3 coroutines deep) holds ``--tasks`` sleepers; before each
refresh it cancels ``--churn`` of them and starts as many (2 x churn rows change). For
the Processes tree and the Tasks & threads table, each refresh prints the worker's CPU
(client call, decode, rows), the rows it built (``node_values`` calls: every row for a
whole walk, only the touched ones when following changes), the delta's size, and the
agent's CPU for the refresh. The first (cold) refresh of each tab is reported apart.
``--shape`` runs bench/peerhost.py instead (chains of 3 tasks awaiting each other,
independent tasks, or parents awaiting a gather of 9), where nothing is churned: what
changes is what the host's own stall monitor does.
``--root DIR`` runs the client and GUI code of another checkout (a worktree of main) with
this host, for before/after figures.
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
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(1, str(HERE))

from snapshot import CODE, Host  # noqa: E402  (puts --root's code first on sys.path)

from observer.client import connect  # noqa: E402
from observer.gui import delta, rows  # noqa: E402
from observer.keygen import generate  # noqa: E402

try:  # this checkout: tabs follow what changed
    from observer.gui.follow import follow_of, table_follow
except ImportError:  # an older one: every refresh walks every row
    follow_of = table_follow = None  # type: ignore[assignment]
from observer.gui.workers import process_tree_delta  # noqa: E402

BUILT = [0]
_node_values = rows.node_values


def counted(*args: Any, **kw: Any) -> Any:
    BUILT[0] += 1
    return _node_values(*args, **kw)


rows.node_values = delta.node_values = counted  # type: ignore[assignment]
try:
    from observer.gui import follow as _follow

    _follow.node_values = counted  # type: ignore[assignment]
except ImportError:
    pass


class PeerHost:
    """bench/peerhost.py with ``tasks`` tasks of ``shape`` (no aiomonitor), the agent from
    CODE; as snapshot.Host for what this bench asks of it."""

    def __init__(self, keys: Path, tasks: int, shape: str) -> None:
        argv = [sys.executable, str(HERE / "peerhost.py"), str(keys), "--tasks", str(tasks)]
        argv += ["--shape", shape, "--no-aiomonitor"]
        env = dict(os.environ, PYTHONPATH=str(CODE))
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("ready: "):
            self.stop()
            raise SystemExit(f"peer host failed to start: {line!r}")
        self.address = json.loads(line[len("ready: ") :])["agent"]
        self.psutil = psutil.Process(self.proc.pid)

    def ask(self, word: str, answer: str) -> None:
        raise AssertionError("the peer host churns nothing")

    def thread_cpu(self, tids: set[int]) -> float:
        return sum(t.user_time + t.system_time for t in self.psutil.threads() if t.id in tids)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def table_job(node: Any, shadow: Any) -> Any:
    if table_follow is not None:
        return table_follow(node.changes(follow_of(shadow).cursor, delta.TASK_LIMIT), shadow)
    return delta.table_delta(node.snapshot(delta.TASK_LIMIT), shadow)


JOBS = {"tree": process_tree_delta, "table": table_job}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--churn", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--root", default=str(HERE.parent))
    parser.add_argument("--shape", choices=["chains", "flat", "gather"])
    args = parser.parse_args()
    if args.shape:
        args.churn = 0
    print(
        f"python {sys.version.split()[0]}, load {os.getloadavg()[0]:.1f}, code {CODE}, "
        f"{args.tasks} tasks, churn {args.churn}, host "
        f"{'peerhost ' + args.shape if args.shape else 'host.py (3 coroutines deep)'}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        keys = generate(Path(tmp) / "keys")
        host: Any = (
            PeerHost(keys.directory, args.tasks, args.shape)
            if args.shape
            else Host(keys.directory, args.tasks, 3)
        )
        try:
            node = connect(
                host.address, token_file=keys.operator_token, fingerprint=keys.fingerprint,
                timeout=600,
            )  # fmt: skip
            agent_tids = {t.native_id for t in node.threads() if t.is_agent}
            for name, job in JOBS.items():
                shadow = delta.Shadow()
                figures: list[tuple[float, int, int, float]] = []
                for refresh in range(args.repeat + 1):
                    if refresh and args.churn:
                        host.ask(f"churn {args.churn}", "churned")
                    time.sleep(0.4)  # past the agent's sharing window: a pass of its own
                    BUILT[0] = 0
                    cpu0, mine = host.thread_cpu(agent_tids), time.process_time()
                    made = job(node, shadow)
                    worker = time.process_time() - mine
                    agent_cpu = host.thread_cpu(agent_tids) - cpu0
                    figures.append((worker, BUILT[0], made.size, agent_cpu))
                cold, steady = figures[0], figures[1:]
                print(
                    f"{name:5} cold: worker {cold[0] * 1000:.0f} ms CPU, {cold[1]} rows built, "
                    f"agent {cold[3] * 1000:.0f} ms"
                )
                for label, index, scale in (
                    ("worker CPU ms", 0, 1000),
                    ("rows built", 1, 1),
                    ("delta rows", 2, 1),
                    ("agent CPU ms", 3, 1000),
                ):
                    values = [f[index] * scale for f in steady]
                    print(
                        f"{name:5} steady {label:<14} median {statistics.median(values):9.1f}"
                        f"  ({min(values):.1f}-{max(values):.1f}, n={len(values)})"
                    )
            node.close()
        finally:
            host.stop()


if __name__ == "__main__":
    main()
