"""Errors the observer raises: each one a clear, one-line reason for a human."""

from __future__ import annotations


class ObserverError(Exception):
    """Base of every error the client API raises."""


class ConnectError(ObserverError):
    """The node could not be reached (refused, unreachable, DNS)."""


class ConnectionRefused(ConnectError):
    """Nothing listens on the node's port: its process exited (or its agent stopped)."""


class AuthenticationError(ObserverError):
    """The agent did not accept our token (or we did not accept its proof)."""


class CertificateError(ObserverError):
    """The agent's TLS certificate did not match the pinned fingerprint or CA."""


class BadSetting(ObserverError):
    """A setting is malformed (address, timeout): caught before connecting, naming the value."""


class BadFingerprint(BadSetting, CertificateError):
    """The pinned fingerprint is not ``sha256:<64 hex digits>``: no agent could match it."""


class VersionMismatch(ObserverError):
    """Observer and agent speak different protocol versions."""


class NodeTimeout(ObserverError):
    """The node did not answer within the timeout."""


class NodeDown(ObserverError):
    """The connection to the node was lost."""


class RemoteError(ObserverError):
    """The agent answered with an error; ``kind`` is its stable machine word."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class NotFound(RemoteError):
    """No such task/thread/process/frame on the node."""


class Gone(RemoteError):
    """The target had already finished."""


class PermissionDenied(RemoteError):
    """This connection's role may not do that."""


class BadRequest(RemoteError):
    """The agent rejected the arguments."""


REMOTE_KINDS: dict[str, type[RemoteError]] = {
    "not-found": NotFound,
    "gone": Gone,
    "permission": PermissionDenied,
    "bad-request": BadRequest,
}


def remote_error(kind: str, message: str) -> RemoteError:
    """The RemoteError subclass for an agent's error kind."""
    return REMOTE_KINDS.get(kind, RemoteError)(kind, message)
