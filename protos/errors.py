"""The errors raised inside ringserve's processes: one root, ``ServiceError``, and the caller's mistakes.

Every error a node, a router, the search service or the local harness raises on purpose is a
``ServiceError`` and carries the gRPC status it is answered with (``code``) and the message the caller
reads (``reason()``): ``contract.status.status_of`` is the one place that turns an exception into a
status. Among them, ``CallerError`` is the family that blames the request. Anything that is no
``ServiceError`` is the service's own failure and reaches the caller as INTERNAL: a ``ValueError`` from
numpy or a config is not the caller's fault, and must not tell them to change their request. (The
client's own errors, what a caller catches, are ``ringserve.client.errors``.)
"""

from __future__ import annotations

import grpc


class ServiceError(Exception):
    """Root of every error raised on purpose inside a ringserve process; ``code`` is its gRPC status."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def reason(self) -> str:
        """The message the caller reads in the item's status."""
        return str(self)


class DeadlineExceeded(ServiceError):
    """The item's own deadline (``ImageRequest.timeout_ms``, set by a router from its caller's) passed."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class CallerError(ServiceError):
    """The request cannot be served as sent; the message says what to change."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class InvalidRequest(CallerError):
    """A field is out of its range (``top_k``, the perceptual radius, ...)."""


class UnknownModel(CallerError):
    """The request named a model this node does not serve."""

    code = grpc.StatusCode.NOT_FOUND


class UnknownCollection(CallerError):
    """The request named a collection that holds no entries."""

    code = grpc.StatusCode.NOT_FOUND


class UnknownId(CallerError):
    """A search by id named an id the collection does not hold."""

    code = grpc.StatusCode.NOT_FOUND


class ModelMismatch(CallerError):
    """The collection holds features of another model version than the request's."""

    code = grpc.StatusCode.FAILED_PRECONDITION
