"""What every results file says about itself: the command, the commit, the machine and the versions."""

from __future__ import annotations

import decimal
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import metadata

PACKAGES = ("torch", "torchvision", "grpcio", "protobuf", "pillow", "numpy", "redis", "ray", "nvidia-pytriton")


def provenance(argv: list[str] | None = None, module: str | None = None) -> dict:
    """The command that ran (``python -m module argv...``), the commit, the machine and package versions."""
    args = sys.argv[1:] if argv is None else argv
    command = f"python -m {module} {shlex.join(args)}".strip() if module else shlex.join(sys.argv)
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {
        "command": command,
        "commit": commit(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{os.cpu_count()}-core {platform.machine()} ({platform.processor() or 'cpu'}), "
                   f"{platform.system()} {platform.release()}, Python {platform.python_version()}",
        "versions": versions,
    }


def commit() -> str:
    """The commit the code ran at, "-dirty" when code (anything outside bench/results) differs from it."""
    here = os.path.dirname(__file__)

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=here).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    changed = git("status", "--porcelain", "--", ":/", ":(exclude,top)bench/results")
    return f"{head}-dirty" if changed else head


def header(meta: dict) -> str:
    """The lines a results page opens with: how to reproduce it, and on what it ran."""
    versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
    return (f"`{meta['command']}` at commit {meta['commit']}, {meta['date']}.\n\n"
            f"Machine: {meta['machine']}. Versions: {versions}.\n")


def progress_printer() -> Callable[[str], None]:
    """A function that prints a line with the seconds since it was made: how a long run shows where it is."""
    started = time.perf_counter()

    def progress(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f}s] {message}", flush=True)

    return progress


def spread(values: list[float], digits: int = 2) -> dict:
    """Median, min and max of repeated runs (the results report all three), to ``digits`` decimals."""
    return {"median": round(statistics.median(values), digits), "min": round(min(values), digits),
            "max": round(max(values), digits), "runs": [round(v, digits) for v in values]}


def cell(s: dict, unit: str = "") -> str:
    """``median (min-max)`` for a table cell."""
    return f"{s['median']:g}{unit} ({s['min']:g}-{s['max']:g})"


def ratio(value: float, digits: int = 2, higher_is_better: bool = True) -> str:
    """A ratio printed so that it never rounds across a target: cut toward the side that does not flatter.

    A measure that should reach a target from below (a speed-up, "at least 3x") is cut down (2.996 -> "2.99",
    never "3.00"); one that should stay under a target (a cost, "at most 0.5x") is cut up (0.5004 -> "0.51").
    The value is read as it prints (its shortest repr), so 0.123 is 0.123, not 0.12300000000000001.
    """
    if not math.isfinite(value):
        return str(value)
    mode = decimal.ROUND_FLOOR if higher_is_better else decimal.ROUND_CEILING
    return str(decimal.Decimal(repr(float(value))).quantize(decimal.Decimal(1).scaleb(-digits), rounding=mode))
