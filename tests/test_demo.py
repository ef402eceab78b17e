"""The demo service with the agent embedded: supervised workers come back when killed."""

from __future__ import annotations

import json
import urllib.request

import pytest

from observer.client import connect
from tests.helpers import wait_until


@pytest.fixture
def node(demo, keys):
    n = connect(demo.agent_address, token_file=keys.operator_token, fingerprint=keys.fingerprint)
    yield n
    n.close()


def _http(demo, path: str) -> bytes:
    with urllib.request.urlopen(f"http://{demo.http_address}{path}", timeout=10) as resp:
        return resp.read()


def _named(node, name):
    return [t for t in node.tasks() if t.name == name and t.state == "pending"]


def test_demo_shows_its_parts(node, demo):
    snap = wait_until(
        lambda: (s := node.snapshot()) and len(s.children) >= 2 and s,
        message="two child workers",
    )
    names = {t.name for t in snap.tasks}
    assert {"supervisor", "worker-1", "worker-2", "worker-3", "load-generator"} <= names
    assert "http-server" in names
    threads = {t.name for t in snap.threads}
    assert "cache-janitor" in threads
    assert all("child-worker" in " ".join(c.cmdline) for c in snap.children)
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
    children = wait_until(lambda: len(c := node.children()) >= 2 and c, message="children")
    victim = children[0]
    result = node.signal(victim.pid, "TERM")
    assert result.ok
    wait_until(
        lambda: victim.pid not in {c.pid for c in node.children()} and len(node.children()) >= 2,
        message="replacement child",
    )
