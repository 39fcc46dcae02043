"""The ranges of a request's arguments: one definition for the client, which checks before it calls, and the
server, which enforces them whatever the caller checked.

Each check raises ``InvalidArgument`` naming the argument and what it may be.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ringserve.contract.errors import InvalidRequest

COLLECTION = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
MAX_ID_BYTES = 512
# Near-duplicate search: at most this many differing bits of the 64-bit pHash.
MAX_DISTANCE = 16
# Perceptual reuse in the cache: the largest radius any node allows (its multi-index lookups grow with it;
# a node's own --cache-max-radius may be lower, and the node says so).
MAX_RADIUS = 11
# The wire's uint32 fields hold no more than this.
_UINT32 = 2**32 - 1


class InvalidArgument(InvalidRequest):
    """An argument outside its range; ``argument`` names it, the message says what it may be."""

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(message)
        self.argument = argument


def check_collection(collection: str) -> None:
    if not isinstance(collection, str) or not COLLECTION.match(collection):
        raise InvalidArgument("collection", f"collection name {collection!r} must be 1 to 128 characters of "
                                            "[A-Za-z0-9_.-]")


def check_id(item_id: str) -> None:
    size = len(item_id.encode()) if isinstance(item_id, str) else -1
    if not 1 <= size <= MAX_ID_BYTES:
        raise InvalidArgument("id", f"an id must be a string of 1 to {MAX_ID_BYTES} bytes of UTF-8; got {item_id!r:.80}")


def check_count(argument: str, value: object, lowest: int, highest: int | None = None, unit: str = "") -> None:
    """``value`` must be an int from ``lowest`` to ``highest`` (None: what the wire's uint32 holds)."""
    top = _UINT32 if highest is None else highest
    if isinstance(value, bool) or not isinstance(value, int) or not lowest <= value <= top:
        allowed = f"of {lowest}{unit} or more" if highest is None else f"from {lowest} to {highest}{unit}"
        raise InvalidArgument(argument, f"{argument} must be an integer {allowed}; got {value!r}")


def check_k(k: int, highest: int | None = None) -> None:
    """Nearest entries asked for: 0 (none, only near-duplicates) or more."""
    check_count("k", k, 0, highest)


def check_max_distance(max_distance: int) -> None:
    check_count("max_distance", max_distance, 0, MAX_DISTANCE, " bits")


def check_search(collection: str, k: int, max_distance: int | None, item_id: str | None = None) -> None:
    """A search asks for the ``k`` nearest entries, for near-duplicates within ``max_distance``, or both."""
    check_collection(collection)
    check_k(k)
    if item_id is not None:
        check_id(item_id)
    if max_distance is not None:
        check_max_distance(max_distance)
    elif k == 0:
        raise InvalidArgument("k", "ask for something: k > 0 (nearest entries), max_distance (near-duplicates), or both")


def check_delete(collection: str, ids: Sequence[str], everything: bool) -> None:
    """A delete names ids, or the whole collection, not both."""
    check_collection(collection)
    if everything and ids:
        raise InvalidArgument("ids", "give ids or the whole collection (all), not both")
    for item_id in ids:
        check_id(item_id)


def check_radius(radius: int) -> None:
    check_count("radius", radius, 0, MAX_RADIUS, " bits")
