"""Typed conditions inside a node, under the project's one root; each carries the status it is answered with.

The caller's own mistakes are ``ringserve.contract.errors.CallerError``s; these are the node's
conditions: a tier that misses or is down, a full queue. Anything else is a bug, answered INTERNAL.
"""

from __future__ import annotations

import grpc

from ringserve.contract.errors import ServiceError


class NodeError(ServiceError):
    """Root of the node's own conditions."""


class CacheMiss(NodeError):
    """The tier answered and does not hold the key."""


class CorruptValue(CacheMiss):
    """The tier held bytes that failed to decode or check: treated as a miss, and logged."""


class CacheUnavailable(NodeError):
    """The tier could not answer (down, slow, or its circuit is open): go on without it."""


class Overloaded(NodeError):
    """A bounded queue is full: the caller should back off or try another node (RESOURCE_EXHAUSTED)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
