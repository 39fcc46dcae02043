"""Members from a file, re-read when it changes (a mounted ConfigMap, a file edited by hand).

Polls the file's content rather than watching inotify events: ConfigMap
updates swap a symlink, which event watchers miss, and a poll every second
costs nothing. A file that fails to parse keeps the last good list, loudly.
Whoever writes the file writes it whole and renames it into place: a poll
may otherwise read it half written, and an empty list empties the ring.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from ringserve.router.membership.base import Member, MembershipError, parse_members

log = logging.getLogger(__name__)


class FileSource:
    def __init__(self, path: Path, interval_s: float = 1.0) -> None:
        self.path = path
        self.interval_s = interval_s

    def read(self) -> list[Member]:
        try:
            return parse_members(self.path.read_text())
        except OSError as exc:
            raise MembershipError(f"cannot read members file {self.path}: {exc}") from exc

    async def watch(self) -> AsyncIterator[list[Member]]:
        last: bytes | None = None
        while True:
            try:
                raw = self.path.read_bytes()
            except OSError as exc:
                log.warning("members file %s unreadable (%s); keeping the last list", self.path, exc)
                raw = last
            if raw is not None and raw != last:
                try:
                    members = parse_members(raw.decode())
                    last = raw
                    yield members
                except (MembershipError, UnicodeDecodeError) as exc:
                    log.error("members file %s is invalid, keeping the last list: %s", self.path, exc)
                    last = raw
            await asyncio.sleep(self.interval_s)
