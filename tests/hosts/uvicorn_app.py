"""The ASGI app of tests/hosts/gunicorn_app.py for ``uvicorn --workers N``, whose workers
are spawned (they inherit nothing of the master): importing it in a worker joins the
master's agent (agent.join(), agent.spawned); in any other process it starts nothing."""

from __future__ import annotations

import agent
from tests.hosts.gunicorn_app import asgi as app

agent.join()

__all__ = ["app"]
