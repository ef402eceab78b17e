"""The demo service with the agent embedded: supervised workers come back when killed,
and so do its forked pool workers, each observed through the master's port."""

from __future__ import annotations

import json
import re
import urllib.request

import pytest

from observer.client import connect
from observer.demo.service import EXPORT_STALL
from tests.helpers import wait_until


@pytest.fixture
def node(demo, keys):
    n = connect(demo.agent_address, token_file=keys.operator_token, fingerprint=keys.fingerprint)
    yield n
    n.close()


def _http(demo, path: str) -> bytes:
    with urllib.request.urlopen(f"http://{demo.http_address}{path}", timeout=10) as resp:
        return resp.read()


def _spawned(children):
    """The demo's child-worker-N processes (run by subprocess, not forked)."""
    return [c for c in children if "observer.demo.child" in " ".join(c.cmdline)]


def _pool(node) -> dict[str, object]:
    """slot -> child for the live forked pool workers that run an agent."""
    return {
        c.name: c
        for c in node.children()
        if re.fullmatch(r"http-worker-\d+", c.name) and c.agent and c.status != "zombie"
    }


def _named(node, name):
    return [t for t in node.tasks() if t.name == name and t.state == "pending"]


def test_demo_shows_its_parts(node, demo):
    snap = wait_until(
        lambda: (s := node.snapshot()) and len(_spawned(s.children)) >= 2 and s,
        message="two child workers",
    )
    names = {t.name for t in snap.tasks}
    assert {"supervisor", "worker-1", "worker-2", "worker-3", "load-generator"} <= names
    assert "http-server" in names
    threads = {t.name for t in snap.threads}
    assert "cache-janitor" in threads
    assert {c.cmdline[-1] for c in _spawned(snap.children)} >= {"child-worker-1", "child-worker-2"}
    exposed = {e.name: e for e in snap.process.exposed}
    assert {"cache", "jobs", "config"} <= set(exposed)
    assert "demo-secret" not in exposed["config"].repr
    assert json.loads(_http(demo, "/"))  # the service answers


def test_killing_a_worker_brings_a_new_one(node, demo):
    (old,) = wait_until(lambda: _named(node, "worker-1"), message="worker-1")
    result = node.cancel(old.id)
    assert result.ok
    new = wait_until(
        lambda: [t for t in _named(node, "worker-1") if t.id != old.id], message="new worker-1"
    )
    assert new[0].id != old.id
    assert _http(demo, "/health").strip() == b"ok"  # the host kept serving


def test_killing_a_child_process_brings_a_new_one(node):
    children = wait_until(lambda: len(c := _spawned(node.children())) >= 2 and c)
    victim = children[0]
    result = node.signal(victim.pid, "TERM")
    assert result.ok
    wait_until(
        lambda: (
            victim.pid not in {c.pid for c in _spawned(node.children())}
            and len(_spawned(node.children())) >= 2
        ),
        message="replacement child",
    )


def test_a_killed_pool_worker_is_replaced_and_the_replacement_serves(node, demo):
    """The demo's gunicorn-style pool: two forked HTTP workers, each with an agent
    reached through the master's port. SIGKILL one through the observer; the master
    forks a replacement in the same slot (new pid), whose own agent answers and which
    serves the pool's socket."""
    workers = wait_until(lambda: len(p := _pool(node)) == 2 and p, message="two pool workers")
    victim = workers["http-worker-1"]
    worker = node.worker(victim.pid)
    assert worker.process().pid == victim.pid
    # the worker exposes its object once its own start-up has run, which may come after
    # its agent first answers
    wait_until(
        lambda: {e.name for e in worker.process().exposed} >= {"worker"},
        message="the worker's exposed object",
    )
    # forked from inside the master's running loop, a worker runs a loop of its own: the
    # master's loop and tasks, copied into its memory, are not listed as its own
    snap = wait_until(
        lambda: (
            (s := worker.snapshot()) and any(t.coroutine.endswith("_serve") for t in s.tasks) and s
        ),
        message="the worker's own loop listed",
    )
    assert len(snap.loops) == 1, snap.loops
    assert not {"supervisor", "reporter", "load-generator"} & {t.name for t in snap.tasks}
    assert node.signal(victim.id, "KILL").ok
    new = wait_until(
        lambda: (c := _pool(node).get("http-worker-1")) and c.pid != victim.pid and c,
        message="a new http-worker-1",
    )
    assert node.worker(new.pid).process().pid == new.pid
    status = json.loads(_http(demo, "/"))
    assert status["pool_workers"]["http-worker-1"] == new.pid
    pool = status["pool"]

    def served_by_new() -> bool:
        with urllib.request.urlopen(f"http://{pool}/", timeout=10) as resp:
            return json.loads(resp.read())["pid"] == new.pid

    wait_until(served_by_new, message="the replacement serves the pool's socket")


def test_the_demo_stalls_its_loop_on_purpose_and_the_stall_is_caught(node, demo):
    """The demo's report export runs on the event loop (its deliberate mistake): asked for
    one now (GET /export), the loop is blocked ~300 ms and the agent's stall catcher
    records it with the export on the blocking stack, so a newcomer's Stalls tab has a
    real stall to show (the periodic export does the same once a minute)."""
    since = node.stalls(float("inf")).time  # the agent's clock now
    report = json.loads(_http(demo, "/export"))
    assert report["took_ms"] >= EXPORT_STALL * 1000 and report["passes"] >= 1, report

    def caught():
        return [
            e
            for e in node.stalls(since).stalls
            if any(
                name.endswith("export_report")
                for name in (e.function, *(f.function for f in e.frames))
            )
        ]

    (stall, *_) = wait_until(caught, message="the export's stall")
    assert stall.duration >= 0.1 and stall.thread == "MainThread", stall
    assert stall.loop.startswith("loop-")
    assert _http(demo, "/health").strip() == b"ok"  # and the service went on serving
