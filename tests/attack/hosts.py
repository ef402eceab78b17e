"""Starting tests/hosts/events.py for the attack tests, and reading what it reports."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from observer.client import Node, connect
from tests.helpers import HostProcess, line_value


@dataclass
class EventsHost:
    process: HostProcess
    address: str
    echo: str
    keys: Any

    def connect(self, role: str = "operator") -> Node:
        token = self.keys.operator_token if role == "operator" else self.keys.viewer_token
        return connect(self.address, token_file=token, fingerprint=self.keys.fingerprint)

    def creds(self, role: str = "operator") -> list[str]:
        token = self.keys.operator_token if role == "operator" else self.keys.viewer_token
        return ["--token-file", str(token), "--fingerprint", self.keys.fingerprint]

    def ask(self, command: str, pattern: str) -> str:
        """Send a stdin command; the first group of the host's answer after it."""
        mark = self.process.mark()
        self.process.send(command)
        return self.process.wait_line(pattern, start=mark).group(1)

    def tracing(self) -> bool:
        """Whether tracemalloc runs in the host, as the host itself sees it."""
        return self.ask("tracemalloc?", r"^event: tracemalloc tracing=(\w+)") == "True"

    def stop(self) -> None:
        self.process.stop()


def start_events_host(keys: Any, *args: str, env: dict[str, str] | None = None) -> EventsHost:
    process = HostProcess(
        [sys.executable, "-m", "tests.hosts.events", str(keys.directory), *args], env=env
    )
    try:
        process.wait_line(r"^echo: ")
        return EventsHost(process, line_value(process, "agent"), line_value(process, "echo"), keys)
    except BaseException:
        process.stop()
        raise


@contextlib.contextmanager
def events_host(keys: Any, *args: str, env: dict[str, str] | None = None) -> Iterator[EventsHost]:
    host = start_events_host(keys, *args, env=env)
    try:
        yield host
    finally:
        host.stop()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines audit file (every line must parse)."""
    return [json.loads(line) for line in path.read_text().splitlines()]
