"""The observer command, run as a real subprocess against a real host."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.schema import RECORDS
from observer import rpc
from tests.helpers import ROOT, wait_until

st.register_type_strategy(float, st.floats(allow_nan=False, allow_infinity=False))


def observer(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ)
    full_env.pop("OBSERVER_TOKEN", None)
    if env:
        full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "observer", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=full_env,
        timeout=60,
    )


def creds(host, role="operator"):
    token = host.keys.operator_token if role == "operator" else host.keys.viewer_token
    return ["--token-file", str(token), "--fingerprint", host.keys.fingerprint]


def test_ps_json_contract(host):
    out = observer("ps", host.address, *creds(host), "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert set(data) >= {"threads", "tasks"}
    for row in data["threads"] + data["tasks"]:
        assert {"id", "name", "state"} <= set(row)
    assert all("coroutine" in t for t in data["tasks"])
    sleeper = next(t for t in data["tasks"] if t["name"] == "sleeper-1")
    assert sleeper["coroutine"] == "sleeper" and sleeper["state"] == "pending"
    assert any(t["name"] == "busy-thread" for t in data["threads"])


def test_ps_json_of_many_tasks_lists_every_task_with_every_field(make_host):
    """Enough tasks for the bulk decoder and the C encoder: every task is there, each an
    object with TaskInfo's fields in order, as the record left the agent."""
    from agent.schema import TaskInfo

    h = make_host("--tasks", "500")
    out = observer("ps", h.address, *creds(h, "viewer"), "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    names = [f.name for f in dataclasses.fields(TaskInfo)]
    assert all(list(t) == names for t in data["tasks"])
    bulk = {t["name"] for t in data["tasks"] if t["name"].startswith("bulk-")}
    assert bulk == {f"bulk-{i}" for i in range(500)}
    assert data["tasks_total"] == len(data["tasks"]) and data["truncated"] is False
    parent = next(t for t in data["tasks"] if t["name"] == "parent")
    child = next(t for t in data["tasks"] if t["name"] == "child-of-parent")
    assert parent["awaiting"] == [child["id"]] and isinstance(parent["age"], float)


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r.__name__)
@settings(
    max_examples=20,
    deadline=None,
    # records nesting lists of records (a StallList's events, their stacks) are big drawn
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)
@given(data=st.data())
def test_json_output_is_what_asdict_gave(record, data):
    """--json prints records as dataclasses.asdict made them: the same text, key for key,
    once the indentation is left out (nested records and lists of them included)."""
    from observer.format import to_json

    value = data.draw(st.from_type(record) | st.lists(st.from_type(record), max_size=3))
    wrapped = {"value": value, "tuple": (value,), "n": 1}
    old = json.dumps(wrapped, default=dataclasses.asdict, separators=(",", ":"))
    assert to_json(wrapped) == old


def test_json_output_of_a_tree_and_of_what_json_cannot_encode():
    from observer.format import to_json
    from observer.tree import TreeNode

    root = TreeNode("process", "p", "host", children=[TreeNode("thread", "t", "main")])
    assert to_json(root) == json.dumps(root, default=dataclasses.asdict, separators=(",", ":"))
    with pytest.raises(TypeError, match="not JSON serializable"):
        to_json({"x": {1, 2}})
    with pytest.raises(TypeError, match="not JSON serializable"):
        to_json([TreeNode])  # a record class, not a record


def test_ps_table_tree_stack_info_history(host):
    out = observer("ps", host.address, *creds(host, "viewer"))
    assert out.returncode == 0, out.stderr
    assert "sleeper-1" in out.stdout and "busy-thread" in out.stdout and "pid-" in out.stdout
    tree = observer("tree", host.address, *creds(host, "viewer"))
    assert tree.returncode == 0, tree.stderr
    lines = tree.stdout.splitlines()
    parent = next(i for i, line in enumerate(lines) if "task parent " in line)
    child = lines[parent + 1]
    indent = lambda s: len(s) - len(s.lstrip())  # noqa: E731
    assert "child-of-parent" in child and indent(child) > indent(lines[parent])
    task_id = re.search(r"\((task-\d+)\)", lines[parent]).group(1)
    stack = observer("stack", host.address, task_id, "--locals", *creds(host, "viewer"))
    assert stack.returncode == 0, stack.stderr
    assert "in parent" in stack.stdout and "job = " in stack.stdout
    info = observer("info", host.address, *creds(host, "viewer"))
    assert info.returncode == 0 and "test-host" in info.stdout and "you are viewer" in info.stdout
    # the host's threads apart from the agent's own, as the System tab counts them
    counted = re.search(r"Threads\s+(\d+) \(\+(\d+) agent\)", info.stdout)
    assert counted and int(counted.group(1)) >= 1 and int(counted.group(2)) >= 1, info.stdout
    assert "s3cr3t" not in info.stdout
    history = observer("history", host.address, *creds(host, "viewer"), "--json")
    assert history.returncode == 0 and "samples" in json.loads(history.stdout)


def test_kill_takes_the_id_ps_prints(fresh_host):
    ps = json.loads(observer("ps", fresh_host.address, *creds(fresh_host), "--json").stdout)
    worker = next(t for t in ps["tasks"] if t["name"] == "worker")
    mark = fresh_host.process.mark()
    out = observer("kill", fresh_host.address, worker["id"], *creds(fresh_host))
    assert out.returncode == 0, out.stderr
    assert "cancelled" in out.stdout
    fresh_host.process.wait_line("worker ended cancelled=True", start=mark)
    child = next(c for c in ps["children"])
    out = observer("kill", fresh_host.address, child["id"], "--signal", "KILL", *creds(fresh_host))
    assert out.returncode == 0, out.stderr
    fresh_host.process.wait_line("child exited code=-9", start=mark)
    audit = observer("audit", fresh_host.address, *creds(fresh_host), "--json")
    actions = [r["action"] for r in json.loads(audit.stdout)]
    assert "cancel" in actions and "signal KILL" in actions


def test_failures_exit_nonzero_with_one_line_reason(host, other_keys):
    cases = [
        (
            [
                "--token-file",
                str(other_keys.operator_token),
                "--fingerprint",
                host.keys.fingerprint,
            ],
            "authentication",
        ),
        (
            [
                "--token-file",
                str(host.keys.operator_token),
                "--fingerprint",
                other_keys.fingerprint,
            ],
            "fingerprint",
        ),
    ]
    for options, word in cases:
        out = observer("ps", host.address, *options)
        assert out.returncode != 0
        assert word in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    worker = "task-1"
    out = observer("kill", host.address, worker, *creds(host, "viewer"))
    assert out.returncode != 0 and "permission" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    out = observer("kill", host.address, "task-987654", *creds(host))
    assert out.returncode != 0 and "no task task-987654" in out.stderr
    out = observer("ps", "127.0.0.1:1", *creds(host))
    assert out.returncode != 0 and "cannot connect" in out.stderr
    out = observer("ps", host.address, "--fingerprint", host.keys.fingerprint)
    assert out.returncode != 0 and "authentication" in out.stderr


def test_token_from_environment(host):
    token = host.keys.viewer_token.read_text().strip()
    out = observer(
        "ps",
        host.address,
        "--fingerprint",
        host.keys.fingerprint.replace("sha256:", "sha256:"),
        "--json",
        env={"OBSERVER_TOKEN": token},
    )
    assert out.returncode == 0, out.stderr


def test_fingerprint_with_colons_is_accepted(host):
    hexdigits = host.keys.fingerprint.removeprefix("sha256:")
    colons = ":".join(hexdigits[i : i + 2] for i in range(0, 64, 2)).upper()
    out = observer(
        "info",
        host.address,
        "--token-file",
        str(host.keys.viewer_token),
        "--fingerprint",
        f"sha256:{colons}",
    )
    assert out.returncode == 0, out.stderr


def test_keygen_prints_fingerprint_and_files(tmp_path):
    out = observer("keygen", str(tmp_path / "k"))
    assert out.returncode == 0, out.stderr
    assert re.search(r"^fingerprint: sha256:[0-9a-f]{64}$", out.stdout, re.M)
    for name in ("agent.crt", "agent.key", "viewer.token", "operator.token"):
        assert (tmp_path / "k" / name).exists()
    assert oct((tmp_path / "k" / "operator.token").stat().st_mode)[-3:] == "600"
    again = observer("keygen", str(tmp_path / "k"))
    assert again.returncode != 0 and "refusing to overwrite" in again.stderr


def test_agent_run_embeds_agent_in_unmodified_script(tmp_path, keys):
    script = tmp_path / "plain.py"
    script.write_text(
        "import asyncio\n"
        "async def untouched():\n"
        "    await asyncio.sleep(3600)\n"
        "async def main():\n"
        "    await asyncio.create_task(untouched(), name='unmodified-task')\n"
        "asyncio.run(main())\n"
    )
    from tests.helpers import HostProcess

    proc = HostProcess(
        [
            sys.executable,
            "-m",
            "agent",
            "run",
            "--bind",
            "127.0.0.1:0",
            "--keys",
            str(keys.directory),
            "--print-address",
            "--",
            str(script),
        ]
    )
    try:
        address = proc.wait_line(r"^agent: (\S+)").group(1)

        def listed():
            out = observer(
                "ps",
                address,
                "--token-file",
                str(keys.viewer_token),
                "--fingerprint",
                keys.fingerprint,
                "--json",
            )
            return any(t["name"] == "unmodified-task" for t in json.loads(out.stdout)["tasks"])

        wait_until(listed, message="unmodified-task listed")
    finally:
        proc.stop()


def test_keygen_load_reads_back_what_generate_wrote(tmp_path):
    from observer.keygen import generate, load

    assert load(tmp_path / "none") is None
    made = generate(tmp_path / "k")
    assert load(tmp_path / "k") == made


def test_port_out_of_range_and_zero_timeout_are_one_clear_line():
    """Before: 'must be host:port' for a port that was only too big, and a --timeout of 0
    became a non-blocking socket that failed with 'Operation now in progress'. A timeout
    of 0 is refused (it cannot mean 'no wait' for a network call, nor 'forever')."""
    out = observer("ps", "127.0.0.1:74312")
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip() == (
        "observer: node address '127.0.0.1:74312': port 74312 is out of range 1-65535"
    )
    for value in ("0", "-1", "nan"):
        out = observer("ps", "127.0.0.1:9", "--timeout", value)
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
        assert out.stderr.strip() == (
            f"observer: --timeout must be a positive number of seconds, not {value}"
        )
    out = observer("nodes", "127.0.0.1:9", "--timeout", "0", "--json")
    assert out.returncode == 2 and "--timeout" in out.stderr and out.stdout == ""


@given(
    host=st.sampled_from(["127.0.0.1", "node.internal", "[::1]"]),
    port=st.one_of(st.just(0), st.integers(65536, 10**12)),
)
def test_any_port_out_of_range_is_named(host, port):
    from observer.errors import BadSetting
    from observer.transport import parse_address

    with pytest.raises(BadSetting, match=f"port {port} is out of range 1-65535"):
        parse_address(f"{host}:{port}")
    assert parse_address(f"{host}:{port % 65535 + 1}").port == port % 65535 + 1


# ------------------------------------------------------------------ fixed cost of a call


def test_a_cli_call_imports_neither_qt_nor_cryptography(host):
    """What every `observer ps` pays before it prints: no Qt, no cryptography (the agent
    certificate's expiry is read by the stdlib DER reader), no asyncio or agent server, no
    TOML reader or temp files (only the nodes file needs them) and no shutil (argparse's
    help formatter imported it, with bz2 and lzma, to measure the terminal)."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "observer", "ps", host.address, *creds(host)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    imported = {
        line.rpartition("|")[2].strip()
        for line in out.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "observer.transport" in imported and "agent.schema" in imported
    heavy = {"cryptography", "PyQt6", "pyqtgraph", "asyncio", "agent.server", "agent.core"}
    heavy |= {"tomllib", "tomli", "tempfile", "shutil"}
    # nor what a call needs no part of: the agent's security module (one helper of it,
    # from agent.wire), the idna codec (the host goes to socket and ssl as ASCII bytes),
    # secrets (os.urandom) and sysconfig (only a long listing's record maker asks it)
    heavy |= {"agent.security", "encodings.idna", "stringprep", "secrets", "sysconfig"}
    # nor rpyc (observer.rpc speaks the client's part of its protocol; importing it loaded
    # all of it, pickle and logging too) nor logging (the agent modules a call imports
    # import it where they log)
    heavy |= {"rpyc", "pickle", "logging", "traceback"}
    # nor datetime (the certificate's expiry is read as seconds; a date only when near)
    heavy |= {"datetime"}
    assert not heavy & imported, sorted(heavy & imported)


RUN = "import sys; from observer.cli import run; sys.argv[1:] = {argv!r}; {before}; run()"


def run_program(argv: list[str], before: str = "pass") -> subprocess.CompletedProcess[str]:
    """``observer.cli.run`` (what ``python -m observer`` and the console script run) in a
    process of its own, after ``before``."""
    return subprocess.run(
        [sys.executable, "-c", RUN.format(argv=argv, before=before)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


def test_the_program_ends_without_teardown_only_when_nothing_would_run_then(host):
    """run() ends the process at once after main (os._exit: no module teardown, no
    OpenSSL cleanup) when shutdown would run nothing: the output is whole (a pipe, not a
    terminal) and the status main's (a usage error is argparse's SystemExit, as ever).
    An atexit callback, or a thread still running, gets the ordinary exit: the callback
    runs, the thread is waited for."""
    argv = ["ps", host.address, *creds(host), "--json"]
    fast = run_program(argv)
    assert fast.returncode == 0, fast.stderr
    assert len(json.loads(fast.stdout)["tasks"]) >= 1  # flushed before the process ended
    assert run_program(["ps"]).returncode == 2  # a usage error's status
    refused = run_program(["ps", "127.0.0.1:1", *creds(host)[2:]])
    assert refused.returncode == 1 and "refused" in refused.stderr
    atexit = "import atexit; atexit.register(print, 'atexit ran')"
    normal = run_program(argv, atexit)
    assert normal.returncode == 0 and normal.stdout.endswith("atexit ran\n"), normal.stdout[-200:]
    json.loads(normal.stdout.removesuffix("atexit ran\n"))
    thread = (  # a thread that ends only once the main thread has: never, if cut short
        "import threading; threading.Thread(target=lambda: (threading.main_thread().join(), "
        "print('thread done'))).start()"
    )
    waited = run_program(argv, thread)
    assert waited.returncode == 0 and waited.stdout.endswith("}\nthread done\n"), waited


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux delayed ACK timing")
def test_connecting_does_not_wait_for_a_delayed_ack(host):
    """The agent's hello follows its TLS session tickets; with Nagle it waited for our
    ACK of them, which Linux delays by 40 ms, so no connect took less. The fastest of a
    few connects now does (a loaded machine slows some, not all)."""
    import time

    times = []
    for _ in range(5):
        started = time.perf_counter()
        host.connect("viewer").close()
        times.append(time.perf_counter() - started)
    assert min(times) < 0.030, [f"{t * 1000:.1f} ms" for t in times]


def test_a_command_builds_only_its_own_parser_and_it_is_the_same():
    """Each call builds the sub-parser of its command alone: the same options and help as
    in the whole parser, which `observer --help` and unknown words still get."""
    import argparse

    from observer.cli import COMMANDS, build_parser

    def subparsers(parser):
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        return action.choices

    whole = subparsers(build_parser())
    assert list(whole) == list(COMMANDS) == list(subparsers(build_parser("bogus")))
    for name in COMMANDS:
        alone = subparsers(build_parser(name))
        assert list(alone) == [name]
        assert alone[name].format_help() == whole[name].format_help()
    argv = ["ps", "10.0.0.1:7330", "--json", "--limit", "5", "--match", "w"]
    assert build_parser("ps").parse_args(argv) == build_parser().parse_args(argv)


def test_a_cli_call_in_process_leaves_the_gc_as_it_found_it(host, capsys):
    """main() parses and imports with the GC paused and sets what that made aside from
    the GC's scans (gc.freeze) while the command runs; on return the caller's GC is as
    before: enabled, nothing of ours frozen, and objects the caller froze itself left so."""
    import gc

    from observer.cli import main

    gc.unfreeze()  # what earlier tests in this process froze (the GUI's link does)
    assert gc.isenabled() and gc.get_freeze_count() == 0
    assert main(["ps", host.address, *creds(host), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tasks"]
    assert gc.isenabled() and gc.get_freeze_count() == 0
    assert main(["ps", "no-port"]) == 2  # a usage error, before anything is frozen
    assert gc.isenabled() and gc.get_freeze_count() == 0
    gc.freeze()  # a caller that froze its own objects: main leaves the GC's freeze alone
    try:
        frozen = gc.get_freeze_count()
        assert main(["ps", host.address, *creds(host)]) == 0
        assert 0 < gc.get_freeze_count() <= frozen and gc.isenabled()  # some were freed
    finally:
        gc.unfreeze()


def test_a_call_after_connecting_is_one_round_trip(host):
    """The agent's root (GETROOT) is asked for with the login's proof, in its round
    trip; every call is then one request calling the root by name (CALLATTR): the first
    took two (GETROOT, then CALLATTR), and rpyc once asked which methods the root has
    (HANDLE_INSPECT) to build a proxy the client never used."""
    node = host.connect("viewer")
    try:
        conn = node._conn
        assert conn._root_seq is not None and conn._root is None  # asked, not yet read
        sent = []
        send = conn._send  # every message the connection sends (requests here)
        conn._send = lambda msg, seq, args: (sent.append(args[0]), send(msg, seq, args))[1]
        assert node.process().pid == host.process.proc.pid
        assert sent == [rpc.HANDLE_CALLATTR], sent
        node.threads()
        assert sent == [rpc.HANDLE_CALLATTR] * 2, sent
    finally:
        node.close()
