"""Chaos runs against the demo service: its supervisors bring back what a run kills.

Everything here is real: the demo service (supervised worker tasks, child processes and
the cache-janitor thread) with the agent embedded, the CLI through ``observer.cli.main``
or a subprocess, the engine in ``observer.chaos``. The host's own answers (its task
list, its children, its audit) are the evidence, never the runner's word alone.

The match is ``worker-?`` rather than ``worker-*``: the demo's workers await short-lived
``worker-K-job`` sub-tasks, which ``worker-*`` also matches and which may finish between
being listed and being cancelled (an honest "gone" that would make exact assertions flaky).
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from observer.chaos import Chaos, ChaosError, ChaosEvent
from observer.cli import main
from observer.client import Node, connect
from observer.demo.launch import start_service
from observer.nodesfile import NodeSpec
from tests.helpers import ROOT, wait_until
from tests.helpers import node_spec as spec

WORKERS = "worker-?"


@pytest.fixture
def operator(demo, keys) -> Iterator[Node]:
    node = connect(demo.agent_address, token_file=keys.operator_token, fingerprint=keys.fingerprint)
    yield node
    node.close()


def creds(keys, role: str = "operator") -> list[str]:
    token = keys.operator_token if role == "operator" else keys.viewer_token
    return ["--token-file", str(token), "--fingerprint", keys.fingerprint]


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["chaos", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def pending_workers(node: Node) -> dict[str, str]:
    """task id -> name of the demo's pending worker-N tasks."""
    return {
        t.id: t.name
        for t in node.tasks(match="worker-")
        if t.state == "pending" and re.fullmatch(r"worker-\d", t.name)
    }


def run_records(node: Node, run: str) -> list:
    return [r for r in node.audit() if r.run == run]


# ------------------------------------------------------------------ tasks


def test_cli_json_cancels_workers_and_the_supervisor_replaces_them(demo, keys, operator, capsys):
    wait_until(lambda: len(pending_workers(operator)) == 3, message="three workers")
    code, out, err = cli(
        capsys,
        demo.agent_address,
        *creds(keys),
        "--match",
        WORKERS,
        "--count",
        "3",
        "--every",
        "0.3",
        "--seed",
        "42",
        "--json",
    )
    assert code == 0, err
    summary = json.loads(out)  # --json prints the summary object and nothing else
    assert summary["seed"] == 42 and summary["run"].startswith("chaos-")
    actions = summary["actions"]
    assert [a["result"] for a in actions] == ["ok", "ok", "ok"], actions
    assert all(a["node"] == "demo" and a["address"] == demo.agent_address for a in actions)
    assert summary["victims"] == 3 and summary["recovered"] == 3, summary["recoveries"]
    for rec in summary["recoveries"]:
        assert rec["seconds"] is not None and 0 <= rec["seconds"] < 15
        assert rec["replacement"] and rec["replacement"] != rec["target"]

    # The host's word: every action is in its audit under the run id, marked start and end.
    records = run_records(operator, summary["run"])
    cancels = [r for r in records if r.action == "cancel"]
    assert [r.target for r in cancels] == [a["target"] for a in actions]
    assert all(r.result == "ok" and r.role == "operator" for r in cancels)
    assert [r.action for r in records if r.action.startswith("chaos")] == [
        "chaos start",
        "chaos end",
    ]
    # The victims are gone; each replacement that was not hit itself runs under its name.
    tasks = {t.id: t for t in operator.tasks(match="worker-")}
    for a in actions:
        assert a["target"] not in tasks or tasks[a["target"]].state == "cancelled"
    hit = {a["target"] for a in actions}
    survivors = [r for r in summary["recoveries"] if r["replacement"] not in hit]
    assert survivors
    for rec in survivors:
        assert tasks[rec["replacement"]].name == rec["name"]
        assert tasks[rec["replacement"]].state == "pending"


def test_dry_runs_with_one_seed_pick_alike_and_touch_nothing(demo, keys, operator, capsys):
    """A viewer may dry-run: picks are reported, nothing is cancelled or audited."""
    before = wait_until(lambda: len(w := pending_workers(operator)) == 3 and w, message="workers")
    argv = [demo.agent_address, *creds(keys, "viewer"), "--match", WORKERS, "--count", "3"]
    argv += ["--every", "0", "--seed", "7", "--dry-run"]
    code, out, err = cli(capsys, *argv, "--json")
    assert code == 0, err
    first = json.loads(out)
    code, text, err = cli(capsys, *argv)  # the same run, for a human
    assert code == 0, err
    picks = [(a["address"], a["name"], a["target"]) for a in first["actions"]]
    assert [a["result"] for a in first["actions"]] == ["dry-run"] * 3
    assert sorted(name for _, name, _ in picks) == ["worker-1", "worker-2", "worker-3"]
    shown = re.findall(r"would cancel (task-\d+) (worker-\d)", text)
    assert shown == [(target, name) for _, name, target in picks]
    assert "dry run: 3 picks, nothing touched; seed 7 - repeat with --seed 7" in text
    assert first["victims"] == 0 and first["recovered"] == 0 and not first["recoveries"]
    assert pending_workers(operator) == before
    run = re.search(r"(chaos-[0-9a-f]{8})", text).group(1)
    assert not run_records(operator, first["run"]) and not run_records(operator, run)


def test_no_matching_target_is_a_skipped_step(demo, keys):
    summary = Chaos([spec(demo.agent_address, keys)], "no-such-task-*", count=2, every=0).run()
    assert [a["result"] for a in summary.actions] == ["skipped", "skipped"]
    assert summary.victims == 0 and "0 actions, 2 skipped, 0 victims" in summary.text()
    assert summary.actions[0]["message"] == "no task matches 'no-such-task-*' on any node"


# ------------------------------------------------------------------ processes and threads


def test_killed_child_process_comes_back_with_a_new_pid(demo, keys, operator):
    wait_until(lambda: len(operator.children()) >= 2, message="two child workers")
    summary = Chaos(
        [spec(demo.agent_address, keys)], "child-worker-*", kind="process", action="kill", seed=3
    ).run()
    (action,) = summary.actions
    assert action["result"] == "ok", action
    assert "child-worker-" in action["name"]
    assert summary.recovered == 1, summary.recoveries
    (rec,) = summary.recoveries
    old, new = int(rec["target"].removeprefix("pid-")), int(rec["replacement"].removeprefix("pid-"))
    assert new != old
    pids = {c.pid: c for c in operator.children()}
    assert old not in pids and new in pids
    assert rec["name"].split()[-1] in pids[new].cmdline  # child-worker-N, the same one
    (signal_record,) = [r for r in run_records(operator, summary.run) if r.action.startswith("sig")]
    assert (signal_record.action, signal_record.target) == ("signal KILL", f"pid-{old}")


def test_thread_raise_lets_the_thread_supervisor_restart_it(demo, keys, operator):
    def janitors() -> list:
        return [t for t in operator.threads() if t.name == "cache-janitor" and t.alive]

    (old,) = wait_until(janitors, message="cache-janitor")
    summary = Chaos([spec(demo.agent_address, keys)], "cache-janitor", kind="thread", seed=5).run()
    assert [a["result"] for a in summary.actions] == ["ok"]
    assert summary.recovered == 1, summary.recoveries
    (new,) = wait_until(janitors, message="new cache-janitor")
    assert new.native_id != old.native_id  # the ident may be reused; the OS thread is new
    raised = [r for r in run_records(operator, summary.run) if r.action.startswith("raise")]
    assert [(r.action, r.target) for r in raised] == [("raise SystemExit", old.id)]


def test_the_main_thread_and_the_agent_are_spared_unless_named(demo, keys, operator):
    threads = operator.threads()
    spared = {t.id for t in threads if t.is_main or t.is_agent}
    assert len(spared) >= 2
    # A dry run never picks a thread twice: this count picks every one it may, then skips.
    every_one = Chaos(
        [spec(demo.agent_address, keys)],
        "*",
        kind="thread",
        count=len(threads) + 10,
        every=0,
        dry_run=True,
    ).run()
    picked = {a["target"] for a in every_one.actions if a["result"] == "dry-run"}
    assert "cache-janitor" in {t.name for t in threads if t.id in picked}
    assert not picked & spared
    skips = [a["message"] for a in every_one.actions if a["result"] == "skipped"]
    assert skips and all("was hit already and is still there" in m for m in skips)
    main_thread = next(t for t in threads if t.is_main)
    named = Chaos(
        [spec(demo.agent_address, keys)], main_thread.name, kind="thread", dry_run=True
    ).run()
    assert [a["target"] for a in named.actions] == [main_thread.id]


# ------------------------------------------------------------------ permission


def test_viewer_is_refused_before_anything_is_touched(demo, keys, operator, capsys):
    before = wait_until(lambda: len(w := pending_workers(operator)) == 3 and w, message="workers")
    code, out, err = cli(
        capsys, demo.agent_address, *creds(keys, "viewer"), "--match", WORKERS, "--count", "3"
    )
    assert code != 0 and out == ""
    assert err.count("\n") == 1 and "refused" in err and "viewer" in err, err
    run = re.search(r"(chaos-[0-9a-f]{8})", err).group(1)
    assert pending_workers(operator) == before
    (denied,) = run_records(operator, run)  # the attempt is audited, and it is all there is
    assert (denied.action, denied.result, denied.role) == ("chaos start", "denied", "viewer")


# ------------------------------------------------------------------ several nodes


def test_two_nodes_in_one_run_are_both_hit(demo, keys, operator):
    second = start_service(keys.directory, ["--children", "0", "--name", "demo-b"])
    try:
        specs = [spec(demo.agent_address, keys), spec(second.agent_address, keys)]
        summary = Chaos(specs, WORKERS, count=6, every=0.1, seed=11).run()
        by_node = {a["address"] for a in summary.actions}
        assert by_node == {demo.agent_address, second.agent_address}, summary.actions
        assert [a["result"] for a in summary.actions] == ["ok"] * 6
        assert summary.recovered == 6, summary.recoveries
        assert {n["node"] for n in summary.nodes} == {"demo", "demo-b"}
        with connect(
            second.agent_address, token_file=keys.operator_token, fingerprint=keys.fingerprint
        ) as other:
            for address, node in ((demo.agent_address, operator), (second.agent_address, other)):
                mine = [a["target"] for a in summary.actions if a["address"] == address]
                audited = [r for r in run_records(node, summary.run) if r.action == "cancel"]
                assert [r.target for r in audited] == mine
    finally:
        second.stop()


def test_a_node_going_down_mid_run_is_recorded_not_fatal(demo, keys, make_host):
    host = make_host()
    acted = threading.Event()

    def on_event(event: ChaosEvent) -> None:
        if event.kind == "action":
            acted.set()

    chaos = Chaos(
        [spec(demo.agent_address, keys), spec(host.address, keys)],
        WORKERS,  # only the demo has such tasks; the host is listed every step
        count=4,
        every=0.4,
        on_event=on_event,
    ).start()
    assert acted.wait(15)
    host.process.stop()
    summary = chaos.join(30)
    assert summary is not None and not summary.stopped
    assert [a["result"] for a in summary.actions] == ["ok"] * 4
    assert any(host.address in e for e in summary.errors), summary.errors


def test_a_victim_without_a_supervisor_is_not_recovered(fresh_host, keys):
    summary = Chaos(
        [spec(fresh_host.address, keys)], "sleeper-1", recovery_timeout=1.0, poll=0.1
    ).run()
    assert [a["result"] for a in summary.actions] == ["ok"]
    assert summary.recovered == 0
    (rec,) = summary.recoveries
    assert rec["seconds"] is None and rec["result"] == "not recovered within 1 s"
    assert "1 not recovered within 1 s" in summary.text()


def test_stop_leaves_no_victim_unaccounted(make_host, keys):
    """Victims still awaited when the run stops are listed as such, every one of them."""
    host = make_host("--tasks", "5")
    third = threading.Event()
    chaos = Chaos(
        [spec(host.address, keys)],
        "bulk-*",  # nothing restarts these
        count=3,
        every=0,
        recovery_timeout=60,
        on_event=lambda e: e.kind == "action" and len(chaos.summary.actions) == 3 and third.set(),
    ).start()
    assert third.wait(15)
    chaos.stop()
    summary = chaos.join(10)
    assert summary is not None and summary.stopped and summary.victims == 3
    assert [(r["result"], r["seconds"]) for r in summary.recoveries] == [("stopped", None)] * 3
    assert "3 victims, 0 recovered, 3 not back yet when stopped" in summary.text()


# ------------------------------------------------------------------ time and stopping


def test_duration_ends_on_time(demo, keys, capsys):
    started = time.monotonic()
    code, out, err = cli(
        capsys,
        demo.agent_address,
        *creds(keys, "viewer"),
        "--match",
        WORKERS,
        "--duration",
        "1.5",
        "--every",
        "0.5",
        "--dry-run",
        "--json",
    )
    took = time.monotonic() - started
    assert code == 0, err
    summary = json.loads(out)
    assert len(summary["actions"]) == 3  # at 0, 0.5 and 1.0 s
    assert 1.5 <= summary["seconds"] <= took < 4.0


def test_stop_from_another_thread_ends_a_long_run_with_a_summary(demo, keys, operator):
    recovered = threading.Event()
    events: list[ChaosEvent] = []

    def on_event(event: ChaosEvent) -> None:
        events.append(event)
        if event.kind == "recovered":
            recovered.set()

    chaos = Chaos(
        [spec(demo.agent_address, keys)], WORKERS, duration=60, every=0.5, on_event=on_event
    ).start()
    assert recovered.wait(15)
    stopped_at = time.monotonic()
    chaos.stop()
    summary = chaos.join(10)
    assert summary is not None and time.monotonic() - stopped_at < 2.0
    assert summary.stopped and summary.seconds < 30
    assert 1 <= summary.victims <= summary.recovered + 1
    assert events[-1].kind == "end" and events[-1].text.startswith("stopped: ")
    marks = [r.action for r in run_records(operator, summary.run) if r.action.startswith("chaos")]
    assert marks == ["chaos start", "chaos end"]


def test_ctrl_c_stops_the_cli_and_still_prints_the_summary(demo, keys):
    argv = ["chaos", demo.agent_address, *creds(keys), "--match", WORKERS, "--duration", "60"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "observer", *argv, "--every", "0.5"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a shell's background job ignores SIGINT, and children inherit that: the CLI
        # must get Ctrl-C as a user's terminal delivers it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # the run is under way once a victim came back
            if "back within" in line:
                break
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert re.search(r"^stopped: \d+ actions?, \d+ victims?, \d+ recovered", out, re.M), out
    assert "stopping the chaos run" in err


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["--kind", "process", "--action", "cancel"], "a process cannot be hit with 'cancel'"),
        (["--kind", "task", "--action", "kill"], "a task cannot be hit with 'kill'"),
        (["--count", "0"], "count must be a whole number of 1 or more"),
        (["--every", "-1"], "every must be 0 seconds or more"),
        (["--duration", "0"], "duration must be more than 0 seconds"),
        (["--recovery-timeout", "0"], "recovery timeout must be more than 0"),
        (["--match", " "], "a match glob is required"),
    ],
)
def test_bad_arguments_get_one_clear_line(capsys, argv, reason):
    argv = ["127.0.0.1:9", "--match", "w*", *argv]  # refused before any connection
    code, out, err = cli(capsys, *argv)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and reason in err, err


def test_engine_rejects_count_with_duration_and_a_bad_seed():
    with pytest.raises(ChaosError, match="not both"):
        Chaos([NodeSpec("127.0.0.1:9")], "w*", count=2, duration=3)
    with pytest.raises(ChaosError, match="seed"):
        Chaos([NodeSpec("127.0.0.1:9")], "w*", seed="x")  # type: ignore[arg-type]
    with pytest.raises(ChaosError, match="no nodes"):
        Chaos([], "w*")


def test_unreachable_nodes_are_a_clear_error(keys, capsys):
    with socket.socket() as sock:  # a port nothing listens on once it is closed
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"
    code, out, err = cli(capsys, address, *creds(keys), "--match", "w*", "--timeout", "2")
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "no node reachable" in err and address in err, err


@pytest.mark.parametrize(
    ("label", "slot"),
    [
        ("gunicorn worker (age 3)", "gunicorn worker"),
        ("ForkPoolWorker-12", "ForkPoolWorker"),
        ("SpawnPoolWorker-1", "SpawnPoolWorker"),
        ("ForkServerProcess-2:3", "ForkServerProcess"),
        ("celery ForkPoolWorker-1", "celery ForkPoolWorker"),
        ("child-worker-1", "child-worker-1"),  # a name its replacement takes again
        ("http-worker-2", "http-worker-2"),
        ("python -m app 3", "python -m app 3"),
    ],
)
def test_a_worker_process_slot_leaves_out_what_its_replacement_changes(label, slot):
    from observer.chaos import process_slot

    assert process_slot(label) == slot
