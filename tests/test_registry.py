"""Local agents note their address so a parent can mark children that run an agent."""

from __future__ import annotations

import os

import psutil

from agent import registry


def test_registered_address_is_found_for_this_process(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    me = psutil.Process()
    assert registry.agent_address_of(os.getpid(), me.create_time()) is None
    registry.register("127.0.0.1:4567")
    try:
        assert registry.agent_address_of(os.getpid(), me.create_time()) == "127.0.0.1:4567"
        entry = tmp_path / "runtime-observer" / "agents" / str(os.getpid())
        assert oct(entry.stat().st_mode)[-3:] == "600"
        # an entry older than the process using that pid is stale and ignored
        assert registry.agent_address_of(os.getpid(), entry.stat().st_mtime + 60) is None
    finally:
        registry.unregister()
    assert registry.agent_address_of(os.getpid(), me.create_time()) is None
