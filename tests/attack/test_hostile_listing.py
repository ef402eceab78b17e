"""Listing tasks and loops never runs the host's code (issue: getattr on a host's own
coroutine object ran its __getattr__; isinstance on a run_forever frame's self ran a
__class__ property)."""

from __future__ import annotations

import sys

from tests.helpers import HostProcess, echo_ok, line_value
from tests.test_cli import observer


def test_listing_and_inspecting_runs_no_host_code(keys):
    host = HostProcess([sys.executable, "-m", "tests.hosts.hostile", str(keys.directory)])
    try:
        host.wait_line(r"^echo: ")
        address = line_value(host, "agent")
        creds = ["--token-file", str(keys.operator_token), "--fingerprint", keys.fingerprint]
        from observer.client import connect

        with connect(address, token_file=keys.operator_token, fingerprint=keys.fingerprint) as node:
            snap = node.snapshot()
            tasks = {t.name: t for t in snap.tasks}
            hostile = tasks["hostile-coro"]
            stack = node.stack(hostile.id)
            threads = node.threads()
        for command in ("ps", "tree"):
            out = observer(command, address, *creds)
            assert out.returncode == 0, out.stderr
        assert hostile.coroutine == "HostileCoro"  # named by its type, from C slots
        assert stack.target == hostile.id
        assert "decoy" in {t.name for t in threads}
        assert echo_ok(line_value(host, "echo"))
        ran = [line for line in host.lines if line.startswith("event: hostile")]
        assert ran == [], f"the agent ran the host's code: {ran}"
    finally:
        host.stop()
