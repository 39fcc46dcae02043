"""Typed failures inside a node; the servicer maps each to one gRPC status at the edge.

The caller's own mistakes are ``ringserve.contract.errors.CallerError``s; these are the node's
conditions (a tier that misses or is down, a full queue, a drain).
"""

from __future__ import annotations


class CacheMiss(LookupError):
    """The tier answered and does not hold the key."""


class CorruptValue(CacheMiss):
    """The tier held bytes that failed to decode or check: treated as a miss, and logged."""


class CacheUnavailable(RuntimeError):
    """The tier could not answer (down, slow, or its circuit is open): go on without it."""


class Overloaded(RuntimeError):
    """A bounded queue is full: the caller should back off or try another node."""


class Draining(RuntimeError):
    """The node is shutting down and takes no new work."""
