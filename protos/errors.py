"""Caller mistakes: the one family of errors that blames the request, each with its status.

A node or router answers a ``CallerError`` with its ``code`` and message. Anything
else raised while serving an item is the service's own failure and reaches the
caller as INTERNAL: a ``ValueError`` from numpy or a config is not the caller's
fault, and must not tell them to change their request.
"""

from __future__ import annotations

import grpc


class CallerError(Exception):
    """The request cannot be served as sent; the message says what to change."""

    code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT

    def reason(self) -> str:
        """The message the caller reads in the item's status."""
        return str(self)


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
