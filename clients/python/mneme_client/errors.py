"""The exceptions a call can raise, one per gRPC status the server uses.

Every exception carries the status `code` (its name, e.g. ``"INVALID_ARGUMENT"``) and the
server's `message`. :class:`InvalidArgument` also names the offending `field` (the server
writes ``field: reason``).
"""

from __future__ import annotations

import grpc


class MnemeError(Exception):
    """Any error from the server or the transport."""

    code: str = "UNKNOWN"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class InvalidArgument(MnemeError):
    """The request broke a limit or was malformed; `field` names what."""

    code = "INVALID_ARGUMENT"

    @property
    def field(self) -> str:
        head, sep, _ = self.message.partition(":")
        return head.strip() if sep else ""


class NotFound(MnemeError):
    """No such memory (or it expired)."""

    code = "NOT_FOUND"


class Unauthenticated(MnemeError):
    """The API key is missing or wrong."""

    code = "UNAUTHENTICATED"


class PermissionDenied(MnemeError):
    """The API key may not use this agent (or needs to be an admin key)."""

    code = "PERMISSION_DENIED"


class FailedPrecondition(MnemeError):
    """The call does not fit the agent's configuration (e.g. text for a vector-only agent)."""

    code = "FAILED_PRECONDITION"


class ResourceExhausted(MnemeError):
    """Too many calls in flight, or a message over the size limit."""

    code = "RESOURCE_EXHAUSTED"


class Unavailable(MnemeError):
    """The server cannot be reached, is shutting down, or its store cannot write safely."""

    code = "UNAVAILABLE"


class DeadlineExceeded(MnemeError):
    """The call ran past its deadline."""

    code = "DEADLINE_EXCEEDED"


class DataLoss(MnemeError):
    """The server found damaged data."""

    code = "DATA_LOSS"


class Internal(MnemeError):
    """A server bug."""

    code = "INTERNAL"


_BY_CODE: dict[grpc.StatusCode, type[MnemeError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.DATA_LOSS: DataLoss,
    grpc.StatusCode.INTERNAL: Internal,
}


def from_rpc_error(err: grpc.RpcError) -> MnemeError:
    """The typed exception for a gRPC error."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = err.details() if hasattr(err, "details") else str(err)
    cls = _BY_CODE.get(code, MnemeError)
    message = details or str(code)
    if cls is MnemeError:
        return MnemeError(message, code=code.name if code is not None else "UNKNOWN")
    return cls(message)


#: Codes retried (with backoff) for idempotent calls.
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
