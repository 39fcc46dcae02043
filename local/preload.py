"""Node and router processes forked from one process that has already imported them.

A node's imports cost about 10 s of CPU (torch 3.5 s, torchvision 4 s of which 3 s is torch._dynamo, which
torchvision.ops imports eagerly). A local cluster starts nodes again and again: a roll, a scale-out, every
integration test; on a 2-core machine those imports were most of the test suite's time. So, as gunicorn's
``--preload`` and multiprocessing's forkserver do, one server process imports the programs once and forks a
child for each start: the child runs ``python -m MODULE ARGS`` as ``runpy`` would, with its own session, its
own environment, working directory and log file, and a parent-death signal, in under a second.

Fork-safe because the server only imports: no thread is started, no gRPC channel or server made, no torch
kernel run (its thread pools start in the child, on its first batch). The server ends when the process that
started it ends (multiprocessing's forkserver watches a pipe to it), and each child is SIGKILLed when the
server ends (its parent-death signal), so nothing outlives the starter, as with ``processes.guarded``.

Linux only; ``RINGSERVE_LOCAL_PRELOAD=0`` turns it off (each start then runs a fresh interpreter).
"""

from __future__ import annotations

import ctypes
import io
import multiprocessing
import multiprocessing.util  # its exit hook is registered before the one in processes.py, which so runs first
import os
import runpy
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

# The programs a server imports ahead: what ``python -m`` would run, for the modules named here.
PROGRAMS = ("ringserve.server.main", "ringserve.router.main")
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

    @property
    def pid(self) -> int:
        assert self._process.pid is not None
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.exitcode

    def poll(self) -> int | None:
        return self._process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        """The exit code (negative: the signal that ended it), once it has ended.

        Raises:
            subprocess.TimeoutExpired: still running after ``timeout`` seconds.
        """
        self._process.join(timeout)
        code = self._process.exitcode
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
    process.start()
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
    os.setsid()
    # multiprocessing hands every child the write ends of the server's and its resource tracker's liveness
    # pipes, so that they live as long as any child: ours must end with the starter instead (then the
    # server's end SIGKILLs this child). A program started as a fresh interpreter would not hold them either.
    from multiprocessing import forkserver, resource_tracker

    for owner, attribute in ((forkserver._forkserver, "_forkserver_alive_fd"),
                             (resource_tracker._resource_tracker, "_fd")):
        fd = getattr(owner, attribute, None)
        if fd is not None:
            os.close(fd)
            setattr(owner, attribute, None)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise SystemExit(f"ringserve: prctl(PR_SET_PDEATHSIG) failed: {os.strerror(ctypes.get_errno())}")
    if os.getppid() == 1:  # the server is already gone: the signal will never come
        raise SystemExit(f"ringserve: the preloading server is gone; not starting {module}")
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
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
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as a fresh interpreter has it
    sys.argv = [module, *args]
    sys.path.insert(0, cwd)  # as ``python -m`` puts the working directory first
    import atexit

    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    finally:
        atexit._run_exitfuncs()  # multiprocessing ends the child with os._exit, which runs none
