"""Who may write to search collections and search them (search/access.py), through real routers, a node and Redis.

Two routers over the same node and Redis: one serving mutual TLS, where a caller is its client certificate's
name; one serving plaintext (TLS ends in front of it), where a caller is the name of its bearer token.
"""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ringserve.client import Client, RingserveError
from ringserve.client.config import ClientConfig
from ringserve.client.search import Indexed
from ringserve.contract.tls import ClientTls, channel
from ringserve.local.cluster import LocalCluster, LocalTls
from ringserve.local.imagegen import jpeg
from ringserve.local.processes import RedisProcess, RouterProcess
from ringserve.search.access import Access, AccessConfig, AccessError, bearer_token
from tests import certs
from tests.conftest import SMALL_MODEL
from tests.test_search import wait_until

IMAGES = [jpeg(33_000 + i) for i in range(3)]
TOKENS = {"writer-bot": "w-7f3a9c", "reader-bot": "r-51be02"}


def search_args(root: Path, redis: RedisProcess) -> list[str]:
    tokens = root / "tokens"
    tokens.write_text("# name token\n" + "".join(f"{name} {token}\n" for name, token in TOKENS.items()))
    return ["--search-redis-url", redis.url, "--search-poll-s", "0.02", "--search-writers", "indexer,writer-bot",
            "--search-readers", "indexer,reader-bot,writer-bot", "--search-tokens-file", str(tokens)]


@pytest.fixture(scope="module")
def routers(tmp_path_factory):
    """(mutual-TLS router, plaintext router, the certificates): both admit writers and readers by name."""
    root = tmp_path_factory.mktemp("access")
    ca = certs.make_ca(root / "pki", "ca")
    made = {"cluster": certs.make_cert(ca, root / "pki", "cluster")}  # a caller's name is its CN alone:
    made |= {name: certs.make_cert(ca, root / "pki", name, sans=(), client=True) for name in ("indexer", "alice")}
    tls = LocalTls(ca.cert, made["cluster"].cert, made["cluster"].key)
    redis = RedisProcess(root / "redis").start()
    cluster = LocalCluster(root / "cluster", node_args=SMALL_MODEL, router_args=search_args(root, redis), tls=tls)
    plain = None
    try:
        cluster.add("node-0")
        cluster.start_router()
        plain = RouterProcess(root / "cluster", "router-plain", members_file=cluster.members_file,
                              args=["--members-interval-s", "0.1", *tls.link_args(), *search_args(root, redis)])
        plain.start()
        for target, own in ((cluster.router.target, cluster.client_tls), (plain.target, None)):
            with channel(target, tls=own) as open_channel:
                health = health_pb2_grpc.HealthStub(open_channel)
                wait_until(lambda h=health: h.Check(health_pb2.HealthCheckRequest(service="ringserve.v1.Search"))
                           .status == health_pb2.HealthCheckResponse.SERVING, 60)
        yield cluster.router, plain, made
    finally:
        if plain is not None:
            plain.stop(15)
        cluster.stop()
        redis.stop(5)


def as_cert(cert: certs.Cert) -> ClientTls:
    return ClientTls(ca_file=cert.ca.cert, cert_file=cert.cert, key_file=cert.key)


def refusal(call) -> grpc.StatusCode:
    """The code a search call is refused with (it must be refused)."""
    with pytest.raises(RingserveError) as refused:
        call()
    return refused.value.code


def test_under_mutual_tls_only_the_named_certificate_writes_and_searches(routers):
    router, _, made = routers
    with Client(router.target, tls=as_cert(made["indexer"]), retries=0) as indexer:
        assert all(isinstance(r, Indexed) for r in indexer.index(["a", "b"], IMAGES[:2], collection="mtls"))
        assert indexer.search("mtls", image=IMAGES[0], k=1).nearest[0].id == "a"
        assert indexer.delete("mtls", ["b"]) == (1, [])
    with Client(router.target, tls=as_cert(made["alice"]), retries=0) as alice:  # a good certificate, not named
        results = alice.index(["c"], IMAGES[2:], collection="mtls")
        assert [r.code for r in results] == [grpc.StatusCode.PERMISSION_DENIED]
        assert "alice" in str(results[0]) and "--search-writers" in str(results[0])
        assert refusal(lambda: alice.delete("mtls", ["a"])) == grpc.StatusCode.PERMISSION_DENIED
        assert refusal(lambda: alice.search("mtls", image=IMAGES[0], k=1)) == grpc.StatusCode.PERMISSION_DENIED
    # The same certificate with a writer's token is that writer too; an unknown token is no identity.
    with Client(router.target, tls=as_cert(made["alice"]), token=TOKENS["writer-bot"], retries=0) as bot:
        assert isinstance(bot.index(["c"], IMAGES[2:], collection="mtls")[0], Indexed)
    with Client(router.target, tls=as_cert(made["alice"]), token="forged", retries=0) as forged:
        assert refusal(lambda: forged.delete("mtls", ["a"])) == grpc.StatusCode.UNAUTHENTICATED
    with Client(router.target, tls=as_cert(made["indexer"]), retries=0) as indexer:
        assert indexer.describe_collection("mtls").entries == 2  # a and c: nothing refused was written
    log = router.log_path.read_text()
    assert "indexed a in mtls for indexer (client certificate)" in log
    assert "deleted 1 ids of mtls (b) for indexer (client certificate)" in log
    assert "indexed c in mtls for alice/writer-bot (client certificate and bearer token)" in log


def test_behind_a_tls_terminator_a_bearer_token_names_the_caller(routers, tmp_path):
    _, plain, _ = routers
    with Client(plain.target, retries=0) as anonymous:
        results = anonymous.index(["x"], IMAGES[:1], collection="plain")
        assert [r.code for r in results] == [grpc.StatusCode.UNAUTHENTICATED]
        assert "no identity presented" in str(results[0]) and "--token-file" in str(results[0])
        assert refusal(lambda: anonymous.search("plain", image=IMAGES[0], k=1)) == grpc.StatusCode.UNAUTHENTICATED
        assert refusal(lambda: anonymous.describe_collection("plain")) == grpc.StatusCode.UNAUTHENTICATED
    token_file = tmp_path / "token"
    token_file.write_text(TOKENS["writer-bot"] + "\n")
    with Client(plain.target, token_file=token_file, retries=0) as writer:
        assert isinstance(writer.index(["x"], IMAGES[:1], collection="plain")[0], Indexed)
    with Client(plain.target, token=TOKENS["reader-bot"], retries=0) as reader:
        assert reader.search("plain", image=IMAGES[0], k=1).nearest[0].id == "x"
        assert refusal(lambda: reader.delete("plain", ["x"])) == grpc.StatusCode.PERMISSION_DENIED
        assert [r.code for r in reader.index(["y"], IMAGES[1:2], collection="plain")] == [
            grpc.StatusCode.PERMISSION_DENIED]
    with Client(plain.target, token_file=token_file, retries=0) as writer:
        assert writer.delete("plain", everything=True) == (1, [])
    assert "dropped collection plain (1 entries) for writer-bot (bearer token)" in plain.log_path.read_text()


def test_a_tokens_file_that_cannot_be_used_stops_the_router_naming_the_file_and_line(tmp_path):
    with pytest.raises(AccessError, match="cannot read it"):
        Access(AccessConfig(tokens_file=tmp_path / "absent"))
    (tmp_path / "tokens").write_text("# name token\nwriter-bot w-1\nonly-a-name\n")
    with pytest.raises(AccessError, match="line 3: expected 'NAME TOKEN'"):
        Access(AccessConfig(tokens_file=tmp_path / "tokens"))


@pytest.mark.parametrize(("metadata", "token"), [
    ((("authorization", "Bearer abc"),), "abc"), ((("authorization", "bearer  abc "),), "abc"),
    ((("authorization", "Basic abc"),), None), ((("authorization", "Bearer "),), None), ((), None),
    ((("x-other", "Bearer abc"),), None)])
def test_only_an_authorization_bearer_entry_is_a_token(metadata, token):
    assert bearer_token(metadata) == token


def test_the_clients_token_is_never_shown():
    config = ClientConfig(token="w-7f3a9c")
    assert config.bearer_token() == "w-7f3a9c" and "w-7f3a9c" not in repr(config)


def test_the_command_reaches_the_routers_with_its_certificate_and_its_token_from_the_environment(routers, tmp_path,
                                                                                                   monkeypatch, capsys):
    from ringserve.client import cli

    router, plain, made = routers
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "q.jpg").write_bytes(IMAGES[0])
    indexer = made["indexer"]
    mtls = ["--target", router.target, "--tls-ca-file", str(indexer.ca.cert), "--tls-cert-file", str(indexer.cert),
            "--tls-key-file", str(indexer.key)]
    assert cli.main(["index", str(tmp_path / "folder"), "--collection", "cli", "--no-progress", "--journal",
                     str(tmp_path / "journal"), *mtls]) == 0
    assert "1 indexed now" in capsys.readouterr().err
    assert cli.main(["delete", "--collection", "cli", "--all", "--target", plain.target]) == 1
    assert "UNAUTHENTICATED" in capsys.readouterr().err
    monkeypatch.setenv("RINGSERVE_CLIENT_TOKEN", TOKENS["reader-bot"])
    assert cli.main(["delete", "--collection", "cli", "--all", "--target", plain.target]) == 1
    assert "PERMISSION_DENIED" in capsys.readouterr().err
    assert cli.main(["search", str(tmp_path / "folder" / "q.jpg"), "--collection", "cli", "-k", "1", "--target",
                     plain.target]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["id"] == "q.jpg"
    assert cli.main(["delete", "--collection", "cli", "--all", *mtls]) == 0
    assert json.loads(capsys.readouterr().out)["deleted"] == 1
