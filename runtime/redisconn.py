"""A redis-py asyncio client from a URL: one Redis, or a Redis Cluster for ``redis+cluster://`` URLs.

Shared by the node's cache tier and the search store. Callers decide about retries
(a circuit breaker, a caller's own retry): redis-py itself does not retry.

Credentials come from the URL (``redis://user:password@host``) or from a password file that is read
again at every new connection, so a rotated Kubernetes Secret is picked up without a restart; TLS is
``rediss://`` with the files of ``RedisAccess``. ``connect`` is the one place that turns them into
redis-py's options, and ``redacted`` the one way a URL is shown. ``check_access`` is the start-time
test: a Redis that refuses us (credentials, TLS) stops the process, one that is down does not.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import RedisSSLContext, SSLConnection
from redis.backoff import NoBackoff
from redis.credentials import CredentialProvider
from redis.exceptions import AuthenticationError, NoPermissionError
from redis.retry import Retry

from ringserve.contract.errors import ServiceError
from ringserve.contract.flags import setting

CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")
HIDDEN = "***"
# Replies by which Redis refuses a client: redis-py maps most to AuthenticationError, but a cluster client
# passes them on inside the message of another error.
REFUSALS = ("NOAUTH", "WRONGPASS", "NOPERM", "invalid password", "invalid username-password")
# How redis-py words a connection the server closed.
CLOSED = ("Connection reset by peer", "Connection closed by server", "Broken pipe")


class RedisAccessDenied(ServiceError):
    """Redis refused this process (credentials or TLS): it cannot start until its settings change."""


@dataclass(frozen=True)
class RedisAccess:
    """What proves this process to Redis beyond its URL: a password file, and the files of TLS (rediss://)."""

    password_file: Path | None = setting(
        None, help="file whose content (whitespace stripped) is the Redis password, read at every new connection "
        "so that a rotated Secret is used without a restart; the user, if any, is the URL's (redis://user@host)")
    tls_ca_file: Path | None = setting(
        None, help="CA certificate(s) that sign the Redis server's (rediss:// only; none: the system's CAs)")
    tls_cert_file: Path | None = setting(
        None, help="client certificate, for a Redis that asks for one (tls-auth-clients; rediss:// only)")
    tls_key_file: Path | None = setting(None, help="the client certificate's key")

    def check(self, url: str) -> None:
        """Raise ValueError for settings that ``url`` cannot use, naming what to change."""
        parts = urlsplit(url)
        if self.password_file is not None and (parts.password or "password" in dict(parse_qsl(parts.query))):
            raise ValueError(f"the Redis URL {redacted(url)} holds a password and a password file is given too: "
                             "give one of them")
        tls = (self.tls_ca_file, self.tls_cert_file, self.tls_key_file)
        if any(f is not None for f in tls) and not parts.scheme.startswith("rediss"):
            raise ValueError(f"Redis TLS files are given but the URL {redacted(url)} is not TLS: "
                             "write it rediss:// (or rediss+cluster://)")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("a Redis client certificate needs its key, and a key its certificate: give both")


class SharedTLSConnection(SSLConnection):
    """redis-py's TLS connection, with one SSL context for every connection made with the same files.

    redis-py builds a context per connection, loading the system's CA store each time: tens of milliseconds of
    CPU on the event loop per new connection (80-95 ms on a busy 2-core machine), so a few items that open
    connections at once missed L2's 0.25 s deadline. A file that changes (a rotated Secret) makes a new one.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ssl_context = _TLS_CONTEXTS.shared(self.ssl_context)


class _TLSContexts:
    """The SSL context of each set of TLS settings, kept while the files it was made from are unchanged."""

    def __init__(self) -> None:
        self._made: dict[str, tuple[tuple[Any, ...], RedisSSLContext]] = {}

    def shared(self, fresh: RedisSSLContext) -> RedisSSLContext:
        names = getattr(type(fresh), "__slots__", None) or vars(fresh)  # redis-py 6+ declares slots
        settings = repr([(name, getattr(fresh, name)) for name in sorted(names) if name != "context"])
        files = tuple(_stat(f) for f in (fresh.certfile, fresh.keyfile, fresh.ca_certs))
        made = self._made.get(settings)
        if made is None or made[0] != files:
            made = self._made[settings] = (files, fresh)
        return made[1]


def _stat(path: str | None) -> tuple[int, int, int] | None:
    if path is None:
        return None
    try:
        info = Path(path).stat()
    except OSError:
        return None  # the handshake will say what is wrong with it
    return info.st_ino, info.st_size, info.st_mtime_ns


_TLS_CONTEXTS = _TLSContexts()


class FileCredentials(CredentialProvider):
    """The URL's user (if any) and the password in ``path``, read again at each new connection."""

    def __init__(self, username: str | None, path: Path) -> None:
        self.username, self.path = username, path

    def get_credentials(self) -> tuple[str] | tuple[str, str]:
        """Raises AuthenticationError (a redis-py error: a failed connection) when the file cannot be read."""
        try:
            password = self.path.read_text().strip()
        except OSError as exc:
            raise AuthenticationError(f"cannot read the Redis password file {self.path}: {exc}") from exc
        if not password:
            raise AuthenticationError(f"the Redis password file {self.path} is empty")
        return (self.username, password) if self.username else (password,)

    async def get_credentials_async(self) -> tuple[str] | tuple[str, str]:
        return self.get_credentials()


def redacted(url: str) -> str:
    """``url`` as it may be shown: its password (in the user part or the query) replaced by ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}:{HIDDEN}@{host}"
    query = parts.query
    if query:
        query = urlencode([(k, HIDDEN if k == "password" else v) for k, v in parse_qsl(query, keep_blank_values=True)],
                          safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def connect(url: str, timeout_s: float, retries: int = 0, access: RedisAccess = RedisAccess()) -> Any:
    """A redis-py asyncio client for ``url``: a RedisCluster for redis+cluster:// URLs.

    Args:
        url: ``redis://[user[:password]@]host:port/db``, ``rediss://...``, or the same with ``+cluster``.
        timeout_s: socket connect and read timeout of every call.
        retries: times redis-py re-sends a call whose connection failed (a pooled connection that
            Redis closed while it was down); only for calls that are safe to repeat.
        access: a password file and TLS files (``RedisAccess.check`` has accepted them for ``url``).
    """
    options: dict[str, Any] = {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "retry": Retry(NoBackoff(), retries),
    }
    plain = url.replace("+cluster", "", 1)
    if access.password_file is not None:
        # redis-py refuses a user from the URL beside a credential provider: the provider carries it.
        parts = urlsplit(plain)
        options["credential_provider"] = FileCredentials(unquote(parts.username) if parts.username else None,
                                                         access.password_file)
        plain = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    for option, path in (("ssl_ca_certs", access.tls_ca_file), ("ssl_certfile", access.tls_cert_file),
                         ("ssl_keyfile", access.tls_key_file)):
        if path is not None:
            options[option] = str(path)
    if url.startswith(CLUSTER_SCHEMES):
        cluster = RedisCluster.from_url(plain, **options)  # its ``retry`` also governs cluster errors (redis-py 6)
        if plain.startswith("rediss:"):  # every node's connections, the startup nodes' and those found later
            cluster.nodes_manager.connection_kwargs["connection_class"] = SharedTLSConnection
            for node in cluster.nodes_manager.startup_nodes.values():
                node.connection_class = SharedTLSConnection
        return cluster
    client = aioredis.Redis.from_url(plain, **options)
    if plain.startswith("rediss:"):
        client.connection_pool.connection_class = SharedTLSConnection
    return client


def is_cluster(client: Any) -> bool:
    return isinstance(client, RedisCluster)


async def check_access(url: str, access: RedisAccess, timeout_s: float) -> None:
    """Connect and PING with a client of its own, whose calls may take ``timeout_s`` (a serving client's
    short deadline, missed on a busy machine, would pass a refusal off as Redis being down).

    Raises:
        RedisAccessDenied: Redis refused the credentials or the TLS handshake failed, naming the redacted URL.
        RedisError, OSError, TimeoutError: Redis could not be reached; the caller decides (usually: go on).
    """
    client = connect(url, timeout_s, access=access)
    try:
        if is_cluster(client):
            await asyncio.wait_for(client.initialize(), timeout_s)
        await asyncio.wait_for(client.ping(), timeout_s)
    except Exception as exc:
        if (refusal := _refusal(exc, tls=urlsplit(url).scheme.startswith("rediss"))) is not None:
            raise RedisAccessDenied(f"Redis at {redacted(url)} refused this process: {refusal}") from exc
        raise
    finally:
        await client.aclose()


def _refusal(exc: BaseException, tls: bool) -> str | None:
    """Why Redis refused us, if ``exc`` (or an error it came from) is a refusal rather than Redis being down.

    Over TLS 1.3 the server checks a client certificate after the client's handshake is done: a refused one
    reaches the client as the server's alert, or, when the client's first command crossed it, as the
    connection closed (which of the two is a race). A connection that was accepted and then closed is no
    Redis that is down, so over TLS it counts as a refusal too.
    """
    for error in _chain(exc):
        text = str(error)
        if isinstance(error, (AuthenticationError, NoPermissionError)) or any(word in text for word in REFUSALS):
            return f"credentials refused ({text}); check the user and password (in the URL, or the password file)"
        if isinstance(error, ssl.SSLError) or "[SSL" in text:
            return (f"TLS handshake failed ({text}); check the rediss:// URL's host against the server's "
                    "certificate, the CA file, and the client certificate and key")
        if tls and (isinstance(error, (ConnectionResetError, BrokenPipeError)) or any(c in text for c in CLOSED)):
            return (f"TLS handshake failed (Redis closed the connection: {text}; a Redis with tls-auth-clients does "
                    "so when the client certificate is missing or from another CA); check the client certificate "
                    "and key, and the CA file")
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__
