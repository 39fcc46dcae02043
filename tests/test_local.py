"""The local harness itself: whatever happens to a test, the processes it started do not outlive it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ringserve.local.cluster import LocalCluster
from ringserve.local.processes import _Child


class Sleeper(_Child):
    """A stand-in child that only waits: what a stop must reach is the process, not what it serves."""

    def __init__(self, workdir: Path, name: str) -> None:
        self.name = name
        super().__init__(workdir)

    def start(self) -> Sleeper:
        self._spawn([sys.executable, "-c", "import time; time.sleep(120)"])
        return self


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) is not alive
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(") ", 1)[1][0] != "Z"


def test_a_cluster_stop_interrupted_half_way_kills_what_it_had_not_stopped(tmp_path):
    cluster = LocalCluster(tmp_path)
    cluster.router = Sleeper(tmp_path, "router").start()
    cluster.nodes = {name: Sleeper(tmp_path, name).start() for name in ("node-0", "node-1")}

    def interrupted(timeout_s: float) -> int:
        raise KeyboardInterrupt("the test's time limit, in the middle of stop()")

    cluster.router.stop = interrupted
    with pytest.raises(KeyboardInterrupt):
        cluster.stop()
    assert not any(child.running for child in [cluster.router, *cluster.nodes.values()])


def test_children_left_running_are_killed_when_the_process_that_started_them_exits(tmp_path):
    script = (
        "import sys; from pathlib import Path; from tests.test_local import Sleeper\n"
        f"child = Sleeper(Path({str(tmp_path)!r}), 'left').start()\n"
        "print(child.pid, flush=True)\n"
        "sys.exit(0)  # no stop(): as a crash in a test, or an interrupted stop, would leave it\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0, out.stderr
    pid = int(out.stdout.split()[0])
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid), f"child {pid} outlived the process that started it"
