"""Fixtures: key material made by our own keygen, and real host processes with the agent."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from observer.client import Node, connect
from observer.keygen import KeyMaterial, generate
from tests.helpers import (
    Agents,
    HostProcess,
    Leaky,
    line_value,
    start_leaky,
    start_test_host,
)

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

# No per-example deadline for any property test: the suite runs on shared, loaded boxes
# (and in a chroot for 3.14/3.15), where one example of a fast test now and then takes
# hundreds of ms for reasons of its own; what the tests check is behaviour, and the
# speed figures live in bench/. A test may still set its own settings.
settings.register_profile("suite", deadline=None)
settings.load_profile("suite")


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyMaterial:
    return generate(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="session")
def other_keys(tmp_path_factory: pytest.TempPathFactory) -> KeyMaterial:
    """A second, unrelated key set: its fingerprint and tokens must all be rejected."""
    return generate(tmp_path_factory.mktemp("other-keys"))


@dataclass
class Host:
    process: HostProcess
    address: str
    echo: str
    child_pid: int
    keys: KeyMaterial

    def connect(self, role: str = "operator", **kw: object) -> Node:
        token_file = self.keys.operator_token if role == "operator" else self.keys.viewer_token
        return connect(
            self.address,
            token_file=token_file,
            fingerprint=self.keys.fingerprint,
            **kw,  # type: ignore[arg-type]
        )


def _host(keys: KeyMaterial, *args: str, env: dict[str, str] | None = None) -> Host:
    proc = start_test_host(keys.directory, *args, env=env)
    return Host(
        proc,
        line_value(proc, "agent"),
        line_value(proc, "echo"),
        int(line_value(proc, "child")),
        keys,
    )


@pytest.fixture(scope="module")
def host(keys: KeyMaterial) -> Iterator[Host]:
    """A test host shared by a module's read-only tests."""
    h = _host(keys)
    yield h
    h.process.stop()


@pytest.fixture
def fresh_host(keys: KeyMaterial) -> Iterator[Host]:
    """A test host of one's own, for tests that kill things in it."""
    h = _host(keys)
    yield h
    h.process.stop()


@pytest.fixture
def make_host(keys: KeyMaterial) -> Iterator[object]:
    hosts: list[Host] = []

    def make(*args: str, env: dict[str, str] | None = None) -> Host:
        h = _host(keys, *args, env=env)
        hosts.append(h)
        return h

    yield make
    for h in hosts:
        h.process.stop()


@pytest.fixture
def operator(host: Host) -> Iterator[Node]:
    node = host.connect("operator")
    yield node
    node.close()


@pytest.fixture
def leaky(keys: KeyMaterial) -> Iterator[Leaky]:
    """A host of one's own that leaks on purpose (tests/hosts/leaky.py)."""
    host = start_leaky(keys)
    yield host
    host.process.stop()


@pytest.fixture
def agents(keys: KeyMaterial) -> Iterator[Agents]:
    """Hosts a test starts where it likes (``agents.start(bind, name)``), all stopped after."""
    group = Agents(keys)
    yield group
    group.stop()


@pytest.fixture(scope="module")
def demo(keys: KeyMaterial) -> Iterator[object]:
    """The demo service (supervised workers, children, a janitor thread), one per module."""
    from observer.demo.launch import start_service

    proc = start_service(keys.directory)
    yield proc
    proc.stop()


@pytest.fixture
def window(qtbot: Any, tmp_path: Path) -> Iterator[Any]:
    """A shown main window with a nodes file of its own."""
    from observer.gui.window import MainWindow

    win = MainWindow(nodes_file=tmp_path / "nodes.toml")
    qtbot.addWidget(win)
    win.show()
    yield win
    win.close()
