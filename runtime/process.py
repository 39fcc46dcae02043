"""What every ringserve process does the same way: logging, memory given back, and a stop on signal.

(Flags and their environment variables are ``contract.flags``', made from each component's config dataclasses.)
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import signal
import threading
from collections.abc import Awaitable, Callable, Hashable

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


# In a process that sets it (the router), allocations of at least this many bytes get pages of their own,
# given back to the system when freed.
MMAP_THRESHOLD_BYTES = 4 * 1024 * 1024
TRIM_EVERY_S = 5.0
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter numbers (malloc.h)


def return_large_allocations(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Make glibc hand every allocation of ``threshold`` bytes or more back to the system when freed.

    glibc raises its mmap threshold to the size of each large block freed (up to 32 MB), after which
    such blocks come from the heap and arenas, whose freed pages a long-lived process keeps: a router
    that decoded a few large PNGs stayed at 5x its idle RSS. A fixed threshold keeps them separate
    pages. For a process whose large buffers are short-lived and rare (the router's images); not for
    one that runs a model, whose activations would then be mapped and faulted in afresh on every batch
    (mobilenet_v3_small on the CPU with a 1 MB threshold: 35 -> 60 ms a batch of 8). Returns False
    where the C library is not glibc (nothing is changed there).
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold))


def trim_when_quiet(activity: Callable[[], Hashable | None], every_s: float = TRIM_EVERY_S,
                    trim: Callable[[int], int] | None = None,
                    stop: threading.Event | None = None) -> threading.Thread | None:
    """Give back to the system the pages that a burst's allocations left free inside the heap, when quiet.

    What a burst leaves in blocks under the mmap threshold stays mapped until glibc's ``malloc_trim``,
    which holds the allocator's locks while it walks the heap (4 to 50 ms here on a fragmented 500 MB
    heap). So it runs only when ``activity()`` (a count of work started, or None while work is in
    flight) read the same at two checks ``every_s`` apart: never under load.

    Args:
        trim: what trims (glibc's ``malloc_trim`` unless given); ``stop``: ends the thread when set.

    Returns:
        The daemon thread that does it, or None where the C library has no ``malloc_trim``.
    """
    if trim is None:
        try:
            trim = ctypes.CDLL(None).malloc_trim
        except (OSError, AttributeError):
            return None
    thread = threading.Thread(target=_trim_loop, args=(activity, every_s, trim, stop or threading.Event()),
                              name="malloc-trim", daemon=True)
    thread.start()
    return thread


def _trim_loop(activity: Callable[[], Hashable | None], every_s: float, trim: Callable[[int], int],
               stop: threading.Event) -> None:
    last: Hashable | None = None
    while not stop.wait(every_s):
        now = activity()
        if now is not None and now == last:
            trim(0)
        last = now


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
