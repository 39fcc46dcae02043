"""Certificates for tests: a throwaway CA, and server or client certificates it signs (the ``openssl`` command).

Any test that needs TLS makes its own in its tmp folder, so nothing is committed and nothing expires
between runs. ``make_cert(..., expired=True)`` is a certificate whose validity ended years ago (signed
with ``openssl ca``, which alone can set the dates), to show a peer refuses it. Keys are EC P-256:
quick to make, and accepted by OpenSSL-based servers (redis-server) and gRPC alike.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

VALID = ("20200101000000Z", "20991231235959Z")
EXPIRED = ("20200101000000Z", "20200102000000Z")
DEFAULT_SANS = ("localhost", "127.0.0.1")


@dataclass(frozen=True)
class CA:
    """A certificate authority: its certificate (what a peer trusts) and key (what signs)."""

    name: str
    cert: Path
    key: Path


@dataclass(frozen=True)
class Cert:
    """A certificate signed by ``ca``, its key, and the CA's certificate (what its peer must trust)."""

    name: str
    cert: Path
    key: Path
    ca: CA


def make_ca(dir: Path, name: str) -> CA:
    """A self-signed CA in ``dir`` (``<name>.pem``, ``<name>.key``), valid until 2099."""
    dir.mkdir(parents=True, exist_ok=True)
    ca = CA(name, dir / f"{name}.pem", dir / f"{name}.key")
    _openssl("req", "-x509", *_new_key(ca.key), "-subj", f"/CN={name}", "-days", "3650", "-out", str(ca.cert),
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return ca


def make_cert(ca: CA, dir: Path, name: str, sans: Sequence[str] = DEFAULT_SANS, client: bool = False,
              expired: bool = False) -> Cert:
    """A certificate for ``name`` signed by ``ca``, in ``dir`` (``<name>.pem``, ``<name>.key``).

    Args:
        ca: the signer, from ``make_cert``'s sibling ``make_ca``.
        dir: where the files go (made if missing).
        name: the subject's CN (a client's identity under mutual TLS) and the files' stem.
        sans: subject alternative names; an IP address becomes an IP entry, anything else a DNS one.
        client: a client-only certificate (extendedKeyUsage clientAuth); otherwise it serves
            serverAuth and clientAuth, so one process can both serve and call with it.
        expired: valid for one day in 2020 only.

    Returns:
        The certificate, its key and its CA.
    """
    dir.mkdir(parents=True, exist_ok=True)
    cert = Cert(name, dir / f"{name}.pem", dir / f"{name}.key", ca)
    request = dir / f"{name}.csr"
    _openssl("req", "-new", *_new_key(cert.key), "-subj", f"/CN={name}", "-out", str(request))
    extensions = dir / f"{name}.ext"
    usage = "clientAuth" if client else "serverAuth,clientAuth"
    alt = ",".join(_san(s) for s in sans)
    extensions.write_text("[ext]\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,"
                          f"keyEncipherment\nextendedKeyUsage={usage}\n" + (f"subjectAltName={alt}\n" if alt else ""))
    start, end = EXPIRED if expired else VALID
    _openssl("ca", "-batch", "-config", str(_ca_config(ca)), "-cert", str(ca.cert), "-keyfile", str(ca.key),
             "-in", str(request), "-out", str(cert.cert), "-startdate", start, "-enddate", end, "-notext",
             "-rand_serial", "-extfile", str(extensions), "-extensions", "ext")
    return cert


def _new_key(key: Path) -> list[str]:
    return ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key)]


def _san(name: str) -> str:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return f"DNS:{name}"
    return f"IP:{name}"


def _ca_config(ca: CA) -> Path:
    """The smallest ``openssl ca`` configuration: a database beside the CA's files, any subject accepted."""
    base = ca.cert.with_suffix("")
    config = base.with_suffix(".cnf")
    if not config.exists():
        base.with_suffix(".index").touch()
        config.write_text(
            "[ca]\ndefault_ca = own\n[own]\n"
            f"database = {base.with_suffix('.index')}\nserial = {base.with_suffix('.serial')}\n"
            f"new_certs_dir = {ca.cert.parent}\n"
            "default_md = sha256\npolicy = any\nunique_subject = no\ncopy_extensions = none\n"
            "[any]\ncommonName = supplied\n")
    return config


def _openssl(*args: str) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        raise RuntimeError("tests/certs.py needs the openssl command: apt-get install openssl")
    out = subprocess.run([binary, *args], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed ({out.returncode}): {out.stderr.strip()[-800:]}")
