"""Errors the agent reports to the observer, each with a stable machine-readable kind."""

from __future__ import annotations


class AgentError(Exception):
    """A request the agent refuses or cannot satisfy; ``kind`` travels on the wire."""

    kind = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(AgentError):
    """No such task/thread/process/frame (never existed, or already gone)."""

    kind = "not-found"


class Gone(AgentError):
    """The target existed but has already finished."""

    kind = "gone"


class PermissionDenied(AgentError):
    """The connection's role does not allow this action."""

    kind = "permission"


class BadRequest(AgentError):
    """Malformed arguments."""

    kind = "bad-request"
