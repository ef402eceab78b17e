"""The window says what is wrong with a node's settings or certificate, instead of
'connecting' forever or nothing at all (pytest-qt drives the real window)."""

from __future__ import annotations

import datetime

import pytest

pytest.importorskip("PyQt6")
pytest.importorskip("pytestqt")

from observer.gui.link import Status
from observer.keygen import generate
from observer.nodesfile import NodeSpec
from tests.attack.test_observer_side import BAD, address_of, listener, nobody_connected
from tests.helpers import line_value, start_test_host
from tests.test_gui import shown_status, wait_status, wait_up

__all__ = ["listener"]  # the fixture, imported for this module's tests


def node_tooltip(window, link) -> str:
    item = window.nodes.item_of(link)
    return item.toolTip(0) if item is not None else ""


def test_bad_fingerprint_shows_its_error_not_connecting(qtbot, window, listener):
    link = window.add_link(NodeSpec(address_of(listener), name="typo", fingerprint=BAD))
    assert shown_status(link) != Status.CONNECTING.value  # at once, not after a retry
    wait_status(qtbot, link, Status.AUTH_FAILED)
    assert repr(BAD) in node_tooltip(window, link) and "64 hex digits" in link.error
    assert window.nodes.item_of(link).text(2) == Status.AUTH_FAILED.value
    qtbot.waitUntil(lambda: "auth-failed" in window.node_label.text(), timeout=5000)
    assert nobody_connected(listener)


def test_expired_certificate_is_noted_in_the_node_tooltip(qtbot, window, tmp_path):
    old = generate(
        tmp_path / "expired",
        not_before=datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc),
        not_after=datetime.datetime(2021, 6, 30, tzinfo=datetime.timezone.utc),
    )
    proc = start_test_host(old.directory)
    try:
        spec = NodeSpec(
            line_value(proc, "agent"), token_file=str(old.viewer_token), fingerprint=old.fingerprint
        )
        link = window.add_link(spec)
        wait_up(qtbot, link)
        qtbot.waitUntil(
            lambda: (
                "warning: agent certificate expired on 2021-06-30" in node_tooltip(window, link)
            ),
            timeout=5000,
        )
    finally:
        proc.stop()
