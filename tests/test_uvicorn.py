"""A real ``uvicorn --workers 2`` under ``python -m agent run``: uvicorn spawns its
workers (no fork), so they join the master's agent through OBSERVER_AGENT_SPAWNED_WORKERS
(set for the master) and agent.join() in the app module (agent.spawned). Each worker is
then observed and acted on through the master's port, and a killed worker's replacement
(uvicorn's supervisor restarts it, as SpawnProcess-N with a new N) joins too and counts
as the slot recovered in a chaos run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request

import pytest

from tests.helpers import ROOT, HostProcess, line_value, wait_until
from tests.test_workers import free_port

pytest.importorskip("uvicorn")

WORKER = re.compile(r"SpawnProcess-\d+")


@pytest.fixture
def uvicorn(keys):
    port = free_port()
    argv = [sys.executable, "-m", "agent", "run", "--keys", str(keys.directory)]
    argv += ["--bind", "127.0.0.1:0", "--name", "uvicorn-host", "--print-address", "--"]
    argv += ["-m", "uvicorn", "--workers", "2", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["tests.hosts.uvicorn_app:app"]
    process = HostProcess(argv, env={"OBSERVER_AGENT_SPAWNED_WORKERS": "1"})
    process.url = f"http://127.0.0.1:{port}/"
    process.agent = line_value(process, "agent")
    yield process
    process.stop()


def connect(uvicorn, keys):
    from observer.client import connect

    return connect(uvicorn.agent, token_file=keys.operator_token, fingerprint=keys.fingerprint)


def workers(node) -> dict[int, str]:
    """pid -> label of uvicorn's live workers whose agent joined."""
    return {
        c.pid: c.name
        for c in node.children()
        if WORKER.fullmatch(c.name) and c.agent and c.status != "zombie"
    }


def serves(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return reply.read().startswith(b"pid ")


def test_uvicorn_spawned_workers_join_and_are_acted_on_through_the_master(uvicorn, keys):
    with connect(uvicorn, keys) as node:
        found = wait_until(lambda: len(w := workers(node)) == 2 and w, timeout=30)
        assert wait_until(lambda: serves(uvicorn.url), timeout=30)
        for pid in found:
            worker = node.worker(pid)
            assert worker.process().pid == pid
            assert worker.name == f"uvicorn-host worker {pid}"
        pid = min(found)
        ticker = wait_until(
            lambda: next((t for t in node.worker(pid).tasks() if t.name == "asgi-ticker"), None)
        )
        assert node.worker(pid).stack(ticker.id).frames
        assert node.worker(pid).cancel(ticker.id).ok
        assert [r.action for r in node.audit()][-1] == f"cancel in worker {pid}"


def test_chaos_kills_a_uvicorn_worker_and_its_replacement_joins(uvicorn, keys):
    """SIGKILL a worker through the master: uvicorn spawns SpawnProcess-M in its place,
    which joins; the chaos run counts the slot recovered."""
    with connect(uvicorn, keys) as node:
        before = wait_until(lambda: len(w := workers(node)) == 2 and w, timeout=30)
    creds = ["--token-file", str(keys.operator_token), "--fingerprint", keys.fingerprint]
    done = subprocess.run(
        [
            *(sys.executable, "-m", "observer.cli", "chaos", uvicorn.agent, *creds),
            *("--kind", "process", "--match", "SpawnProcess-*", "--action", "kill"),
            *("--count", "1", "--json", "--recovery-timeout", "30", "--seed", "1"),
        ],
        capture_output=True,
        text=True,
        timeout=90,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["recovered"] == 1, summary
    new = int(summary["recoveries"][0]["replacement"].removeprefix("pid-"))
    assert new not in before
    with connect(uvicorn, keys) as node:
        wait_until(lambda: new in workers(node), timeout=30, message="the replacement joins")
        assert node.worker(new).process().pid == new
    assert serves(uvicorn.url)
