"""What a forked child does with the agent it inherited from its parent (one place).

After fork() the child holds copies of the parent agent's descriptors (the listener,
the observers' sessions, the gate's wake pair and selector) but none of its threads.
The child closes its copies at once, never with shutdown() (that would end the parent's
sockets too), forgets the parent's server, and leaves a fresh lock, so that ``stop()``,
atexit or ``agent.start()`` in the child concern the child alone. Hooks registered with
``on_child`` (agent.workers) then run, e.g. to give the child an agent of its own.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from typing import Any

from agent import forksafe

_installed = False
_install_lock = threading.Lock()
_child_hooks: list[Callable[[Any], None]] = []
_parent_hooks: list[Callable[[], None]] = []


def install() -> None:
    """Register the at-fork handler once per interpreter (idempotent)."""
    global _installed
    with _install_lock:
        if _installed or not hasattr(os, "register_at_fork"):
            return
        # first: a fork waits for the agent's threads to leave OpenSSL, and the child's
        # guard is reset before the hooks below run (after-fork hooks run in this order)
        forksafe.install()
        os.register_at_fork(
            after_in_child=_after_fork_in_child, after_in_parent=_after_fork_in_parent
        )
        _installed = True


def on_child(hook: Callable[[Any], None]) -> None:
    """Call ``hook(inherited_server_or_None)`` in every forked child, after the cleanup."""
    if hook not in _child_hooks:
        _child_hooks.append(hook)


def on_parent(hook: Callable[[], None]) -> None:
    """Call ``hook()`` in this process after each fork (agent.exits: a new child to watch);
    it must be quick and never block: the forking thread waits for it."""
    if hook not in _parent_hooks:
        _parent_hooks.append(hook)


def _after_fork_in_parent() -> None:
    for hook in list(_parent_hooks):
        try:
            hook()
        except BaseException:
            _log_failure("a fork hook in the parent")


def _after_fork_in_child() -> None:
    """Runs in the child right after fork(); nothing may escape into the host."""
    inherited = None
    try:
        from agent.collect.inherited import forget_inherited_loops

        forget_inherited_loops()
    except BaseException:
        _log_failure("leaving out the loops of the parent's other threads")
    try:
        from agent.collect.taskcpu import after_fork_in_child

        after_fork_in_child()  # the parent's CPU per task: its tick thread did not come along
    except BaseException:
        _log_failure("turning off CPU per task")
    try:
        import agent as facade

        inherited = facade._forget_after_fork()
    except BaseException:
        _log_failure("cleaning up the inherited agent")
    for hook in list(_child_hooks):
        try:
            hook(inherited)
        except BaseException:
            _log_failure("a fork hook")


def _log_failure(what: str) -> None:
    with contextlib.suppress(BaseException):  # logging itself broken in the child: silence
        import logging  # here: the observer imports this module (agent/__init__) and no logging

        logging.getLogger("agent").warning(
            "runtime-observer agent: after fork, %s failed", what, exc_info=True
        )
