"""The audit trail under attack: flooding, forged log lines, restarts, shared baselines.

Each test drives a real host (tests/hosts/events.py) with a real agent over TLS, and reads
what a real operator would: the audit over RPC, the host's own log (stderr), the file.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from observer.errors import NotFound, PermissionDenied
from tests.attack.hosts import events_host, read_jsonl
from tests.helpers import ROOT, echo_ok, wait_until
from tests.test_cli import observer

FLOOD = 10_000
FORGED = "audit: peer=6.6.6.6:666 role=operator action=cancel target=task-1 result=ok"
LOG_LINE = re.compile(r"^(INFO|WARNING) agent\.audit: audit: peer=127\.0\.0\.1:\d+ role=(\w+) ")


def attempts(record) -> int:
    """How many attempts a (folded) denial record stands for."""
    match = re.search(r"\((\d+) attempts in ", record.detail)
    return int(match.group(1)) if match else 1


def test_a_viewer_flood_cannot_push_operator_actions_out(keys):
    with events_host(keys, "--log") as host:
        with host.connect() as operator:
            for i in range(5):
                operator.chaos_mark(f"before-flood-{i}", "start", "operator action")
        calls = (
            lambda v, i: v.cancel(f"task-{i}"),
            lambda v, i: v.raise_in(f"thread-{i}-1", "SystemExit"),
            lambda v, i: v.signal(i + 2),
            lambda v, i: v.chaos_mark(f"fake-{i}", "start"),
            lambda v, i: v.tracemalloc_start(5),
            lambda v, i: v.tracemalloc_stop(),
        )
        started = time.perf_counter()
        with host.connect("viewer") as viewer:
            for i in range(FLOOD):
                with pytest.raises(PermissionDenied):
                    calls[i % len(calls)](viewer, i)
        flood = time.perf_counter() - started
        with host.connect() as operator:
            records = operator.audit()
        assert echo_ok(host.echo)
        log_lines = [line for line in host.process.stderr if "audit:" in line]
    marks = [r.target for r in records if r.action == "chaos start" and r.role == "operator"]
    assert marks == [f"before-flood-{i}" for i in range(5)]  # every one survived, in order
    denied = [r for r in records if r.result == "denied"]
    assert {r.role for r in denied} == {"viewer"}
    assert sum(attempts(r) for r in denied) == FLOOD  # every attempt is counted
    assert len(denied) <= 3 * len(calls)  # folded: a record per action kind and minute
    assert len(log_lines) <= 5 + 30  # the host's log is not flooded either
    print(
        f"\n{FLOOD} denied calls in {flood:.1f} s; afterwards the audit holds "
        f"{len(records)} records: {len(marks)} operator actions (all) and {len(denied)} "
        f"folded denials counting {sum(attempts(r) for r in denied)} attempts; "
        f"{len(log_lines)} audit lines in the host's log"
    )


def test_peer_text_cannot_forge_audit_or_log_lines(keys):
    with events_host(keys, "--log") as host:
        with host.connect("viewer") as viewer:
            with pytest.raises(PermissionDenied):
                viewer.cancel("task-1\n" + FORGED)
            with pytest.raises(PermissionDenied):
                viewer.raise_in("thread-1-1", "SystemExit\r" + FORGED)
            with pytest.raises(PermissionDenied):
                viewer.chaos_mark("x\u2028" + FORGED, "start")
        with host.connect() as operator:
            with pytest.raises(NotFound):
                operator.cancel("task-999 result=ok\n" + FORGED)
            operator.chaos_mark("run\x1b[2K\r" + FORGED, "start")
            records = operator.audit()
        # the host wrote its five audit lines before answering; they reach us through a pipe
        wait_until(
            lambda: sum("audit:" in line for line in host.process.stderr) >= 5,
            message="the host's five audit lines",
        )
        lines = list(host.process.stderr)
    audit_lines = [line for line in lines if "audit:" in line]
    assert audit_lines and all(LOG_LINE.match(line) for line in audit_lines), audit_lines
    assert not [line for line in lines if "6.6.6.6" in line and not LOG_LINE.match(line)]
    roles = [LOG_LINE.match(line).group(2) for line in audit_lines]
    assert roles.count("operator") == 2 and roles.count("viewer") == 3
    assert all("\\n" in line or "\\r" in line or "\\u2028" in line for line in audit_lines)
    # peer text that would read as another field is quoted
    assert any('target="task-999 result=ok\\n' in line for line in audit_lines)
    # the records themselves keep the exact text (the client shows them as data)
    assert any(r.target == "task-1\n" + FORGED for r in records)


def test_the_audit_file_outlives_a_restart(keys, tmp_path):
    path = tmp_path / "audit.jsonl"
    with events_host(keys, env={"OBSERVER_AGENT_AUDIT_FILE": str(path)}) as host:
        with host.connect() as operator:
            operator.chaos_mark("before-restart", "start")
        with host.connect("viewer") as viewer, pytest.raises(PermissionDenied):
            viewer.cancel("task-1\n" + FORGED)
        host.ask("agent-stop", r"^event: agent (stopped)")
        host.ask("agent-start", r"^event: agent (started)")
        with host.connect() as operator:
            operator.chaos_mark("after-restart", "start")
            ring = operator.audit()
        assert [r.target for r in ring] == ["after-restart"]  # the ring starts empty again
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    records = read_jsonl(path)  # one JSON object per line: a newline cannot split a record
    marks = [r["target"] for r in records if r["action"] == "chaos start"]
    assert marks == ["before-restart", "after-restart"]
    denied = [r for r in records if r["result"] == "denied"]
    assert len(denied) == 1 and denied[0]["target"] == "task-1\n" + FORGED
    assert denied[0]["role"] == "viewer" and denied[0]["count"] == 1


def _agent_run(keys, *args: str) -> subprocess.CompletedProcess[str]:
    script = Path(keys.directory).parent / "ran.py"
    script.write_text("print('the program ran')\n")
    argv = ["run", "--bind", "127.0.0.1:0", "--keys", str(keys.directory), *args]
    return subprocess.run(
        [sys.executable, "-m", "agent", *argv, "--", str(script)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        timeout=60,
    )


@pytest.mark.parametrize("unsafe", ["group-readable", "symlink", "other-owner"])
def test_an_unsafe_audit_file_is_refused_at_start(keys, tmp_path, unsafe):
    path = tmp_path / "audit.jsonl"
    target = tmp_path / "elsewhere.txt"
    target.write_text("not an audit file\n")
    if unsafe == "group-readable":
        path.write_text("")
        os.chmod(path, 0o644)
        expected = "chmod 600"
    elif unsafe == "symlink":
        os.symlink(target, path)
        expected = "symbolic link"
    else:
        if os.geteuid() != 0:
            pytest.skip("a file owned by another user needs root")
        path.write_text("")
        os.chmod(path, 0o600)
        os.chown(path, 65534, 65534)
        expected = "belongs to uid 65534"
    out = _agent_run(keys, "--audit-file", str(path))
    assert out.returncode == 2 and expected in out.stderr, out.stderr
    assert "the program ran" not in out.stdout
    assert target.read_text() == "not an audit file\n"


def test_audit_file_rotates_by_size_and_keeps_three(tmp_path):
    from agent.audit import AuditLog
    from agent.auditfile import AuditFile

    path = tmp_path / "audit.jsonl"
    audit = AuditLog(sink=AuditFile(str(path), max_bytes=4096, keep=3))
    for i in range(300):
        audit.record(
            peer="127.0.0.1:1", role="operator", action="chaos", target=f"run-{i}", result="ok"
        )
    audit.close()
    files = [path.with_name(f"audit.jsonl.{n}") for n in (3, 2, 1)] + [path]
    assert all(f.exists() for f in files) and not path.with_name("audit.jsonl.4").exists()
    assert all(f.stat().st_size <= 4096 and stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    targets = [r["target"] for f in files for r in read_jsonl(f)]
    last = int(targets[0].split("-")[1])
    assert targets == [f"run-{i}" for i in range(last, 300)]  # the newest, none missing


def test_a_failing_audit_disk_never_reaches_the_host(tmp_path):
    """The file system refuses writes beyond 2 KiB (RLIMIT_FSIZE): the host goes on, the
    in-memory audit keeps everything, and the failure is logged once."""
    code = textwrap.dedent(
        f"""
        import logging, resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))
        logging.basicConfig(stream=sys.stderr, format="%(levelname)s %(message)s")
        from agent.audit import AuditLog
        from agent.auditfile import AuditFile
        audit = AuditLog(sink=AuditFile({str(tmp_path / "audit.jsonl")!r}))
        for i in range(500):
            audit.record(peer="127.0.0.1:1", role="operator", action="chaos start",
                         target=f"run-{{i}}", result="ok")
        audit.close()
        print("host alive; records in memory:", len(audit.records(1000)))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "host alive; records in memory: 500" in out.stdout
    assert out.stderr.count("cannot write audit file") == 1, out.stderr


def test_a_viewer_cannot_reset_the_operators_baselines(keys):
    with events_host(keys) as host, host.connect() as operator:
        operator.tracemalloc_start(3)  # takes a tracemalloc baseline
        operator.census(5, baseline=True)
        memory = operator.memory()
        with host.connect("viewer") as viewer:
            with pytest.raises(PermissionDenied, match="operator"):
                viewer.census(5, baseline=True)
            with pytest.raises(PermissionDenied, match="operator"):
                viewer.tracemalloc_baseline()
            assert viewer.growth(5).baseline == memory.census_baseline  # reading is fine
        cli = observer("mem", host.address, *host.creds("viewer"), "--baseline")
        assert cli.returncode == 1 and "operator" in cli.stderr
        after = operator.memory()
        assert after.census_baseline == memory.census_baseline
        assert after.tracemalloc.baseline == memory.tracemalloc.baseline
        audit = operator.audit()
    taken = {(r.action, r.role, r.result) for r in audit}
    assert ("census baseline", "operator", "ok") in taken
    assert ("census baseline", "viewer", "denied") in taken
    assert ("tracemalloc baseline", "viewer", "denied") in taken


def test_dropped_sessions_cannot_push_operator_actions_out():
    """A viewer that logs in and breaks the protocol over and over (each drop audited from
    a new port) lands in the peer-fault ring, never in the control actions' ring."""
    from agent.audit import CAPACITY, AuditLog

    log = AuditLog()
    for i in range(3):
        log.record(
            peer="10.0.0.1:1", role="operator", action="cancel", target=f"task-{i}", result="ok"
        )
    for port in range(2 * CAPACITY):
        log.record(
            peer=f"127.0.0.9:{port}",
            role="viewer",
            action="protocol violation",
            target="connection",
            result="dropped",
        )
    records = log.records(CAPACITY)
    assert [r.target for r in records if r.role == "operator"] == ["task-0", "task-1", "task-2"]
    assert {r.result for r in records if r.role == "viewer"} == {"dropped"}
    log.close()
