"""The test hosts' child process: sleeps in short steps and leaves once its parent is gone.

Uses the demo child's guard (the parent names itself in the environment), so a host
stopped with SIGTERM or SIGKILL leaves no orphan behind, even when it died before this
process could read getppid(). Extra arguments are ignored (they only show in its argv).
"""

from __future__ import annotations

import os
import time

from observer.demo.child import PARENT_ENV, expected_parent, orphaned


def spawn_argv(python: str, *extra: str) -> tuple[list[str], dict[str, str]]:
    """argv and environment that start this child for the calling (parent) process."""
    return [python, "-m", "tests.hosts.child", *extra], dict(
        os.environ, **{PARENT_ENV: str(os.getpid())}
    )


if __name__ == "__main__":
    parent = expected_parent()
    while not orphaned(parent):
        time.sleep(0.2)  # a sleeping child for the host to list and signal, not a wait
