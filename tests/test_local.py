"""The local harness itself: whatever happens to a test, the processes it started do not outlive it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from multiprocessing import forkserver, resource_tracker
from pathlib import Path

import pytest

from ringserve.local import preload
from ringserve.local.cluster import LocalCluster
from ringserve.local.processes import PARENT_DEATH_SIGNAL, STOP_SIGNALS, NodeProcess, _Child, guarded
from tests.conftest import SMALL_MODEL


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


ROOT = Path(__file__).resolve().parent.parent
linux_only = pytest.mark.skipif(not PARENT_DEATH_SIGNAL, reason="a parent-death signal is Linux only (prctl)")


def wait_gone(pid: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive(pid)


def sigkill_pending(pid: int) -> bool:
    """SIGKILL sent but not yet acted on (a busy machine may not have run the process since)."""
    with open(f"/proc/{pid}/status") as status:
        masks = [int(line.split()[1], 16) for line in status if line.startswith(("SigPnd:", "ShdPnd:"))]
    return any(mask & (1 << (signal.SIGKILL - 1)) for mask in masks)


@linux_only
def test_a_child_dies_with_its_starter_even_when_the_starter_is_sigkilled(tmp_path):
    """SIGKILL runs no exit hook and no handler: only the kernel's parent-death signal can stop the child. The child
    is started from a thread that then ends, as a test restarting a node beside its callers does, and must live on
    until the process itself dies (the signal is tied to the forking thread, hence the one spawner thread)."""
    script = (
        "import os, signal, sys, threading, time\n"
        "from pathlib import Path\n"
        "from tests.test_local import Sleeper\n"
        "made = {}\n"
        "def start():\n"
        f"    child = made['child'] = Sleeper(Path({str(tmp_path)!r}), 'orphan').start()\n"
        "    made['tid'] = threading.get_native_id()\n"
        "    deadline = time.monotonic() + 10\n"
        "    while (open(f'/proc/{child.pid}/cmdline', 'rb').read().split(b'\\0')[1:2] != [b'-c']\n"
        "           and time.monotonic() < deadline):\n"
        "        time.sleep(0.01)  # until it runs the sleeper itself, past the guard: the prctl is done, tied to this thread\n"
        "t = threading.Thread(target=start)\n"
        "t.start(); t.join()\n"
        "deadline = time.monotonic() + 10\n"
        "while os.path.exists(f'/proc/self/task/{made[\"tid\"]}') and time.monotonic() < deadline:\n"
        "    time.sleep(0.01)  # join() returns before the OS thread is gone; wait for the thread itself\n"
        "print(made['child'].pid, flush=True)\n"
        "sys.stdin.readline()\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    starter = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, cwd=ROOT)
    pid = None
    try:
        line = starter.stdout.readline()
        assert line.strip().isdigit(), (line, starter.stderr.read() if starter.poll() is not None else "")
        pid = int(line)
        # The thread is gone, so a parent-death signal tied to it has been sent: the child is dead or it is pending.
        assert alive(pid) and not sigkill_pending(pid), "the child dies with the thread that started it"
        starter.stdin.write("\n")
        starter.stdin.flush()
        assert starter.wait(30) == -signal.SIGKILL
        assert wait_gone(pid), f"child {pid} outlived its SIGKILLed starter"
    finally:
        if starter.poll() is None:
            starter.kill()
            starter.wait(10)
        if pid is not None and alive(pid):
            os.kill(pid, signal.SIGKILL)


@linux_only
def test_the_orphan_guard_starts_nothing_once_its_starter_is_gone(tmp_path):
    """The starter can die between the fork and the prctl, before there is a parent-death signal to fire: the guard
    sees its parent is no longer the process that started it and exits without running the program."""
    marker = tmp_path / "ran"
    program = [sys.executable, "-c", f"open({str(marker)!r}, 'w')"]
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that is not our child's parent any more
    out = subprocess.run(guarded(program, parent=gone.pid), capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and not marker.exists(), out
    assert "is gone" in out.stderr, out.stderr
    out = subprocess.run(guarded(program), capture_output=True, text=True, timeout=60)  # its parent: us
    assert out.returncode == 0 and marker.exists(), out


def test_a_cluster_takes_no_signal_handler_unless_asked(tmp_path):
    before = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    LocalCluster(tmp_path).stop()
    with LocalCluster(tmp_path / "asked", handle_signals=True):
        assert all(signal.getsignal(sig) != before[sig] for sig in STOP_SIGNALS)
    assert {sig: signal.getsignal(sig) for sig in STOP_SIGNALS} == before


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=lambda s: s.name)
def test_a_cluster_asked_to_handle_signals_stops_its_children_on_one(sig, tmp_path):
    """A main program's ``with LocalCluster(..., handle_signals=True)``: the signal unwinds the block, which stops
    every child; the program exits 128 + the signal's number, as a shell expects."""
    script = (
        "import time; from pathlib import Path\n"
        "from ringserve.local.cluster import LocalCluster\n"
        "from tests.test_local import Sleeper\n"
        f"root = Path({str(tmp_path)!r})\n"
        "with LocalCluster(root, handle_signals=True) as cluster:\n"
        "    cluster.router = Sleeper(root, 'router').start()\n"
        "    cluster.nodes = {n: Sleeper(root, n).start() for n in ('node-0', 'node-1')}\n"
        "    print(cluster.router.pid, *(n.pid for n in cluster.nodes.values()), flush=True)\n"
        "    time.sleep(120)\n"
    )
    starter = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, cwd=ROOT)
    pids: list[int] = []
    try:
        line = starter.stdout.readline()
        pids = [int(p) for p in line.split()]
        assert len(pids) == 3, (line, starter.stderr.read() if starter.poll() is not None else "")
        starter.send_signal(sig)
        assert starter.wait(30) == 128 + sig, starter.stderr.read()
        assert all(wait_gone(pid) for pid in pids), [pid for pid in pids if alive(pid)]
    finally:
        if starter.poll() is None:
            starter.kill()
            starter.wait(10)
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def _open_files(pid: int) -> set[str]:
    """What each of ``pid``'s file descriptors points at; one it closes while they are read is left out (a running
    server opens and closes sockets and files all the time: CI once found fd 17 gone between listing and reading)."""
    held = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(FileNotFoundError):
            held.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return held


@pytest.mark.skipif(not preload.ENABLED, reason="preloading is Linux only, and RINGSERVE_LOCAL_PRELOAD=0 turns it off")
def test_a_node_is_forked_from_the_preloading_server_into_its_own_session_directory_and_log(tmp_path):
    node = NodeProcess(tmp_path / "n", "solo", args=SMALL_MODEL).start()
    try:
        pid = node.pid
        parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        assert b"multiprocessing.forkserver" in Path(f"/proc/{parent}/cmdline").read_bytes()  # not a fresh python
        assert os.getsid(pid) == pid and os.getpgid(pid) == pid  # a stop to its group reaches it and nothing else
        assert Path(f"/proc/{pid}/cwd").resolve() == (tmp_path / "n").resolve()
        # The liveness pipes multiprocessing hands its children are closed: the server ends with its starter.
        liveness = {os.readlink(f"/proc/self/fd/{fd}") for fd in (forkserver._forkserver._forkserver_alive_fd,
                                                                  resource_tracker._resource_tracker._fd)}
        held = _open_files(pid)
        assert len(liveness) == 2 and all(p.startswith("pipe:") for p in liveness) and not liveness & held, held
        assert node.stop(30) == 0
        assert "node solo serving" in node.log_path.read_text() and "stopped" in node.log_path.read_text()
    finally:
        node.kill()
