"""Setting up: an agent whose port is taken, several agents on one host, and the
certificate's fingerprint printed again. Real subprocesses, real agents, real TLS."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys

import pytest

from agent.wire import parse_fingerprint
from tests.helpers import ROOT, HostProcess
from tests.test_cli import observer


def agent_run(keys, bind: str, script, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "agent",
        "run",
        "--bind",
        bind,
        "--keys",
        str(keys.directory),
        *extra,
        "--",
        str(script),
    ]


def test_a_taken_port_names_the_address_and_the_program_still_runs(tmp_path, keys):
    """Before: `[Errno 98] Address already in use`, exit 2, and the program never ran."""
    script = tmp_path / "app.py"
    script.write_text("print('the program ran', flush=True)\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            agent_run(keys, f"127.0.0.1:{port}", script),
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            timeout=60,
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "the program ran\n"
    lines = done.stderr.splitlines()
    assert len(lines) == 1, lines
    assert f"cannot listen on 127.0.0.1:{port}" in lines[0]
    assert "already in use" in lines[0] and "agent not started" in lines[0]
    assert "--bind 127.0.0.1:0" in lines[0]


def test_agents_on_port_0_are_found_by_observer_nodes_local(tmp_path, keys):
    """Two services on one host, each agent on a free port: `observer nodes --local` finds
    both through the runtime directory, with no address given."""
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    env = {"XDG_RUNTIME_DIR": str(runtime)}
    script = tmp_path / "service.py"
    script.write_text("import sys\nsys.stdin.read()\n")  # runs until its stdin closes
    services = [
        HostProcess(agent_run(keys, "127.0.0.1:0", script, "--print-address"), env=env)
        for _ in range(2)
    ]
    try:
        addresses = {s.wait_line(r"^agent: (\S+)").group(1) for s in services}
        assert len(addresses) == 2
        out = observer("nodes", "--local", *creds_of(keys), "--json", env=env)
        assert out.returncode == 0, out.stderr
        rows = json.loads(out.stdout)
        assert {r["address"] for r in rows} == addresses
        assert all(r["status"] == "up" for r in rows), rows
    finally:
        for service in services:
            service.stop()
    gone = observer("nodes", "--local", *creds_of(keys), env=env)
    assert gone.returncode == 1 and "no agent of this user" in gone.stderr


def creds_of(keys) -> list[str]:
    return ["--token-file", str(keys.viewer_token), "--fingerprint", keys.fingerprint]


def test_keygen_show_prints_the_fingerprint_again(tmp_path, host):
    made = observer("keygen", str(tmp_path / "k"))
    assert made.returncode == 0, made.stderr
    printed = re.search(r"^fingerprint: (sha256:[0-9a-f]{64})$", made.stdout, re.M).group(1)
    assert f"keygen --show {tmp_path / 'k'}" in made.stdout
    for where in (tmp_path / "k", tmp_path / "k" / "agent.crt"):
        shown = observer("keygen", "--show", str(where))
        assert shown.returncode == 0, shown.stderr
        assert re.search(rf"^fingerprint: {printed}$", shown.stdout, re.M), shown.stdout
    assert sorted(p.name for p in (tmp_path / "k").iterdir()) == sorted(
        ["agent.crt", "agent.key", "operator.token", "viewer.token"]
    )
    bad = observer("keygen", "--show", str(tmp_path / "k" / "agent.key"))
    assert bad.returncode == 1 and "is not a PEM certificate" in bad.stderr

    # The openssl way the README gives: its output, pasted as it is, pins the agent.
    shown = observer("keygen", "--show", str(host.keys.directory))
    pin = re.search(r"^fingerprint: (\S+)$", shown.stdout, re.M).group(1)
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    ssl_out = subprocess.run(
        ["openssl", "x509", "-in", str(host.keys.cert), "-noout", "-fingerprint", "-sha256"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    pasted = ssl_out.strip().split("=", 1)[1]  # "AB:CD:..."
    assert parse_fingerprint(pasted) == parse_fingerprint(pin)
    token = ["--token-file", str(host.keys.viewer_token)]
    ps = observer("ps", host.address, *token, "--fingerprint", pasted, "--json")
    assert ps.returncode == 0, ps.stderr
