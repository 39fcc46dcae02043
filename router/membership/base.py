"""The seam every membership source fits: an async stream of full member lists.

A source yields the complete list whenever it may have changed (the router
diffs it), and keeps yielding until cancelled. Identity is the ``name``, never
the address: a restarted pod keeps its name and so its arc of the ring.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from ringserve.contract.errors import ServiceError


@dataclass(frozen=True, order=True)
class Member:
    name: str
    address: str
    weight: int = 1


class MembershipError(ServiceError, ValueError):
    """A membership spec or file that cannot be parsed; the message shows the expected form."""


class Source(Protocol):
    def watch(self) -> AsyncIterator[list[Member]]: ...


def parse_member(spec: str) -> Member:
    """``name=host:port``, ``name=host:port*weight`` or ``host:port`` (then the address is the name)."""
    spec = spec.strip()
    name, sep, rest = spec.partition("=")
    if not sep:
        name, rest = spec, spec
    address, _, weight = rest.partition("*")
    host, _, port = address.rpartition(":")
    if not name or not host or not port.isdigit():
        raise MembershipError(f"bad member {spec!r}: expected name=host:port or name=host:port*weight")
    try:
        w = int(weight) if weight else 1
    except ValueError:
        raise MembershipError(f"bad weight in {spec!r}: expected a whole number") from None
    if w < 1:
        raise MembershipError(f"bad weight in {spec!r}: must be at least 1")
    return Member(name=name, address=address, weight=w)


def parse_members(text: str) -> list[Member]:
    """Members separated by commas or new lines; '#' starts a comment."""
    out = []
    for line in text.replace(",", "\n").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(parse_member(line))
    names = [m.name for m in out]
    if len(names) != len(set(names)):
        raise MembershipError(f"duplicate member names in {names}")
    return sorted(out)
