"""What every process does the same way: here, giving memory back to the system (runtime/process.py)."""

from __future__ import annotations

import sys
import threading

import pytest

from ringserve.runtime import process


def trims_for(readings: list) -> list[int]:
    """The trims a quiet-watcher makes over ``readings`` of activity, one reading per check."""
    trims: list[int] = []
    stop = threading.Event()
    values = iter(readings)

    def reading():
        value = next(values, "done")
        if value == "done":
            stop.set()
            return None
        return value

    thread = process.trim_when_quiet(reading, every_s=0.001, trim=lambda pad: trims.append(pad) or 1, stop=stop)
    assert thread is not None
    thread.join(10)
    assert not thread.is_alive()
    return trims


def test_the_heap_is_trimmed_only_after_a_whole_quiet_period():
    # busy, busy, new work, new work, quiet (3 then 3), busy, new work, quiet, quiet
    assert trims_for([None, None, 1, 2, 3, 3, None, 4, 4, 4]) == [0, 0, 0]


def test_a_busy_process_is_never_trimmed():
    assert trims_for([None] * 20) == []  # items in flight at every check
    assert trims_for(list(range(20))) == []  # new work at every check


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_the_mmap_threshold_is_set_on_glibc():
    assert process.return_large_allocations(process.MMAP_THRESHOLD_BYTES)
