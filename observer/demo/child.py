"""A demo child worker process: light CPU work and sleep, exits cleanly on SIGTERM.

Run as ``python -m observer.demo.child NAME``; the demo service keeps a few alive.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import sys
import time
from types import FrameType

PARENT_ENV = "OBSERVER_DEMO_PARENT_PID"


def _set_title(name: str) -> None:
    """Show ``name`` in ps/top when the optional ``setproctitle`` package is installed."""
    try:
        from setproctitle import setproctitle  # type: ignore[import-not-found]
    except ImportError:
        return
    setproctitle(name)


def _stop(signum: int, frame: FrameType | None) -> None:
    """Turn SIGTERM/SIGINT into a clean exit with status 0."""
    raise SystemExit(0)


def _cpu_burst(rng: random.Random) -> str:
    """Hash a few kilobytes a few hundred times: a couple of milliseconds of real CPU."""
    digest = hashlib.sha256()
    block = rng.randbytes(4096)
    for _ in range(rng.randint(50, 400)):
        digest.update(block)
    return digest.hexdigest()


def expected_parent() -> int:
    """The pid whose death should end this child: the one its parent wrote in PARENT_ENV
    (the parent may be gone before we could ask getppid()), else getppid()."""
    return int(os.environ.get(PARENT_ENV) or os.getppid())


def orphaned(parent: int) -> bool:
    """True once ``parent`` died and this process was handed to another one."""
    return os.getppid() != parent


def main(argv: list[str] | None = None) -> int:
    """Loop CPU burst + sleep until signalled or orphaned."""
    args = sys.argv[1:] if argv is None else argv
    name = args[0] if args else "child-worker"
    _set_title(name)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    parent = expected_parent()
    rng = random.Random()
    while not orphaned(parent):  # else our service died without stopping us: do not linger
        _cpu_burst(rng)
        time.sleep(rng.uniform(0.1, 0.5))
    return 0


if __name__ == "__main__":
    sys.exit(main())
