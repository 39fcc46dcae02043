"""Typed client errors, one per status a caller can act on, carrying the server's message."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from ringserve.contract import arguments
from ringserve.contract.images import BAD_IMAGE


class RingserveError(Exception):
    """Base of every error the client raises; ``code`` is the gRPC status code."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.request_id = request_id

    def __str__(self) -> str:
        prefix = f"[{self.request_id}] " if self.request_id is not None else ""
        return f"{prefix}{self.code.name}: {self.message}"


class InvalidArgument(RingserveError):
    """An argument is outside its range; ``argument`` names it when known, the message says what it may be.

    Raised by the client before it calls, and for the server's INVALID_ARGUMENT answers.
    """

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, message: str, request_id: str | None = None, argument: str | None = None) -> None:
        super().__init__(message, request_id)
        self.argument = argument


class InvalidImage(InvalidArgument):
    """The image was refused (empty, not an image, truncated, too large): fix the input."""


class Overloaded(RingserveError):
    """The server's queues are full: back off, send fewer at once, or add nodes."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(RingserveError):
    """No server could take the request, even after retries: check the target and the cluster."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(RingserveError):
    """The call's deadline passed before every item was answered: raise the timeout or send fewer."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFound(RingserveError):
    """What the request named does not exist: a model (see ``list_models``), a collection or an id in it."""

    code = grpc.StatusCode.NOT_FOUND


class FailedPrecondition(RingserveError):
    """The request cannot apply to the state it found: a collection indexed under another model version."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class ServerError(RingserveError):
    """The server failed on this item; its message says how."""

    code = grpc.StatusCode.INTERNAL


_BY_CODE = {cls.code: cls for cls in (InvalidArgument, Overloaded, Unavailable, DeadlineExceeded, NotFound,
                                      FailedPrecondition, ServerError)}


def from_status(code: grpc.StatusCode, message: str, request_id: str | None = None) -> RingserveError:
    """The typed error for a server's status: InvalidImage for a refused image, InvalidArgument for other
    INVALID_ARGUMENT answers, and so on; RingserveError with ``code`` set for a status without a type."""
    if code == grpc.StatusCode.INVALID_ARGUMENT and message.startswith(BAD_IMAGE):
        return InvalidImage(message, request_id)
    cls = _BY_CODE.get(code)
    if cls is None:
        error = RingserveError(message, request_id)
        error.code = code
        return error
    return cls(message, request_id)


def checked(check: Callable[..., None], *args: Any) -> None:
    """Run one of ``contract.arguments``' checks; its refusal becomes this client's ``InvalidArgument``."""
    try:
        check(*args)
    except arguments.InvalidArgument as exc:
        raise InvalidArgument(str(exc), argument=exc.argument) from None


# gRPC's asyncio core ends a call with this INTERNAL when the caller's write fails because the server
# has already ended the call (a draining node ends its streams while callers still write): the
# server's own status, UNAVAILABLE, is lost on the way.
_CORE_LOST_STATUS = "Internal error from Core"


def may_resend(exc: grpc.aio.AioRpcError) -> bool:
    """Whether a stream that failed with ``exc`` leaves its unanswered items free to be sent again.

    True for UNAVAILABLE, and for the INTERNAL that gRPC's core reports in place of the status of a
    call the server ended while the caller was still writing (grpc/grpc#36066): neither is a server's
    answer about the items.
    """
    code = exc.code()
    return code == grpc.StatusCode.UNAVAILABLE or (
        code == grpc.StatusCode.INTERNAL and exc.details() == _CORE_LOST_STATUS)
