"""A real gunicorn (sync workers and UvicornWorker) under ``python -m agent run``: one
port per host. The workers get agents of their own automatically, the master names them
``gunicorn worker (age N)``, an observer reads and acts inside each through the master's
port, and a chaos run that SIGKILLs a worker counts its recovery when gunicorn has a
worker in that slot again. Test-only dependencies (gunicorn, uvicorn) are in the dev
extra."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import pytest

from agent.exits import REPLACEMENT_SLACK
from tests.helpers import ROOT, HostProcess, line_value, wait_until

pytest.importorskip("gunicorn")

WORKER = re.compile(r"gunicorn worker \(age \d+\)")


class Gunicorn:
    """``python -m agent run --keys K -- -m gunicorn -w 2 ...`` in a subprocess."""

    def __init__(self, keys, worker_class: str) -> None:
        self.keys = keys
        argv = [sys.executable, "-m", "agent", "run", "--keys", str(keys.directory)]
        argv += ["--bind", "127.0.0.1:0", "--name", "gunicorn-host", "--print-address", "--"]
        argv += ["-m", "gunicorn", "-w", "2", "-b", "127.0.0.1:0", "-k", worker_class]
        app = "asgi" if "Uvicorn" in worker_class else "wsgi"
        argv += ["--graceful-timeout", "5", f"tests.hosts.gunicorn_app:{app}"]
        self.process = HostProcess(argv)
        self.agent = line_value(self.process, "agent")
        found = wait_until(
            lambda: next(
                (
                    m
                    for line in self.process.stderr
                    if (m := re.search(r"Listening at: (\S+)", line))
                ),
                None,
            ),
            timeout=30,
            message="gunicorn listens",
        )
        self.url = found.group(1)

    def connect(self, role: str = "operator"):
        from observer.client import connect

        token = self.keys.operator_token if role == "operator" else self.keys.viewer_token
        return connect(self.agent, token_file=token, fingerprint=self.keys.fingerprint)

    def workers(self, node) -> dict[int, str]:
        """pid -> label of the live gunicorn workers that run an agent."""
        return {
            c.pid: c.name
            for c in node.children()
            if WORKER.fullmatch(c.name) and c.agent and c.status != "zombie"
        }

    def workers_when(self, node, count: int, without: int = 0) -> dict[int, str] | None:
        """The workers once there are ``count`` of them and ``without`` is not one."""
        workers = self.workers(node)
        return workers if len(workers) == count and without not in workers else None

    def serves(self) -> bool:
        with urllib.request.urlopen(self.url, timeout=10) as reply:
            return reply.read().startswith(b"pid ")


@pytest.fixture
def gunicorn(keys) -> Iterator[object]:
    started: list[Gunicorn] = []

    def start(worker_class: str) -> Gunicorn:
        started.append(Gunicorn(keys, worker_class))
        return started[-1]

    yield start
    for g in started:
        g.process.stop()


@pytest.mark.parametrize("worker_class", ["sync", "uvicorn.workers.UvicornWorker"])
def test_gunicorn_workers_are_observed_and_acted_on_through_the_masters_port(
    gunicorn, worker_class
):
    if "Uvicorn" in worker_class:
        pytest.importorskip("uvicorn")
    g = gunicorn(worker_class)
    with g.connect() as node:
        workers = wait_until(lambda: g.workers_when(node, 2), timeout=30)
        assert g.serves()
        for pid in workers:
            worker = node.worker(pid)
            assert worker.process().pid == pid
            assert worker.name == f"gunicorn-host worker {pid}"
        if "Uvicorn" in worker_class:
            pid = next(iter(workers))
            ticker = wait_until(
                lambda: next((t for t in node.worker(pid).tasks() if t.name == "asgi-ticker"), None)
            )
            assert node.worker(pid).stack(ticker.id).frames
            result = node.worker(pid).cancel(ticker.id)
            assert result.ok
            assert [r.action for r in node.audit()][-1] == f"cancel in worker {pid}"
        victim = min(workers)
        # the exit watch takes a worker started within REPLACEMENT_SLACK of a death, in
        # the dead one's slot, for its replacement: gunicorn forks its boot workers within
        # milliseconds of each other, so the kill waits until they are older than that
        wait_until(
            lambda: all(
                time.time() - c.create_time > 4 * REPLACEMENT_SLACK
                for c in node.children()
                if c.pid in workers
            ),
            message="the boot workers older than the replacement slack",
        )
        assert node.kill(f"pid-{victim}", signal="KILL").ok
        replaced = wait_until(
            lambda: g.workers_when(node, 2, without=victim),
            timeout=30,
            message="gunicorn replaces the killed worker",
        )
        new = (set(replaced) - set(workers)).pop()
        assert node.worker(new).process().pid == new
        assert g.serves()
        # the arbiter reaped the victim itself; the master's agent saw how it ended and
        # that the new worker took its place
        gone = wait_until(
            lambda: next(
                (e for e in node.worker_set().exits if e.pid == victim and e.replaced_by), None
            )
        )
        assert (gone.how, gone.replaced_by) == ("signal 9", new), gone
        assert gone.name.startswith("gunicorn worker"), gone


def test_chaos_kills_a_gunicorn_worker_and_counts_its_recovery(gunicorn, keys):
    """`observer chaos NODE --kind process --match 'gunicorn worker*' --action kill`: the
    replacement (a new age, a new pid, in the killed one's slot) counts as recovery."""
    g = gunicorn("sync")
    with g.connect() as node:
        wait_until(lambda: len(g.workers(node)) == 2, timeout=30)
    creds = ["--token-file", str(keys.operator_token), "--fingerprint", keys.fingerprint]
    done = subprocess.run(
        [
            *(sys.executable, "-m", "observer.cli", "chaos", g.agent, *creds),
            *("--kind", "process", "--match", "gunicorn worker*", "--action", "kill"),
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
    assert g.serves()
