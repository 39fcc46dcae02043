"""A fixed member list from flags: yields it once, then nothing changes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from ringserve.router.membership.base import Member


class StaticSource:
    def __init__(self, members: Sequence[Member]) -> None:
        self.members = sorted(members)

    async def watch(self) -> AsyncIterator[list[Member]]:
        yield list(self.members)
        await asyncio.Event().wait()  # never changes
