"""Node processes forked from one process that has already imported them.

A node's imports cost about 10 s of CPU (torch 3.5 s, torchvision 4 s of which 3 s is torch._dynamo, which
torchvision.ops imports eagerly). A local cluster starts nodes again and again: a roll, a scale-out, every
integration test; on a 2-core machine those imports were most of the test suite's time. So, as gunicorn's
``--preload`` and multiprocessing's forkserver do, one server process imports the node once and forks a
child for each start: the child runs ``python -m MODULE ARGS`` as ``runpy`` would, with its own session, its
own environment, working directory and log file, and a parent-death signal, in under a second.

Fork-safe because the server only imports: no gRPC channel or server is made and no torch kernel run (its
thread pools start in the child, on its first batch). The server ends when the process that started it ends
(multiprocessing's forkserver watches a pipe to it), and each child is SIGKILLed when the server ends (its
parent-death signal), so nothing outlives the starter, as with ``processes.guarded``.

As with any multiprocessing start, each child imports the starter's main module first (as ``__mp_main__``):
a script that starts a ``LocalCluster`` keeps its work under ``if __name__ == "__main__":``.

Linux only; ``RINGSERVE_LOCAL_PRELOAD=0`` turns it off (each start then runs a fresh interpreter).
"""

from __future__ import annotations

import ctypes
import io
import multiprocessing
import multiprocessing.connection
import multiprocessing.util  # its exit hook is registered before the one in processes.py, which so runs first
import os
import runpy
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

# The programs a server imports ahead: what ``python -m`` would run, for the modules named here. The node only:
# a router imports no torch (1.7 s of imports), and forked from a server holding torch it would hold it too,
# hundreds of MB that a deployed router never has (bench/router_memory.py measures it).
PROGRAMS = ("ringserve.server.main",)
# Imported by the server before them: out of the starter's process group, deaf to its stop signals.
_SERVER_SETUP = "ringserve.local.detach"

ENABLED = sys.platform.startswith("linux") and os.environ.get("RINGSERVE_LOCAL_PRELOAD", "1") != "0"
"""Whether ``launch`` is used for PROGRAMS (read once, here)."""

_PR_SET_PDEATHSIG = 1


def program(argv: Sequence[str]) -> str | None:
    """The preloaded module ``argv`` runs (``[python, -m, MODULE, ...]``), or None when it runs something else."""
    if ENABLED and len(argv) >= 3 and argv[0] == sys.executable and argv[1] == "-m" and argv[2] in PROGRAMS:
        return argv[2]
    return None


class Launched:
    """A forked program, answering as much of ``subprocess.Popen`` as a starter uses."""

    def __init__(self, process: multiprocessing.process.BaseProcess, args: list[str]) -> None:
        self._process = process
        self.args = args
        # Two threads polling at once would both read the exit status from the server's pipe: the loser reads
        # EOF and multiprocessing records 255. One at a time, and multiprocessing's own sweep of its children
        # at each start (``_cleanup``) is kept off it (below, in launch).
        self._lock = threading.Lock()

    @property
    def pid(self) -> int:
        assert self._process.pid is not None
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        return self.poll()

    def poll(self) -> int | None:
        with self._lock:
            return self._process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        """The exit code (negative: the signal that ended it), once it has ended.

        Raises:
            subprocess.TimeoutExpired: still running after ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            multiprocessing.connection.wait([self._process.sentinel], None if left is None else min(left, 0.5))
        if code is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
        return code


def launch(module: str, args: Sequence[str], log_path: Path, cwd: Path, env: dict[str, str]) -> Launched:
    """Start ``python -m module *args`` as a fork of the preloading server; it runs in its own session.

    Returns once the child leads its own process group, so a signal to the group reaches it from the start.

    Raises:
        OSError: the server could not be started or could not fork.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([_SERVER_SETUP, *PROGRAMS])
    process = context.Process(target=_run, args=(module, list(args), str(log_path), str(cwd), env),
                              name=f"ringserve:{module}", daemon=True)
    try:
        process.start()
    except (EOFError, ConnectionError) as exc:
        raise OSError(f"the preloading server ended while starting {module} (its error is on this program's "
                      "stderr); set RINGSERVE_LOCAL_PRELOAD=0 to start a fresh interpreter instead") from exc
    multiprocessing.process._children.discard(process)  # reaped through Launched alone (see its lock)
    launched = Launched(process, [sys.executable, "-m", module, *args])
    while launched.poll() is None:  # until its setsid(): killpg() before it would miss the child
        try:
            if os.getpgid(launched.pid) == launched.pid:
                break
        except ProcessLookupError:
            break
        time.sleep(0.002)
    return launched


def _run(module: str, args: list[str], log_path: str, cwd: str, env: dict[str, str]) -> None:
    """In the child: become ``python -m module *args`` with its own session, log, directory and environment."""
    # The server's ignored stop signals (``detach``) are the first thing undone: once launch() has returned, a
    # stop must reach the program. SIGINT as a fresh interpreter has it.
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)  # so that whatever fails is in it
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    os.close(null)
    # Unbuffered text streams over the log, as PYTHONUNBUFFERED gives a fresh interpreter.
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), write_through=True, line_buffering=True)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), write_through=True, line_buffering=True,
                                  errors="backslashreplace")
    server = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise SystemExit(f"ringserve: prctl(PR_SET_PDEATHSIG) failed: {os.strerror(ctypes.get_errno())}")
    if os.getppid() != server:  # the server ended before the prctl: the signal will never come
        raise SystemExit(f"ringserve: the preloading server is gone; not starting {module}")
    # multiprocessing hands every child the write ends of the server's and its resource tracker's liveness
    # pipes, so that they live as long as any child: ours must end with the starter instead (then the
    # server's end SIGKILLs this child). A program started as a fresh interpreter would not hold them either.
    # Closed after the prctl, so the server cannot end unnoticed in between.
    from multiprocessing import forkserver, resource_tracker

    for owner, attribute in ((forkserver._forkserver, "_forkserver_alive_fd"),
                             (resource_tracker._resource_tracker, "_fd")):
        fd = getattr(owner, attribute, None)
        if fd is not None:
            os.close(fd)
            setattr(owner, attribute, None)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    torch = sys.modules.get("torch")  # read OMP_NUM_THREADS at its import, in the server: the child's value here
    if torch is not None and env.get("OMP_NUM_THREADS", "").isdigit() and int(env["OMP_NUM_THREADS"]) > 0:
        torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
    sys.argv = [module, *args]
    sys.path.insert(0, cwd)  # as ``python -m`` puts the working directory first
    sys.modules.pop(module, None)  # run afresh as __main__, as ``python -m`` does (and without runpy's warning)
    os.setsid()  # last: launch() returns once this is done
    import atexit

    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    finally:
        atexit._run_exitfuncs()  # multiprocessing ends the child with os._exit, which runs none
