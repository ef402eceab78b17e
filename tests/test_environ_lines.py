"""The host's environment as a snapshot shows it: made once while it stays the same, and
following every change (a variable set, changed, removed), secrets still redacted."""

from __future__ import annotations

import pytest

from agent.collect.process import environ_lines
from agent.redact import REDACTED


def test_environ_lines_are_reused_while_the_same_and_follow_each_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OBSERVER_TEST_PLAIN", "one")
    lines = environ_lines()
    assert "OBSERVER_TEST_PLAIN=one" in lines
    assert environ_lines() is lines  # the same environment: not redacted again
    monkeypatch.setenv("OBSERVER_TEST_PLAIN", "two")
    assert "OBSERVER_TEST_PLAIN=two" in environ_lines()
    monkeypatch.setenv("OBSERVER_TEST_PASSWORD", "hunter2")
    lines = environ_lines()
    assert f"OBSERVER_TEST_PASSWORD={REDACTED}" in lines
    assert not any("hunter2" in line for line in lines)
    monkeypatch.delenv("OBSERVER_TEST_PLAIN")
    assert not any(line.startswith("OBSERVER_TEST_PLAIN=") for line in environ_lines())
