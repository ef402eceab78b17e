"""A real Celery prefork worker under ``python -m agent run``, with no broker server
(kombu's filesystem transport, tests/hosts/celery_app.py): its pool processes, forked by
billiard, get agents of their own, show as ``celery ForkPoolWorker-N``, answer through
the master's port, run the tasks the test sends, and a SIGKILLed one is replaced by a
new ForkPoolWorker (a new number) that gets an agent too.

The victim is a busy worker: SIGKILL an idle prefork worker and it may die holding the
pool's shared queue lock (billiard's SimpleQueue), which hangs every other worker; that
is Celery's, not ours, and seen here as tasks received but never run."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from tests.helpers import HostProcess, line_value, wait_until

pytest.importorskip("celery")

WORKER = re.compile(r"celery ForkPoolWorker-\d+")


@pytest.fixture
def celery_worker(keys, tmp_path):
    folder = str(tmp_path / "celery")
    argv = [sys.executable, "-m", "agent", "run", "--keys", str(keys.directory)]
    argv += ["--bind", "127.0.0.1:0", "--name", "celery-host", "--print-address", "--"]
    argv += ["-m", "celery", "-A", "tests.hosts.celery_app", "worker", "--pool", "prefork"]
    argv += ["-c", "2", "--without-heartbeat", "--without-gossip", "--without-mingle"]
    argv += ["-l", "info"]
    process = HostProcess(argv, env={"CELERY_TEST_DIR": folder})
    process.agent = line_value(process, "agent")
    process.folder = folder
    yield process
    process.stop()


def workers(node) -> dict[int, str]:
    return {
        c.pid: c.name
        for c in node.children()
        if WORKER.fullmatch(c.name) and c.agent and c.status != "zombie"
    }


def test_celery_prefork_workers_are_observed_serve_tasks_and_come_back(celery_worker, keys):
    from observer.client import connect
    from tests.hosts.celery_app import make_app

    app = make_app(celery_worker.folder)
    with connect(
        celery_worker.agent, token_file=keys.operator_token, fingerprint=keys.fingerprint
    ) as node:
        found = wait_until(lambda: len(w := workers(node)) == 2 and w, timeout=60)
        for pid in found:
            assert node.worker(pid).process().pid == pid
            assert node.worker(pid).name == f"celery-host worker {pid}"
        first = app.send_task("worker_pid").get(timeout=60)
        assert first in found, (first, found)
        busy = app.send_task("busy", args=(60,))
        noted = Path(celery_worker.folder) / "busy"
        victim = wait_until(lambda: noted.exists() and int(noted.read_text()), timeout=60)
        assert victim in found
        assert node.kill(f"pid-{victim}", signal="KILL").ok
        replaced = wait_until(
            lambda: len(w := workers(node)) == 2 and victim not in w and w,
            timeout=60,
            message="celery replaces the killed pool process",
        )
        new = (set(replaced) - set(found)).pop()
        assert replaced[new] != found[victim]  # a new number, the slot chaos counts
        assert node.worker(new).process().pid == new
        second = app.send_task("worker_pid").get(timeout=60)
        assert second in replaced, (second, replaced)
        with pytest.raises(Exception, match="WorkerLostError|signal 9"):
            busy.get(timeout=60)
