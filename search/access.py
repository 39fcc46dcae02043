"""Who may write to the search collections (Index, Delete) and who may search them (Search, DescribeCollection).

A caller is named by its client certificate under mutual TLS (each subject alternative name, and the common
name, that ``context.auth_context()`` reports for the verified peer) or by a bearer token in the call's
metadata (``authorization: Bearer <token>``, for callers whose TLS ends before the router), which the tokens
file maps to a name. The operator lists the names allowed to write and to search; ``*`` admits anyone, even a
caller who presents no identity (the default for both, as before this module). A refusal is UNAUTHENTICATED
when the caller presented no identity the router can verify, PERMISSION_DENIED when its identity is not
listed, each naming what to present or which setting to change. Every write is logged with its caller's
identity on the ``ringserve.search.audit`` logger.
"""

from __future__ import annotations

import enum
import hmac
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from ringserve.contract.errors import ServiceError
from ringserve.contract.flags import setting

audit = logging.getLogger("ringserve.search.audit")
ANYONE = "*"
# The auth context's keys that name a verified peer certificate's subject.
CERTIFICATE_NAMES = ("x509_subject_alternative_name", "x509_common_name")


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


@dataclass(frozen=True)
class AccessConfig:
    writers: tuple[str, ...] = setting((ANYONE,), parse=_names, metavar="NAME,...",
                                       help="callers that may Index and Delete: client-certificate names (SAN or "
                                       "CN) or token names from --search-tokens-file; * admits anyone, "
                                       "even without an identity")
    readers: tuple[str, ...] = setting((ANYONE,), parse=_names, metavar="NAME,...",
                                       help="callers that may Search and DescribeCollection, named as for "
                                       "--search-writers; * admits anyone")
    tokens_file: Path | None = setting(None, help="file of 'NAME TOKEN' lines: a caller sending 'authorization: "
                                       "Bearer TOKEN' is NAME; re-read when it changes")

    def __post_init__(self) -> None:
        for flag, names in (("--search-writers", self.writers), ("--search-readers", self.readers)):
            if not names:
                raise ValueError(f"{flag} names no caller: give names, or * for anyone")


class Action(enum.Enum):
    WRITE = ("write to", "--search-writers")
    READ = ("search", "--search-readers")


class Unauthenticated(ServiceError):
    """The caller presented no identity this router can verify, and the action needs one."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(ServiceError):
    """The caller's identity is not among those the operator allows for the action."""

    code = grpc.StatusCode.PERMISSION_DENIED


class AccessError(ServiceError):
    """The tokens file cannot be read or a line of it is malformed: the router does not start with it."""


@dataclass(frozen=True)
class Caller:
    """Who called: every name it proved, and how (for the audit log)."""

    names: tuple[str, ...]
    how: str

    def __str__(self) -> str:
        return f"{'/'.join(self.names) or 'anonymous'} ({self.how})"


class Access:
    """The operator's lists and the tokens file; ``check`` says who the caller is, or refuses it."""

    def __init__(self, config: AccessConfig) -> None:
        self.config = config
        self._tokens = TokenFile(config.tokens_file) if config.tokens_file is not None else None

    def check(self, context: grpc.aio.ServicerContext, action: Action, collection: str = "") -> Caller:
        """The caller, if it may do ``action``.

        Raises:
            Unauthenticated: it presented no verifiable identity (or an unknown token), and ``action`` needs one.
            PermissionDenied: its identity is not listed for ``action``.
        """
        allowed = self.config.writers if action is Action.WRITE else self.config.readers
        caller, token_refused = self.caller(context)
        if ANYONE in allowed or set(caller.names) & set(allowed):
            return caller
        verb, flag = action.value
        where = f" collection {collection!r}" if collection else ""
        if token_refused:
            raise Unauthenticated(f"the bearer token is not one of this router's (--search-tokens-file): send a "
                                  f"current token to {verb}{where}")
        if not caller.names:
            raise Unauthenticated(f"no identity presented: to {verb}{where} present a client certificate (mutual TLS) "
                                  "or a bearer token as 'authorization: Bearer <token>' metadata (ringserve "
                                  "--token-file); this router admits only the callers named in its " + flag)
        raise PermissionDenied(f"{caller} may not {verb}{where}: the operator must add one of its names to the "
                               f"router's {flag}")

    def caller(self, context: grpc.aio.ServicerContext) -> tuple[Caller, bool]:
        """Every name the caller proved, and whether it sent a bearer token this router does not know."""
        auth = context.auth_context() or {}
        names = [value.decode(errors="replace") for key in CERTIFICATE_NAMES for value in auth.get(key, ())]
        how = ["client certificate"] if names else []
        token = bearer_token(context.invocation_metadata() or ())
        refused = False
        if token is not None:
            name = self._tokens.name_of(token) if self._tokens is not None else None
            refused = name is None
            if name is not None:
                names.append(name)
                how.append("bearer token")
        return Caller(tuple(dict.fromkeys(names)), " and ".join(how) or "no identity"), refused


def bearer_token(metadata: Any) -> str | None:
    """The token of an ``authorization: Bearer <token>`` metadata entry, if there is one."""
    for key, value in metadata:
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


class TokenFile:
    """``NAME TOKEN`` lines (``#`` comments), read at start and again whenever the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._tokens: list[tuple[str, bytes]] = []
        self._reload()

    def name_of(self, token: str) -> str | None:
        """The name whose token this is, compared in constant time with every token; None: no one's."""
        self._reload_if_changed()
        presented, found = token.encode(), None
        for name, known in self._tokens:
            if hmac.compare_digest(presented, known):
                found = name
        return found

    def _reload_if_changed(self) -> None:
        try:
            changed = self._stat() != self._stamp
        except OSError as exc:
            audit.warning("tokens file %s cannot be read (%s): the tokens read before stay in force", self.path, exc)
            return
        if changed:
            try:
                self._reload()
            except AccessError as exc:
                audit.warning("%s: the tokens read before stay in force", exc)

    def _stat(self) -> tuple[int, int, int]:
        st = self.path.stat()
        return st.st_ino, st.st_size, st.st_mtime_ns

    def _reload(self) -> None:
        """Read the file; raises ``AccessError`` naming the file and line that cannot be used."""
        try:
            stamp, text = self._stat(), self.path.read_text()
        except OSError as exc:
            raise AccessError(f"--search-tokens-file {self.path}: cannot read it ({exc.strerror}): mount the tokens "
                              "Secret there or correct the path") from exc
        tokens = []
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) != 2:
                raise AccessError(f"--search-tokens-file {self.path} line {number}: expected 'NAME TOKEN' (two words)")
            tokens.append((parts[0], parts[1].encode()))
        self._tokens, self._stamp = tokens, stamp
        audit.info("tokens file %s: %d tokens", self.path, len(tokens))
