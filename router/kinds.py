"""What the router can tell about an item before its answer, which decides how long its answer may take.

Whether an item will hit is known only afterwards (the reply's provenance source). Before, the router
knows the method, whether the item carries its image or only its digest (a digest-only item never runs
the model: a cache hit or "send the image", both fast), and whether a key like it was answered lately
(``RecentKeys``): such an image most likely hits on the node that answered it, a new one most likely
runs the model. So a ``Kind`` names the answer sources an item of it is expected from; its per-try
bound is the slowest of their quantiles (``latency.py``). A guess that turns out wrong costs one hedge
at most, within the hedge budget.
"""

from __future__ import annotations

from dataclasses import dataclass

from ringserve.contract.v1 import inference_pb2 as pb

CACHED = (pb.SOURCE_L1, pb.SOURCE_L2)


@dataclass(frozen=True)
class Kind:
    rpc: str  # "Extract" or "Classify"
    image: bool  # the item carries its image (else its digest alone)
    # Where its answer is expected from; a miss (SOURCE_COMPUTED), when expected, is last.
    sources: tuple[int, ...]

    @property
    def may_compute(self) -> bool:
        return self.sources[-1] == pb.SOURCE_COMPUTED


def kind_of(rpc: str, image: bool, repeat: bool) -> Kind:
    """The kind of an item of ``rpc``, with its image or not, whose key was answered lately or not."""
    return _KINDS[rpc, image, repeat]


def _make(rpc: str, image: bool, repeat: bool) -> Kind:
    if not image:  # a hit, or "send the image" (which carries no source)
        return Kind(rpc, False, (*CACHED, pb.SOURCE_UNSPECIFIED))
    return Kind(rpc, True, CACHED if repeat else (*CACHED, pb.SOURCE_COMPUTED))


_KINDS = {(rpc, image, repeat): _make(rpc, image, repeat)
          for rpc in ("Extract", "Classify") for image in (True, False) for repeat in (True, False)}


class RecentKeys:
    """Placement keys answered lately, at most about ``2 * size`` of them: two generations of a set, the older
    dropped whenever the newer fills (a cheap LRU; a key seen again moves to the newer)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._new: set[int] = set()
        self._old: set[int] = set()

    def __contains__(self, key: int) -> bool:
        return key in self._new or key in self._old

    def add(self, key: int) -> None:
        if key in self._new:
            return
        if len(self._new) >= self.size:
            self._old, self._new = self._new, set()
        self._new.add(key)
