"""A whole ringserve cluster on this machine, operated the way Kubernetes operates one.

Nodes are named like StatefulSet pods (``node-0``, ``node-1``, ...); the router
follows a members file, the local stand-in for the headless Service's ready
endpoints. ``restart`` and ``roll`` do what a StatefulSet rolling update does
(SIGTERM, the endpoint leaves, drain, exit, a new process with the same name at
a new address); ``scale`` adds or removes the highest ordinals. Used by
``ringserve-up`` and the integration tests.

Nothing it starts outlives it: ``stop()`` (or leaving ``with LocalCluster(...)``)
drains and then kills, the exit hook in ``processes`` kills what a crash left, and
on Linux the children die with the process even when it is SIGKILLed. Stop
signals are the program's to take, so it installs handlers only when asked
(``handle_signals=True``, for a main program; ``ringserve-up`` installs its own).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ringserve.contract.tls import ClientTls
from ringserve.contract.v1 import cluster_pb2 as cpb
from ringserve.contract.v1 import cluster_pb2_grpc as cpb_grpc
from ringserve.local.processes import NodeProcess, RedisProcess, RouterProcess, stop_on_signals

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocalTls:
    """Mutual TLS on every hop of a local cluster: one CA, and one certificate (serverAuth and clientAuth) that
    every node and the router serve with and the router and this harness call with."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    def server_args(self) -> list[str]:
        """A node's flags: serve with the certificate, accept only callers with one from the CA."""
        return ["--tls-cert-file", str(self.cert_file), "--tls-key-file", str(self.key_file),
                "--tls-client-ca-file", str(self.ca_file), "--tls-require-client-cert"]

    def router_args(self) -> list[str]:
        """The router's flags: serve as a node does, and reach the nodes with the same certificate."""
        return [*self.server_args(), *self.link_args()]

    def link_args(self) -> list[str]:
        """A router's flags to reach the nodes (links, health checks) with the certificate, whatever its own port."""
        return ["--node-tls-ca-file", str(self.ca_file), "--node-tls-cert-file", str(self.cert_file),
                "--node-tls-key-file", str(self.key_file)]

    def client(self) -> ClientTls:
        """How this harness (and a test's client) reaches any of them."""
        return ClientTls(ca_file=self.ca_file, cert_file=self.cert_file, key_file=self.key_file)


class LocalCluster:
    """Redis (optional), nodes and a router on this machine; ``with`` it, or call ``stop()``.

    ``handle_signals``: from construction until ``stop()`` ends, SIGTERM, SIGHUP and SIGINT raise
    ``processes.Stopped`` (a ``SystemExit`` with status 128 + the signal) in the main thread, so the
    ``with`` block or the caller's ``finally`` stops the cluster and an uncaught one exits as a shell
    expects (see ``processes.stop_on_signals``). Off by default: tests and benchmarks keep their own.

    ``tls``: mutual TLS on every hop (nodes, router, the router's links and health checks, this harness's own
    calls); None, plaintext.
    """

    def __init__(self, workdir: Path, redis_url: str | None = None, node_args: Sequence[str] = (),
                 router_args: Sequence[str] = (), embedded_redis: bool = False, handle_signals: bool = False,
                 tls: LocalTls | None = None) -> None:
        self._signals = contextlib.ExitStack()
        if handle_signals:
            self._signals.enter_context(stop_on_signals())
        self.workdir = workdir
        self.tls = tls
        self.client_tls = tls.client() if tls is not None else None
        self.redis: RedisProcess | None = None
        self.redis_url = redis_url
        self.node_args = list(node_args)
        self.router_args = list(router_args)
        self.nodes: dict[str, NodeProcess] = {}
        self.members_file = workdir / "members"
        self.router: RouterProcess | None = None
        self.on_event: Callable[[str], None] = lambda message: log.info("%s", message)
        try:
            workdir.mkdir(parents=True, exist_ok=True)
            self.members_file.write_text("")
            if embedded_redis and redis_url is None:
                self.redis = RedisProcess(workdir / "redis", durable=True).start()  # it holds the search collections
                self.redis_url = self.redis.url
        except BaseException:  # a stop signal or a failure half way: no handler or process outlives the constructor
            self._signals.close()
            raise

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- building it ---------------------------------------------------------------------

    def node_cmd(self, extra: Sequence[str] = ()) -> list[str]:
        redis = ["--redis-url", self.redis_url] if self.redis_url else []
        tls = self.tls.server_args() if self.tls is not None else []
        return [*redis, *tls, *self.node_args, *extra]

    def add(self, *names: str, extra: Sequence[str] = ()) -> None:
        """Start nodes, wait until healthy, then publish them (a pod becomes a ready endpoint)."""
        started = []
        for name in names:
            node = NodeProcess(self.workdir, name, self.node_cmd(extra), tls=self.client_tls)
            node.start(wait=False)
            self.nodes[name] = node
            started.append(node)
        began = time.monotonic()
        for node in started:
            node.wait_healthy(180)
        self.write_members()
        self.on_event(f"{', '.join(names)}: healthy {time.monotonic() - began:.1f}s after start, published")

    def write_members(self, without: str | None = None) -> None:
        """Publish the running nodes (the ready endpoints), leaving out ``without``.

        Written whole and renamed into place, as a ConfigMap update swaps its file: a router that
        polls must never read the moment between truncating and writing (an empty member list).
        """
        staged = self.members_file.with_name(self.members_file.name + ".new")
        staged.write_text("".join(f"{name}={node.target}\n" for name, node in sorted(self.nodes.items())
                                  if node.running and name != without))
        os.replace(staged, self.members_file)

    def start_router(self, *args: str, port: int | None = None, metrics_port: int | None = None) -> RouterProcess:
        tls = self.tls.router_args() if self.tls is not None else []
        self.router = RouterProcess(self.workdir, members_file=self.members_file, port=port, metrics_port=metrics_port,
                                    args=["--members-interval-s", "0.1", "--drain-delay-s", "0.2", *tls,
                                          *self.router_args, *args], tls=self.client_tls)
        self.router.start()
        self.router.wait_members(len(self.nodes))
        return self.router

    # ---- asking the router ---------------------------------------------------------------

    def owner(self, keys: list[int]) -> dict[int, str]:
        with self.router.channel() as channel:
            stub = cpb_grpc.ClusterStub(channel)
            return {k: stub.Owner(cpb.OwnerRequest(phash=k), timeout=10).owner for k in keys}

    def members(self) -> dict[str, cpb.Member]:
        with self.router.channel() as channel:
            reply = cpb_grpc.ClusterStub(channel).Members(cpb.MembersRequest(), timeout=10)
        return {m.name: m for m in reply.members}

    # ---- operating it --------------------------------------------------------------------

    def _drain_out(self, name: str, timeout_s: float) -> NodeProcess:
        """SIGTERM a node, take it out of the ready endpoints, and wait for its clean exit."""
        node = self.nodes[name]
        node.signal(15)
        self.write_members(without=name)  # the terminating pod leaves the ready endpoints
        code = node.proc.wait(timeout_s)
        if code != 0:
            raise RuntimeError(f"{name} exited with {code} on SIGTERM instead of draining:\n{node.log_tail()}")
        return node

    def restart(self, name: str, timeout_s: float = 120.0) -> None:
        """What a StatefulSet does to one pod in a rolling update: same name, new process, new address."""
        self.on_event(f"{name}: SIGTERM (drain)")
        began = time.monotonic()
        old = self._drain_out(name, timeout_s)
        self.on_event(f"{name}: drained and exited in {time.monotonic() - began:.1f}s; starting it again under "
                      "the same name")
        began = time.monotonic()
        fresh = NodeProcess(self.workdir, name, old.args, tls=old.tls).start(timeout_s=timeout_s)  # a new port: the pod's new IP
        self.nodes[name] = fresh
        self.write_members()
        self.router.wait_members(len(self.nodes))
        self.on_event(f"{name}: back on the ring at {fresh.target}, {time.monotonic() - began:.1f}s after start")

    def roll(self) -> None:
        """Restart every node one by one, highest ordinal first, as a StatefulSet update does."""
        for name in sorted(self.nodes, key=_ordinal, reverse=True):
            self.restart(name)

    def scale(self, replicas: int) -> None:
        """Add nodes up to ``replicas`` or drain and remove the highest ordinals down to it."""
        current = sorted(self.nodes, key=_ordinal)
        prefix = current[0].rsplit("-", 1)[0] if current else "node"
        if replicas > len(current):
            new = [f"{prefix}-{i}" for i in range(len(current), replicas)]
            self.on_event(f"scale out to {replicas}: {', '.join(new)}")
            self.add(*new)
            self.router.wait_members(replicas)
        for name in sorted(current, key=_ordinal, reverse=True)[: max(0, len(current) - replicas)]:
            self.on_event(f"scale in: {name} SIGTERM (drain)")
            self._drain_out(name, 120)
            del self.nodes[name]
            self.router.wait_members(len(self.nodes))

    def stop(self) -> None:
        """Stop the router, then every node (each SIGTERM, then SIGKILL after 15 s), then Redis.

        Interrupted (a second stop signal, a test's time limit), it kills what it has not stopped yet.
        """
        children = [("router", self.router), *self.nodes.items()]
        try:
            self.on_event("stopping the cluster")  # inside: a reporter that fails (a closed terminal) stops nothing
            for name, child in children:
                if child is None:
                    continue
                started = time.monotonic()
                code = child.stop(15)
                if code != 0:
                    self.on_event(f"{name}: exit code {code} {time.monotonic() - started:.1f}s after the stop "
                                  f"signal (-9: it did not drain in time and was killed); its log: {child.log_path}")
            if self.redis is not None:
                self.redis.stop(5)
        finally:
            # Interrupted (a test's time limit, Ctrl-C): what was not stopped yet is killed, not left running.
            try:
                for _, child in [*children, ("redis", self.redis)]:
                    if child is not None and child.running:
                        child.kill()
            finally:
                self._signals.close()  # the handlers this cluster installed, if asked, go once it is down
        self.on_event("cluster stopped")


def _ordinal(name: str) -> int:
    tail = name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 0
