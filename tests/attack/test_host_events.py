"""What the agent leaves behind in the host: tracemalloc, registry files, thread targets.

Every test drives a real host (tests/hosts/events.py) with a real agent and asks the host
itself what happened: whether tracemalloc still runs, what the registry directory holds,
which thread an exception landed in.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from observer.errors import ObserverError
from tests.attack.hosts import EventsHost, events_host, read_jsonl
from tests.helpers import echo_ok, wait_until
from tests.test_cli import observer

NOBODY = 65534


def _sessions_closed(host: EventsHost, viewer) -> bool:
    """Only the asking connection is left: every earlier session's cleanup has run
    (the agent's connection thread ends after its on_disconnect)."""
    return sum(t.name == "observer-agent-conn" for t in viewer.threads()) == 1


def _alloc(host: EventsHost) -> float:
    return float(host.ask("alloc", r"^event: alloc seconds=(\S+)"))


# ---------------------------------------------------------------- tracemalloc


def test_tracemalloc_stops_when_the_session_that_started_it_ends(keys):
    with events_host(keys) as host:
        before = _alloc(host)
        with host.connect() as node:
            started = node.tracemalloc_start(5)
            assert host.tracing()
            during = _alloc(host)
        wait_until(lambda: not host.tracing(), message="tracemalloc off in the host")
        after = _alloc(host)
        with host.connect("viewer") as viewer:
            audit = viewer.audit()
        stops = [r for r in audit if r.action == "tracemalloc stop"]
        assert len(stops) == 1 and stops[0].result == "ok"
        assert stops[0].detail.startswith("session ended") and stops[0].role == "operator"
        assert echo_ok(host.echo)
    assert "stops when this session ends" in started.message
    print(
        f"\nallocation loop: {before * 1e3:.1f} ms before, {during * 1e3:.1f} ms while "
        f"tracing ({during / before:.1f}x), {after * 1e3:.1f} ms after the session ended"
    )


def test_kept_tracemalloc_outlives_its_session_and_stops_with_the_agent(keys, tmp_path):
    path = tmp_path / "audit.jsonl"
    with events_host(keys, env={"OBSERVER_AGENT_AUDIT_FILE": str(path)}) as host:
        out = observer(
            "mem", host.address, *host.creds(), "tracemalloc", "start", "--frames", "4", "--keep"
        )
        assert out.returncode == 0, out.stderr
        assert "keeps running after this session" in out.stdout
        with host.connect("viewer") as viewer:
            wait_until(lambda: _sessions_closed(host, viewer), message="CLI session closed")
            assert viewer.memory().tracemalloc.frames == 4
        assert host.tracing()  # the session that started it has ended; kept on purpose
        host.ask("agent-stop", r"^event: agent (stopped)")
        assert not host.tracing()  # ... but not past the agent
        assert echo_ok(host.echo)
    stops = [r for r in read_jsonl(path) if r["action"] == "tracemalloc stop"]
    assert len(stops) == 1 and stops[0]["detail"].startswith("agent stopped")


def test_tracemalloc_the_host_started_itself_is_left_alone(keys):
    with events_host(keys, env={"PYTHONTRACEMALLOC": "3"}) as host:
        assert host.tracing()
        with host.connect() as node, pytest.raises(ObserverError, match="already running"):
            node.tracemalloc_start(5)
        with host.connect("viewer") as viewer:
            wait_until(lambda: _sessions_closed(host, viewer), message="operator session closed")
        assert host.tracing()
        host.ask("agent-stop", r"^event: agent (stopped)")
        assert host.tracing()


# ---------------------------------------------------------------- registry


def _registry_env(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An environment whose agent registry lives under the test's own temp dir."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    return {"TMPDIR": str(tmp), "XDG_RUNTIME_DIR": ""}, tmp / f"runtime-observer-{os.getuid()}"


@pytest.mark.parametrize("plant", ["writable-by-others", "other-owner"])
def test_registry_directory_planted_by_another_user_is_refused(keys, tmp_path, plant):
    env, top = _registry_env(tmp_path)
    agents = top / "agents"
    agents.mkdir(parents=True)
    if plant == "writable-by-others":
        os.chmod(top, 0o777)  # anyone may have put anything in it
    else:
        if os.geteuid() != 0:
            pytest.skip("making a directory owned by another user needs root")
        os.chmod(top, 0o755)  # as another user's mkdir leaves it
        os.chown(top, NOBODY, NOBODY)
        os.chown(agents, NOBODY, NOBODY)
    with events_host(keys, env=env) as host:
        assert echo_ok(host.echo)
        wait_until(
            lambda: any("not using the agent registry" in line for line in host.process.stderr),
            message="a log line saying the registry is refused",
        )
        assert list(agents.iterdir()) == []  # nothing written into the planted directory


def test_own_registry_directory_left_readable_by_an_earlier_version_is_tightened(keys, tmp_path):
    env, top = _registry_env(tmp_path)
    (top / "agents").mkdir(parents=True)
    os.chmod(top, 0o755)  # what the earlier version's mkdir(parents=True) left
    with events_host(keys, env=env) as host:
        wait_until((top / "agents" / str(host.process.proc.pid)).is_file, message="an entry")
    assert stat.S_IMODE(top.stat().st_mode) == 0o700


def test_a_symlink_planted_as_the_entry_is_replaced_not_followed(keys, tmp_path):
    env, top = _registry_env(tmp_path)
    victim = tmp_path / "precious.txt"
    victim.write_text("the victim's own file\n")
    with events_host(keys, env=env) as host:
        entry = top / "agents" / str(host.process.proc.pid)
        wait_until(entry.is_file, message="the agent's registry entry")
        host.ask("agent-stop", r"^event: agent (stopped)")
        assert not entry.exists()
        os.symlink(victim, entry)
        host.ask("agent-start", r"^event: agent (started)")
        assert victim.read_text() == "the victim's own file\n"
        assert not entry.is_symlink() and entry.read_text().strip() == host.address
        assert stat.S_IMODE(entry.stat().st_mode) == 0o600
        assert stat.S_IMODE(top.stat().st_mode) == 0o700


def test_entries_of_dead_processes_are_swept_when_an_agent_registers(keys, tmp_path):
    env, top = _registry_env(tmp_path)
    agents = top / "agents"
    agents.mkdir(parents=True)
    os.chmod(top, 0o700)
    os.chmod(agents, 0o700)
    dead = []
    for _ in range(3):  # processes that ended without unregistering (as after SIGKILL)
        proc = subprocess.Popen([sys.executable, "-c", "pass"])
        proc.wait()
        if not psutil.pid_exists(proc.pid):
            dead.append(proc.pid)
    assert dead
    for pid in dead:
        (agents / str(pid)).write_text("127.0.0.1:1\n")
    (agents / f".{dead[0]}.0123456789ab.tmp").write_text("127.0.0.1:1\n")  # a torn write
    reused = agents / str(os.getpid())  # a live pid, but the entry predates its process
    reused.write_text("127.0.0.1:2\n")
    old = psutil.Process().create_time() - 3600
    os.utime(reused, (old, old))
    live = agents / "1"  # pid 1 started before this entry was written: kept
    live.write_text("127.0.0.1:3\n")
    with events_host(keys, env=env) as host:
        own = agents / str(host.process.proc.pid)
        wait_until(own.is_file, message="the agent's registry entry")
        left = sorted(p.name for p in agents.iterdir())
    assert left == sorted(["1", str(host.process.proc.pid)])
    print(f"\nswept {len(dead) + 2} stale entries, kept the live one and the agent's own")


# ---------------------------------------------------------------- thread ids


def test_a_stale_thread_id_does_not_hit_the_thread_that_reused_its_ident(keys):
    with events_host(keys) as host:
        ident = int(host.ask("victim", r"^event: victim ident=(\d+)"))
        with host.connect() as node:
            victim = next(t for t in node.threads() if t.name == "victim")
        assert victim.ident == ident
        answer = host.ask("victim-exit", r"^event: bystander (.*)")
        fields = dict(word.split("=") for word in answer.split())
        assert fields["same"] == "True", f"the bystander did not reuse the ident: {answer}"
        # the operator acts on the id ps gave them, after the thread it named has ended
        out = observer(
            "kill", host.address, victim.id, "--exception", "KeyboardInterrupt", *host.creds()
        )
        assert out.returncode != 0 and f"no thread {victim.id}" in out.stderr, out
        stack = observer("stack", host.address, victim.id, *host.creds("viewer"))
        assert stack.returncode != 0 and "no thread" in stack.stderr
        assert host.ask("bystander?", r"^event: bystander alive=(\w+)") == "True"
        assert not [line for line in host.process.lines if "bystander ended" in line]
        # the bystander has an id of its own, and that one works
        with host.connect() as node:
            bystander = next(t for t in node.threads() if t.name == "bystander")
            assert bystander.ident == victim.ident and bystander.id != victim.id
            assert node.raise_in(bystander.id, "KeyboardInterrupt").ok
        host.process.wait_line(r"^event: bystander ended by KeyboardInterrupt")
        assert echo_ok(host.echo)
