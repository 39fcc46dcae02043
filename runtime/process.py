"""What every ringserve process does the same way: flags with environment fallbacks, and a stop on signal.

Node and router each fill their own config dataclasses from these flags in one
place; this only supplies the mechanics they share.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import logging
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Mapping

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def env_defaults(parser: argparse.ArgumentParser, environ: Mapping[str, str], prefix: str) -> None:
    """Let ``<prefix><FLAG>`` in the environment set each flag's default; a flag given on the command line wins."""
    for action in parser._actions:
        if not action.option_strings or action.dest == "help":
            continue
        value = environ.get(prefix + action.dest.upper())
        if value is None:
            continue
        if isinstance(action, argparse._AppendAction):
            action.default = [v for v in value.split(",") if v]
        else:
            action.default = action.type(value) if action.type else value


# Allocations of at least this many bytes get pages of their own, given back to the system when freed.
MMAP_THRESHOLD_BYTES = 1024 * 1024
TRIM_EVERY_S = 5.0
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter numbers (malloc.h)


def return_large_allocations() -> bool:
    """Make glibc hand every large allocation (an image's bytes, its pixels) back to the system when freed.

    glibc raises its mmap threshold to the size of each large block freed (up to 32 MB), after which
    such blocks come from the heap and arenas, whose freed pages a long-lived server keeps: a router
    that decoded a few large PNGs stayed at 5x its idle RSS. A fixed threshold keeps them separate
    pages. Returns False where the C library is not glibc (nothing is changed there).
    """
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def trim_when_idle(idle: Callable[[], bool], every_s: float = TRIM_EVERY_S) -> bool:
    """Give back to the system the pages that a burst's smaller allocations left free inside the heap.

    The threshold above covers large blocks; what is left in smaller ones stays mapped until glibc's
    ``malloc_trim``, which holds the allocator's locks while it walks the heap (4 to 50 ms here on a
    fragmented 500 MB heap). So it runs only after ``idle()`` said True at two checks ``every_s`` apart,
    never under load. Returns False where the C library has no ``malloc_trim``.
    """
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return False

    def run() -> None:
        was_idle = False
        while True:
            time.sleep(every_s)
            now_idle = idle()
            if now_idle and was_idle:
                trim(0)
            was_idle = now_idle

    threading.Thread(target=run, name="malloc-trim", daemon=True).start()
    return True


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT)


async def run_until_signal(start: Callable[[], Awaitable[object]], stop: Callable[[], Awaitable[None]]) -> None:
    """Start, wait for SIGTERM or SIGINT, then stop (drain) gracefully."""
    await start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    await stop()
