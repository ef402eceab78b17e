"""Control actions really happen in the host; viewers are refused; bad ids get clear errors."""

from __future__ import annotations

import pytest

from observer.errors import BadRequest, NotFound, PermissionDenied
from tests.helpers import wait_until


def _task(node, name):
    return next(t for t in node.tasks() if t.name == name)


def test_cancel_really_cancels_and_supervisor_restarts(fresh_host):
    with fresh_host.connect() as node:
        worker = _task(node, "worker")
        mark = fresh_host.process.mark()
        result = node.cancel(worker.id)
        assert result.ok and "cancelled" in result.message
        fresh_host.process.wait_line(r"event: worker ended cancelled=True", start=mark)
        fresh_host.process.wait_line(r"event: worker started generation=2", start=mark)
        replacement = wait_until(
            lambda: (t := _task(node, "worker")) and t.id != worker.id and t, message="new worker"
        )
        assert replacement.state == "pending"
        audit = node.audit()
        assert audit[-1].action == "cancel" and audit[-1].target == worker.id
        assert audit[-1].role == "operator" and audit[-1].result == "ok"


def test_raise_in_thread_really_raises(fresh_host):
    with fresh_host.connect() as node:
        victim = next(t for t in node.threads() if t.name == "victim-thread")
        mark = fresh_host.process.mark()
        result = node.raise_in(victim.id, "KeyboardInterrupt")
        assert "next Python bytecode" in result.message and "C code" in result.message
        fresh_host.process.wait_line(r"victim-thread ended by KeyboardInterrupt", start=mark)
        wait_until(lambda: all(t.name != "victim-thread" for t in node.threads()))


def test_signal_child_really_ends_it(fresh_host):
    with fresh_host.connect() as node:
        mark = fresh_host.process.mark()
        result = node.signal(f"pid-{fresh_host.child_pid}", "TERM")
        assert result.ok and str(fresh_host.child_pid) in result.message
        fresh_host.process.wait_line(r"event: child exited code=-15", start=mark)


def test_viewer_is_denied_and_audited(host):
    with host.connect("viewer") as viewer:
        assert viewer.role == "viewer"
        worker = _task(viewer, "worker")
        with pytest.raises(PermissionDenied, match="permission"):
            viewer.cancel(worker.id)
        with pytest.raises(PermissionDenied):
            viewer.signal(host.child_pid)
        with pytest.raises(PermissionDenied):
            viewer.raise_in("thread-1")
        assert _task(viewer, "worker").id == worker.id  # nothing happened
        records = viewer.audit()
        denied = [r for r in records if r.result == "denied" and r.role == "viewer"]
        assert {r.action for r in denied} >= {"cancel", "signal TERM", "raise SystemExit"}


def test_unknown_and_finished_targets_give_clear_errors(host):
    with host.connect() as node:
        with pytest.raises(NotFound, match="no task task-999999"):
            node.cancel("task-999999")
        with pytest.raises(NotFound, match="no thread thread-12345"):
            node.raise_in("thread-12345")
        with pytest.raises(NotFound, match="no thread thread-12345-1 "):
            node.raise_in("thread-12345-1")
        with pytest.raises(NotFound, match="not a live child"):
            node.signal(1)
        with pytest.raises(BadRequest, match="not a builtin exception"):
            node.raise_in(next(t.id for t in node.threads() if t.name == "busy-thread"), "os")
        with pytest.raises(NotFound):
            node.stack("task-999999")
        with pytest.raises(BadRequest):
            node.stack("banana")
        sleeper = _task(node, "sleeper-1")
        with pytest.raises(NotFound, match="no frame"):
            node.locals(sleeper.id, 50)
        agent_thread = next(t for t in node.threads() if t.is_agent)
        with pytest.raises(BadRequest, match="agent's own"):
            node.raise_in(agent_thread.id)


def test_cancel_of_a_task_that_just_finished(fresh_host):
    with fresh_host.connect() as node:
        worker = _task(node, "worker")
        node.cancel(worker.id)
        with pytest.raises(NotFound.__mro__[1]) as info:  # RemoteError: gone or not-found
            node.cancel(worker.id)
        assert info.value.kind in ("gone", "not-found")
        assert "finished" in info.value.message or "no task" in info.value.message
