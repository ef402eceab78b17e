"""The command line reads one worker as it reads a node: ``observer info/mem/history/
stalls/profile NODE --process PID`` reach the worker through the master's one port (the
same ``Node.worker`` the GUI's opened workers use). Real master (tests/hosts/forker.py
--workers), real forks, the real ``observer`` command.
"""

from __future__ import annotations

import json
import os
import signal

import pytest

from tests.helpers import wait_until
from tests.hosts.forkchild import OWNED
from tests.test_forks import forker  # noqa: F401  (the fixture)
from tests.test_workers import observer_cli


def test_info_mem_history_stalls_and_profile_read_one_worker(forker, keys):  # noqa: F811
    """--process PID: info's pid is the worker's, mem's census counts what only the worker
    made (the master has none), history is the worker's own ring, stalls lists the
    worker's blocked loop by its culprit, profile samples the worker; pid-N works too,
    and a pid that is no worker is an error naming it."""
    master = forker("--workers")
    pid, _ = master.fork("fork", "own")
    creds = ["--token-file", str(keys.operator_token), "--fingerprint", keys.fingerprint]

    def cli(*args: str) -> str:
        done = observer_cli(*args[:1], master.agent, *creds, *args[1:])
        assert done.returncode == 0, done.stderr
        return done.stdout

    info = json.loads(cli("info", "--process", str(pid), "--json"))
    assert info["pid"] == pid
    assert json.loads(cli("info", "--json"))["pid"] == master.process.proc.pid

    def owned(*process: str) -> int:
        types = json.loads(cli("mem", *process, "--top", "200", "--json"))["types"]
        return sum(t["count"] for t in types if t["type"].endswith("WorkerOwned"))

    assert owned("--process", f"pid-{pid}") == OWNED
    assert owned() == 0
    # the hint to start tracemalloc names the worker: without --process it would reach
    # the master
    assert f"observer mem NODE --process {pid} tracemalloc start" in cli(
        "mem", "--process", str(pid)
    )
    assert "observer mem NODE tracemalloc start" in cli("mem")
    with master.connect() as node:
        wait_until(lambda: len(node.worker(pid).history().samples) >= 2, timeout=20)
        own = {s.time for s in node.worker(pid).history().samples}
    history = json.loads(cli("history", "--process", str(pid), "--json"))
    assert history["samples"] and {s["time"] for s in history["samples"]} & own

    def stalled() -> bool:
        listing = json.loads(cli("stalls", "--process", str(pid), "--json"))
        return any(
            "blocking_report" in [e["function"], *(f["function"] for f in e["frames"])]
            for e in listing["stalls"]
        )

    wait_until(stalled, timeout=20)
    top = cli("profile", "--process", str(pid), "--seconds", "1", "--rate", "50")
    assert "child_main" in top, top  # the worker's main thread, not the master's
    missing = observer_cli("info", master.agent, *creds, "--process", str(os.getpid()))
    assert missing.returncode != 0 and str(os.getpid()) in missing.stderr
    os.kill(pid, signal.SIGTERM)
    assert master.reap(pid) == -15


@pytest.mark.parametrize("how", ["idle", "own"])
def test_a_woken_workers_first_load_sample_counts_only_the_hosts_threads(forker, how):  # noqa: F811
    """A worker's agent wakes when first reached (``idle``: by the master's link, on its
    waiting thread; ``own``: by agent.running() in the worker's main thread, the waiting
    thread still alive): every load sample, the first included, counts the host's one
    thread apart from the agent's, so an opened worker's Threads chart does not start
    with a spike of agent threads counted as the host's."""
    master = forker("--workers")
    pid, _ = master.fork("fork", how)
    with master.connect() as node:
        worker = node.worker(pid)
        samples = wait_until(lambda: (h := worker.history().samples) and len(h) >= 2 and h)
        assert [s.threads for s in samples] == [1] * len(samples), samples
        assert all(s.agent_threads >= 3 for s in samples), samples
    os.kill(pid, signal.SIGTERM)
    assert master.reap(pid) == -15
