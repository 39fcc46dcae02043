"""``ringserve status``: the ring as one router sees it, on one screen, over gRPC alone.

Reads the router's ``Cluster.Members`` (the port callers already use; no metrics port needed): each node's
state, its share of the ring's key space (its arcs, from the same ring the router places with), its share
of the items placed, its in-flight items, and the hit ratio by tier and model version of the items
answered through this router since it started. ``--watch`` redraws it; ``--json`` prints it as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import TextIO

import grpc

from ringserve.client.config import ClientConfig
from ringserve.client.errors import RingserveError
from ringserve.contract import tls as contract_tls
from ringserve.contract.ring import Ring
from ringserve.contract.tls import ClientTls
from ringserve.contract.v1 import cluster_pb2 as cpb
from ringserve.contract.v1 import cluster_pb2_grpc as cpb_grpc

TIERS = ("l1", "l2", "computed")
HITS = ("l1", "l2")
CLEAR = "\x1b[H\x1b[2J"  # cursor home, clear the screen: a watched screen redrawn in place


class StatusError(RingserveError):
    """The router could not be asked; ``code`` is its gRPC status, the message names the fix."""

    def __init__(self, message: str, code: grpc.StatusCode) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class NodeStatus:
    name: str
    address: str
    state: str  # serving, not_serving, ejected
    reason: str
    weight: int
    arc_share: float  # of the ring's key space; 0 off the ring
    load_share: float  # of the items this router placed
    inflight: int
    placed: int
    ejections: int
    hit_ratio: float | None  # None before it answered an item


@dataclass
class VersionStatus:
    model_version: str
    items: int
    tiers: dict[str, float]  # share of the items per tier
    hit_ratio: float | None


@dataclass
class Status:
    router: str
    target: str
    load_factor: float
    nodes: list[NodeStatus] = field(default_factory=list)
    model_versions: list[VersionStatus] = field(default_factory=list)

    @property
    def serving(self) -> int:
        return sum(n.state == "serving" for n in self.nodes)


def fetch(target: str, timeout_s: float | None = 10.0, tls: ClientTls | None = None) -> Status:
    """Ask the router at ``target`` for its members and answers, over TLS per ``tls`` (plaintext when None).

    Raises:
        StatusError: the router could not be reached, ``target`` is not a router, or a TLS file is unreadable.
    """
    try:
        with contract_tls.channel(target, tls=tls) as channel:
            reply = cpb_grpc.ClusterStub(channel).Members(cpb.MembersRequest(), timeout=timeout_s)
    except contract_tls.TlsError as exc:
        raise StatusError(exc.reason(), exc.code) from exc
    except grpc.RpcError as exc:
        raise StatusError(_advice(target, exc, tls is not None and tls.enabled), exc.code()) from exc
    return summarize(reply, target)


def _advice(target: str, exc: grpc.RpcError, tls: bool) -> str:
    code = exc.code()
    if code is grpc.StatusCode.UNIMPLEMENTED:
        return f"{target} serves no Cluster service: give a router's address with --target (a node has none)"
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        hint = "" if tls else "; a router that serves TLS needs --tls-ca-file (and --tls-cert-file, --tls-key-file)"
        return f"cannot reach a router at {target} ({code.name}: {exc.details()}): check --target and that it runs{hint}"
    return f"the router at {target} answered {code.name}: {exc.details()}"


def summarize(reply: cpb.MembersReply, target: str) -> Status:
    """A Members reply as the numbers an operator reads: shares, hit ratios."""
    serving = {m.name: m.weight for m in reply.members if m.state == cpb.MEMBER_STATE_SERVING}
    arcs = Ring(serving).shares()
    placed = sum(m.placed for m in reply.members)
    per_node: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    per_version: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for a in reply.answered:
        per_node[a.node][a.tier] += a.items
        per_version[a.model_version][a.tier] += a.items
    status = Status(router=reply.router, target=target, load_factor=reply.load_factor)
    for m in reply.members:
        state = cpb.MemberState.Name(m.state).removeprefix("MEMBER_STATE_").lower()
        status.nodes.append(NodeStatus(
            name=m.name, address=m.address, state=state, reason=m.reason, weight=m.weight,
            arc_share=arcs.get(m.name, 0.0), load_share=m.placed / placed if placed else 0.0,
            inflight=m.inflight, placed=m.placed, ejections=m.ejections, hit_ratio=_hit_ratio(per_node[m.name])))
    for version, tiers in sorted(per_version.items()):
        items = sum(tiers.values())
        status.model_versions.append(VersionStatus(
            model_version=version, items=items, tiers={t: n / items for t, n in sorted(tiers.items())},
            hit_ratio=_hit_ratio(tiers)))
    return status


def _hit_ratio(tiers: dict[str, int]) -> float | None:
    """Items served from a cache over items that got a feature; None before any did."""
    fed = sum(tiers.get(t, 0) for t in TIERS)
    return sum(tiers.get(t, 0) for t in HITS) / fed if fed else None


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def render(status: Status) -> str:
    """The one screen: the router, a row per node, a row per model version."""
    lines = [f"router {status.router} at {status.target}: {status.serving} of {len(status.nodes)} nodes serving, "
             f"load factor {status.load_factor:g}", ""]
    rows = [("NODE", "STATE", "ARC", "LOAD", "IN-FLIGHT", "PLACED", "HIT", "EJECTED", "ADDRESS", "REASON")]
    rows += [(n.name, n.state, _pct(n.arc_share), _pct(n.load_share), str(n.inflight), str(n.placed),
              _pct(n.hit_ratio), str(n.ejections), n.address, n.reason) for n in status.nodes]
    lines += _table(rows)
    lines += ["", "answered through this router since it started, by model version:"]
    rows = [("MODEL VERSION", "ITEMS", "L1", "L2", "COMPUTED", "HIT")]
    rows += [(v.model_version or "-", str(v.items), *(_pct(v.tiers.get(t, 0.0)) for t in TIERS), _pct(v.hit_ratio))
             for v in status.model_versions]
    lines += _table(rows) if status.model_versions else ["  (no items answered yet)"]
    return "\n".join(lines) + "\n"


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"--interval-s must be a number of seconds above 0, not {text!r}")
    return value


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    st = sub.add_parser("status", help="members, health, ring and load shares, hit ratio, from a router",
                        description="Show the ring as the router at --target sees it: each node's state, share of "
                        "the ring, share of the items, in-flight items and hit ratio, and the hit ratio by tier "
                        "and model version. Uses the router's gRPC port only.")
    st.add_argument("--watch", action="store_true", help="redraw every --interval-s seconds until Ctrl-C")
    st.add_argument("--interval-s", type=_seconds, default=2.0, help="seconds between redraws with --watch")
    st.add_argument("--json", action="store_true", help="print JSON (one object per line with --watch)")
    return st


def run(a: argparse.Namespace, config: ClientConfig, out: TextIO = sys.stdout) -> int:
    """``ringserve status``: 0 when shown, 1 when the router could not be asked (the reason on stderr)."""
    try:
        while True:
            try:
                status = fetch(config.target, config.timeout_s, config.tls)
            except StatusError as exc:
                print(f"ringserve status: {exc.message}", file=sys.stderr)
                if not a.watch:
                    return 1
            else:
                if a.json:
                    out.write(json.dumps(asdict(status)) + "\n")
                else:
                    out.write((CLEAR if a.watch and out.isatty() else "") + render(status))
                out.flush()
            if not a.watch:
                return 0
            time.sleep(a.interval_s)
    except KeyboardInterrupt:
        return 0
