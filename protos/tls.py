"""TLS and mutual TLS for every gRPC hop: the settings of each side, and the one way to open a channel or a port.

A server (node, router) takes ``ServerTls``: its certificate and key, and the CA whose client certificates it
accepts (mutual TLS when ``require_client_cert``). Its files are read again whenever they change on disk (a
rotated Kubernetes Secret), before the next connection's handshake (``grpc.dynamic_ssl_server_credentials``):
connections already open, and the items on them, go on as they were. A channel (the client, the router's
links and health checks, the local cluster's helpers) takes ``ClientTls``: the CA that signs the server's
certificate, and its own certificate and key for mutual TLS, read when the channel is made (a rotated client
certificate is used by the next channel: ``ClientTls.stamp`` tells a long-lived owner, the router's link, to
make one). ``None``, or a config with no files, is plaintext.

Every channel and every port of the project is opened here (``channel``, ``aio_channel``, ``add_port``).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from ringserve.contract.errors import ServiceError
from ringserve.contract.flags import setting

log = logging.getLogger(__name__)
Options = Sequence[tuple[str, Any]]


class TlsError(ServiceError):
    """A certificate, key or CA file cannot be read or is no PEM; the message names the file and its setting."""

    code = grpc.StatusCode.FAILED_PRECONDITION


@dataclass(frozen=True)
class ServerTls:
    """A server's side: TLS when ``cert_file`` is set, mutual TLS when it also requires client certificates."""

    cert_file: Path | None = setting(None, help="PEM certificate chain this server presents; none: plaintext")
    key_file: Path | None = setting(None, help="PEM private key of --tls-cert-file")
    client_ca_file: Path | None = setting(None, help="PEM CA bundle that signs the client certificates required "
                                          "(with --tls-require-client-cert)")
    require_client_cert: bool = setting(False, help="mutual TLS: refuse a caller without a client certificate "
                                        "signed by --tls-client-ca-file")

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("give --tls-cert-file and --tls-key-file together (or neither, for plaintext)")
        if self.cert_file is None and (self.client_ca_file is not None or self.require_client_cert):
            raise ValueError("--tls-client-ca-file and --tls-require-client-cert need --tls-cert-file and --tls-key-file")
        if self.client_ca_file is not None and not self.require_client_cert:
            raise ValueError("--tls-client-ca-file works only with --tls-require-client-cert (gRPC asks callers for a "
                             "certificate only when it requires one): add it, or leave the CA out")
        if self.require_client_cert and self.client_ca_file is None:
            raise ValueError("--tls-require-client-cert needs --tls-client-ca-file, the CA of the client certificates")

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None

    def describe(self) -> str:
        """``plaintext``, ``TLS`` or ``mutual TLS``: for the start-up log line."""
        return "mutual TLS" if self.require_client_cert else "TLS" if self.enabled else "plaintext"

    def files(self) -> dict[str, Path]:
        """Each file that is set, by the flag that names it."""
        named = {"--tls-cert-file": self.cert_file, "--tls-key-file": self.key_file,
                 "--tls-client-ca-file": self.client_ca_file}
        return {flag: path for flag, path in named.items() if path is not None}


@dataclass(frozen=True)
class ClientTls:
    """A channel's side: TLS when ``ca_file`` is set, presenting a client certificate when ``cert_file`` is."""

    ca_file: Path | None = setting(None, help="PEM CA bundle that signs the server's certificate; none: plaintext")
    cert_file: Path | None = setting(None, help="PEM client certificate chain, for servers that require one "
                                     "(mutual TLS)")
    key_file: Path | None = setting(None, help="PEM private key of the client certificate")
    server_name: str | None = setting(None, help="name to check the server's certificate against, in place of the "
                                      "target's host (a node reached by its pod IP)")

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("give the client certificate and its key together: --tls-cert-file and --tls-key-file "
                             "(--node-tls-... on a router)")
        if self.ca_file is None and (self.cert_file is not None or self.server_name):
            raise ValueError("a client certificate or a server name needs TLS: give the server's CA as --tls-ca-file "
                             "(--node-tls-ca-file on a router)")

    @property
    def enabled(self) -> bool:
        return self.ca_file is not None

    def stamp(self) -> tuple:
        """What its files are now (inode, size, mtime): a channel made before a change uses the old ones."""
        return files_stamp(p for p in (self.ca_file, self.cert_file, self.key_file) if p is not None)


def files_stamp(paths: Iterable[Path]) -> tuple:
    """(inode, size, mtime) of each file, None for one that cannot be read: changes when a file is replaced."""
    stamps = []
    for path in paths:
        try:
            st = path.stat()
            stamps.append((st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            stamps.append(None)
    return tuple(stamps)


def channel(target: str, options: Options = (), tls: ClientTls | None = None) -> grpc.Channel:
    """A blocking channel to ``target``: TLS per ``tls``, plaintext when it is None or disabled.

    Raises:
        TlsError: a file of ``tls`` cannot be read or holds no PEM.
    """
    if tls is None or not tls.enabled:
        return grpc.insecure_channel(target, options=list(options))
    return grpc.secure_channel(target, _credentials(tls), options=_named(options, tls))


def check(tls: ClientTls, settings: str) -> None:
    """Read ``tls``'s files as a channel would, so that a process finds a bad file when it starts, not later in a
    background task; ``settings`` names the flags they came from, for the message.

    Raises:
        TlsError: a file cannot be read, holds no PEM, or the key is not the certificate's.
    """
    if tls.enabled:
        try:
            _credentials(tls)
        except TlsError as exc:
            raise TlsError(f"{settings}: {exc}") from exc


def aio_channel(target: str, options: Options = (), tls: ClientTls | None = None) -> grpc.aio.Channel:
    """An asyncio channel to ``target``, as ``channel``."""
    if tls is None or not tls.enabled:
        return grpc.aio.insecure_channel(target, options=list(options))
    return grpc.aio.secure_channel(target, _credentials(tls), options=_named(options, tls))


def add_port(server: grpc.Server | grpc.aio.Server, address: str, tls: ServerTls | None = None) -> int:
    """Bind ``address`` on ``server``, with TLS per ``tls``; returns the port (0 when it could not bind).

    Raises:
        TlsError: a file of ``tls`` cannot be read or holds no PEM.
    """
    if tls is None or not tls.enabled:
        return server.add_insecure_port(address)
    reloader = CertificateReloader(tls)
    credentials = grpc.dynamic_ssl_server_credentials(reloader.load(), reloader.fetch,
                                                      require_client_authentication=tls.require_client_cert)
    return server.add_secure_port(address, credentials)


class CertificateReloader:
    """The server's certificate configuration, read again when a file of it changes (size, mtime or inode).

    gRPC calls ``fetch`` before every new connection's handshake: a changed set of files is read and used from
    that handshake on; an unreadable one (a Secret caught half-written) is logged and the old one kept, and it
    is tried again at the next connection.
    """

    def __init__(self, tls: ServerTls) -> None:
        self.tls = tls
        self._seen = self._stamp()

    def _stamp(self) -> tuple:
        return files_stamp(self.tls.files().values())

    def load(self) -> grpc.ServerCertificateConfiguration:
        """The configuration from the files as they are now.

        Raises:
            TlsError: a file cannot be read or holds no PEM.
        """
        files = self.tls.files()
        ca = _pem(files["--tls-client-ca-file"], "--tls-client-ca-file") if self.tls.client_ca_file else None
        pair = (_pem(files["--tls-key-file"], "--tls-key-file"), _pem(files["--tls-cert-file"], "--tls-cert-file"))
        _check_pair(files["--tls-cert-file"], files["--tls-key-file"])
        return grpc.ssl_server_certificate_configuration([pair], root_certificates=ca)

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """A new configuration when the files changed since the last one read, else None (keep it)."""
        stamp = self._stamp()
        if stamp == self._seen:
            return None
        try:
            config = self.load()
        except TlsError as exc:
            log.warning("TLS files changed but cannot be used yet; serving with the previous ones: %s", exc)
            return None
        self._seen = stamp
        log.info("TLS certificate files changed: new connections use them (%s)",
                 ", ".join(str(p) for p in self.tls.files().values()))
        return config


def _check_pair(cert: Path, key: Path) -> None:
    """Raise ``TlsError`` unless ``key`` is the private key of the certificate in ``cert`` (a rotation caught
    between its two files would otherwise fail every handshake)."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise TlsError(f"--tls-cert-file {cert} and --tls-key-file {key} are no certificate and its key ({exc}): "
                       "give the key of that certificate (or wait for the Secret to finish updating)") from exc


def _credentials(tls: ClientTls) -> grpc.ChannelCredentials:
    key = _pem(tls.key_file, "the client key file") if tls.key_file else None
    chain = _pem(tls.cert_file, "the client certificate file") if tls.cert_file else None
    if tls.cert_file and tls.key_file:
        _check_pair(tls.cert_file, tls.key_file)
    return grpc.ssl_channel_credentials(_pem(tls.ca_file, "the CA file"), key, chain)


def _named(options: Options, tls: ClientTls) -> list[tuple[str, Any]]:
    if not tls.server_name:
        return list(options)
    return [*options, ("grpc.ssl_target_name_override", tls.server_name)]


def _pem(path: Path, setting_name: str) -> bytes:
    """The bytes of a PEM file; a missing, unreadable or non-PEM file raises ``TlsError`` naming the setting."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TlsError(f"{setting_name} {path}: cannot read it ({exc.strerror}): mount the certificate Secret "
                       "there or correct the path") from exc
    if b"-----BEGIN " not in data or b"-----END " not in data:
        raise TlsError(f"{setting_name} {path}: holds no complete PEM block: give a PEM file (or wait for the "
                       "Secret to finish updating)")
    return data
