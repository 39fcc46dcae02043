"""TLS and mutual TLS on every gRPC hop, with real processes and certificates made here (tests/certs.py).

The nodes of these clusters require a client certificate, so the router's health checks and links reach them
only over mutual TLS: a router that showed its nodes as serving and answered an item proves both.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ringserve.client import Client
from ringserve.contract.ring import Ring
from ringserve.contract.tls import CertificateReloader, ClientTls, ServerTls, TlsError, channel
from ringserve.contract.v1 import cluster_pb2 as cpb
from ringserve.contract.v1 import inference_pb2 as pb
from ringserve.contract.v1 import inference_pb2_grpc as pb_grpc
from ringserve.local.cluster import LocalCluster, LocalTls
from ringserve.local.imagegen import jpeg
from ringserve.local.load import LoadGenerator
from ringserve.local.processes import LocalError, NodeProcess, RouterProcess, free_port
from ringserve.router.health import HealthConfig
from ringserve.router.link import LinkError, NodeLink
from ringserve.router.membership.base import Member
from ringserve.router.registry import LINK_RETRY_S, Registry
from ringserve.server import config as node_config
from tests import certs
from tests.conftest import SMALL_MODEL, extract_one
from tests.fakes import wait_until as wait_until_async
from tests.test_k8s import OVERLAYS, one, render, secret_of
from tests.test_search import wait_until


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, certs.Cert]:
    """A CA, the cluster's own certificate, a caller's, one from another CA, and an expired one."""
    root = tmp_path_factory.mktemp("pki")
    ca, other = certs.make_ca(root, "ca"), certs.make_ca(root, "other-ca")
    return {"cluster": certs.make_cert(ca, root, "cluster"),
            "alice": certs.make_cert(ca, root, "alice", client=True),
            "stranger": certs.make_cert(other, root, "stranger", client=True),
            "late": certs.make_cert(ca, root, "late", client=True, expired=True)}


def caller(cert: certs.Cert, ca: certs.CA | None = None) -> ClientTls:
    """A channel's TLS that trusts ``ca`` (default: the certificate's own) and presents ``cert``."""
    return ClientTls(ca_file=(ca or cert.ca).cert, cert_file=cert.cert, key_file=cert.key)


def health_code(target: str, tls: ClientTls | None) -> grpc.StatusCode:
    """What one health check over ``tls`` (None: plaintext) is answered: OK, or the refusal's code."""
    try:
        with channel(target, tls=tls) as open_channel:
            health_pb2_grpc.HealthStub(open_channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


@pytest.fixture(scope="module")
def mtls_cluster(pki, tmp_path_factory):
    cluster = pki["cluster"]
    c = LocalCluster(tmp_path_factory.mktemp("mtls"), node_args=SMALL_MODEL,
                     tls=LocalTls(cluster.ca.cert, cluster.cert, cluster.key))
    try:
        c.add("node-0", "node-1")
        c.start_router()  # waits for both nodes SERVING on the ring: the health checks went over mutual TLS
        yield c
    finally:
        c.stop()


@pytest.mark.parametrize("who", ["router", "node-0"])
def test_callers_without_the_right_certificate_are_refused_and_the_right_one_is_served(pki, mtls_cluster, who):
    target = mtls_cluster.router.target if who == "router" else mtls_cluster.nodes[who].target
    alice = pki["alice"]
    refused = {"plaintext": health_code(target, None),
               "no client certificate": health_code(target, ClientTls(ca_file=alice.ca.cert)),
               "another CA's certificate": health_code(target, caller(pki["stranger"], alice.ca)),
               "an expired certificate": health_code(target, caller(pki["late"]))}
    assert refused == dict.fromkeys(refused, grpc.StatusCode.UNAVAILABLE)
    assert health_code(target, caller(alice)) == grpc.StatusCode.OK
    with Client(target, tls=caller(alice), retries=0) as client:
        features = client.extract_detailed([jpeg(31_000), jpeg(31_001)])
    # Through the router, the items crossed its links to the nodes, which take only mutual TLS.
    assert [f.vector.shape for f in features] == [features[0].vector.shape] * 2
    assert not np.array_equal(features[0].vector, features[1].vector)
    assert all(f.provenance.node.startswith("node-") for f in features)


def test_the_router_reaches_nodes_that_require_client_certificates_only_with_its_own(pki, mtls_cluster):
    members = mtls_cluster.members()
    assert {name: m.state for name, m in members.items()} == dict.fromkeys(["node-0", "node-1"],
                                                                           cpb.MEMBER_STATE_SERVING)
    log = mtls_cluster.router.log_path.read_text()
    assert "(mutual TLS)" in log  # the router's own port
    assert all("(mutual TLS)" in node.log_path.read_text() for node in mtls_cluster.nodes.values())


def _swap_in(folder: Path, cert: certs.Cert, ca: certs.CA | None = None) -> None:
    """Replace the files under ``folder`` as Kubernetes updates a mounted Secret: a new directory, then one
    atomic rename of the ``..data`` link the files point through. ``ca.crt`` is ``ca`` (default: the cert's)."""
    fresh = folder / f"..{cert.name}-{time.monotonic_ns()}"
    fresh.mkdir(parents=True)
    (fresh / "tls.crt").write_bytes(cert.cert.read_bytes())
    (fresh / "tls.key").write_bytes(cert.key.read_bytes())
    (fresh / "ca.crt").write_bytes((ca or cert.ca).cert.read_bytes())
    staged = folder / "..data_tmp"
    staged.symlink_to(fresh.name)
    os.replace(staged, folder / "..data")
    for name in ("tls.crt", "tls.key", "ca.crt"):
        if not (folder / name).is_symlink():
            (folder / name).symlink_to(f"..data/{name}")


def test_a_certificate_replaced_on_disk_is_served_to_new_callers_and_items_in_flight_are_all_answered(
        pki, tmp_path):
    first = pki["cluster"]
    renewed_ca = certs.make_ca(tmp_path / "renewed", "renewed-ca")
    renewed = certs.make_cert(renewed_ca, tmp_path / "renewed", "renewed")
    secret = tmp_path / "secret"
    secret.mkdir()
    _swap_in(secret, first)
    probe = free_port()
    node = NodeProcess(tmp_path, "node-0", [*SMALL_MODEL, "--tls-cert-file", str(secret / "tls.crt"),
                                            "--tls-key-file", str(secret / "tls.key"), "--health-port", str(probe)],
                       tls=ClientTls(ca_file=first.ca.cert))
    try:
        node.start()
        # Kubelet's probes speak no TLS: the probe port answers health in plaintext, and nothing else.
        assert health_code(f"127.0.0.1:{probe}", None) == grpc.StatusCode.OK
        with channel(f"127.0.0.1:{probe}") as open_channel, pytest.raises(grpc.RpcError) as unserved:
            extract_one(pb_grpc.InferenceStub(open_channel), jpeg(32_100), pb.CACHE_MODE_EXACT)
        assert unserved.value.code() == grpc.StatusCode.UNIMPLEMENTED
        load = LoadGenerator(node.target, [jpeg(32_000 + i) for i in range(20)], streams=2, window=4,
                             tls=ClientTls(ca_file=first.ca.cert)).start()
        wait_until(lambda: load.report.answered >= 20, 60)
        assert health_code(node.target, ClientTls(ca_file=renewed_ca.cert)) == grpc.StatusCode.UNAVAILABLE
        _swap_in(secret, renewed)
        answered_at_swap = load.report.answered
        # The next connection's handshake reads the new files: a caller that trusts only the new CA is served.
        wait_until(lambda: health_code(node.target, ClientTls(ca_file=renewed_ca.cert)) == grpc.StatusCode.OK, 60)
        assert health_code(node.target, ClientTls(ca_file=first.ca.cert)) == grpc.StatusCode.UNAVAILABLE
        wait_until(lambda: load.report.answered >= answered_at_swap + 40, 60)  # the streams opened before go on
        report = load.stop()
    finally:
        node.stop(15)
    assert report.stream_errors == [] and report.lost == 0 and report.duplicates == 0, report.summary()
    assert report.failed == 0, report.codes()
    assert "TLS certificate files changed" in node.log_path.read_text()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_overlays_run_mutual_tls_from_the_secret_and_probe_the_plaintext_health_port(overlay):
    docs = render(overlay)
    config = one(docs, "ConfigMap", "ringserve-config")["data"]
    for kind, name, prefix in (("StatefulSet", "ringserve-node", "RINGSERVE_"),
                               ("Deployment", "ringserve-router", "RINGSERVE_ROUTER_")):
        pod = one(docs, kind, name)["spec"]["template"]["spec"]
        for setting in ("TLS_CERT_FILE", "TLS_KEY_FILE", "TLS_CLIENT_CA_FILE"):
            assert secret_of(pod, config[prefix + setting]) == "ringserve-tls", (name, setting)
        assert config[prefix + "TLS_REQUIRE_CLIENT_CERT"] == "true"
        container = pod["containers"][0]
        probes = {p: container[p]["grpc"]["port"] for p in ("startupProbe", "readinessProbe", "livenessProbe")
                  if p in container}
        assert set(probes.values()) == {int(config[prefix + "HEALTH_PORT"])}, probes
    assert config["RINGSERVE_ROUTER_NODE_TLS_CERT_FILE"] and config["RINGSERVE_ROUTER_NODE_TLS_SERVER_NAME"]


def test_the_routers_network_policy_names_who_may_reach_it():
    policy = one(render("cpu"), "NetworkPolicy", "ringserve-router")
    grpc_rule = next(r for r in policy["spec"]["ingress"] if r["ports"][0]["port"] == 50050)
    assert grpc_rule["from"], "port 50050 open to every pod of every namespace"
    for peer in grpc_rule["from"]:
        assert peer["podSelector"]["matchLabels"] == {"ringserve.io/client": "true"}
        assert peer.get("namespaceSelector", {"matchLabels": {"ringserve.io/clients": "true"}}) == {
            "matchLabels": {"ringserve.io/clients": "true"}}


def test_half_a_tls_setting_is_refused_at_the_command_line_naming_what_is_missing(capsys):
    for argv, said in ((["--tls-cert-file", "a.pem"], "give --tls-cert-file and --tls-key-file together"),
                       (["--tls-cert-file", "a.pem", "--tls-key-file", "a.key", "--tls-require-client-cert"],
                        "--tls-require-client-cert needs --tls-client-ca-file"),
                       (["--tls-cert-file", "a.pem", "--tls-key-file", "a.key", "--tls-client-ca-file", "ca.pem"],
                        "--tls-client-ca-file works only with --tls-require-client-cert")):
        with pytest.raises(SystemExit) as ended:
            node_config.from_args(argv, {})
        assert ended.value.code == 2 and said in capsys.readouterr().err
    with pytest.raises(ValueError, match="--tls-ca-file"):
        ClientTls(cert_file=Path("c.pem"), key_file=Path("c.key"))


def test_a_node_whose_certificate_cannot_be_read_does_not_start_and_names_the_setting(tmp_path):
    node = NodeProcess(tmp_path, "node-0", [*SMALL_MODEL, "--tls-cert-file", str(tmp_path / "absent.pem"),
                                            "--tls-key-file", str(tmp_path / "absent.key")])
    try:
        with pytest.raises(LocalError, match="exited"):
            node.start()
    finally:
        node.stop(15)
    assert f"--tls-key-file {tmp_path / 'absent.key'}: cannot read it" in node.log_path.read_text()


def test_certificate_files_caught_half_way_through_a_rotation_are_not_used_until_whole(pki, tmp_path):
    first, other = pki["cluster"], pki["alice"]
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_bytes(first.cert.read_bytes())
    key.write_bytes(first.key.read_bytes())
    reloader = CertificateReloader(ServerTls(cert_file=cert, key_file=key))
    assert reloader.fetch() is None  # nothing changed: gRPC keeps what it has
    cert.write_bytes(first.cert.read_bytes()[:200])  # half written
    assert reloader.fetch() is None
    cert.write_bytes(other.cert.read_bytes())  # a new certificate beside the old key
    assert reloader.fetch() is None
    with pytest.raises(TlsError, match="no certificate and its key"):
        reloader.load()
    key.write_bytes(other.key.read_bytes())  # the rotation completes
    assert reloader.fetch() is not None
    assert reloader.fetch() is None


async def test_the_routers_link_presents_its_rotated_client_certificate_when_it_reconnects(pki, tmp_path):
    """The node comes back trusting only the new client CA: the link is served again only with the new certificate."""
    server, old_client = pki["cluster"], pki["alice"]
    new_ca = certs.make_ca(tmp_path / "new", "new-ca")
    new_client = certs.make_cert(new_ca, tmp_path / "new", "router-renewed", client=True)
    node_secret, router_secret = tmp_path / "node-secret", tmp_path / "router-secret"
    _swap_in(node_secret, server, ca=old_client.ca)
    _swap_in(router_secret, old_client, ca=server.ca)
    port = free_port()
    args = [*SMALL_MODEL, "--tls-cert-file", str(node_secret / "tls.crt"), "--tls-key-file",
            str(node_secret / "tls.key"), "--tls-client-ca-file", str(node_secret / "ca.crt"), "--tls-require-client-cert"]
    first = NodeProcess(tmp_path / "first", "node-0", args, port=port, tls=caller(old_client, server.ca))
    second = NodeProcess(tmp_path / "second", "node-0", args, port=port, tls=caller(new_client, server.ca))
    link = NodeLink(Member("node-0", f"127.0.0.1:{port}"), tls=ClientTls(
        ca_file=router_secret / "ca.crt", cert_file=router_secret / "tls.crt", key_file=router_secret / "tls.key"))
    try:
        await asyncio.to_thread(first.start)
        assert (await link.send("Extract", pb.ImageRequest(), jpeg(34_000))).status.code == 0
        await asyncio.to_thread(first.stop, 15)
        _swap_in(node_secret, server, ca=new_ca)  # the node restarts trusting only the renewed client CA
        _swap_in(router_secret, new_client, ca=server.ca)  # the router's certificate is renewed by then
        await asyncio.to_thread(second.start)
        assert (await _answered(link, jpeg(34_001))).status.code == 0
    finally:
        await link.close()
        for node in (first, second):
            await asyncio.to_thread(node.stop, 15)


async def _answered(link: NodeLink, image: bytes, tries: int = 50) -> pb.ExtractReply:
    """The node's reply, sent again while the link reports the old stream broken (as the router would)."""
    for _ in range(tries - 1):
        with contextlib.suppress(LinkError):
            return await link.send("Extract", pb.ImageRequest(), image)
        await asyncio.sleep(0.2)
    return await link.send("Extract", pb.ImageRequest(), image)


def test_a_router_whose_node_certificate_cannot_be_read_does_not_start_and_names_the_setting(tmp_path):
    # Read first in the background (a link, a health watch), the bad file left a router serving with no node.
    router = RouterProcess(tmp_path, members="node-0=127.0.0.1:1",
                           args=["--node-tls-ca-file", str(tmp_path / "absent.pem")])
    try:
        with pytest.raises(LocalError, match="exited"):
            router.start()
    finally:
        router.stop(15)
    assert f"--node-tls-ca-file, -cert-file, -key-file (the router's TLS to its nodes): the CA file " \
           f"{tmp_path / 'absent.pem'}: cannot read it" in router.log_path.read_text()


async def test_a_node_whose_link_cannot_be_made_yet_is_linked_once_the_files_can_be_read(pki, tmp_path):
    # Files caught mid-rotation when a node joins: the node waits off the table, and is linked at a later try.
    secret = tmp_path / "secret"
    tls = ClientTls(ca_file=secret / "ca.crt", cert_file=secret / "tls.crt", key_file=secret / "tls.key")
    registry = Registry(HealthConfig(watch_retry_s=0.05), Ring(), tls=tls)
    try:
        registry.update([Member("node-0", "127.0.0.1:1")])
        assert "node-0" not in registry.nodes
        _swap_in(secret, pki["alice"], ca=pki["alice"].ca)
        await wait_until_async(lambda: "node-0" in registry.nodes, timeout_s=5 * LINK_RETRY_S)
    finally:
        await registry.close()
