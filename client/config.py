"""The client's settings: one dataclass, passed to every call it makes; its fields are also the ``ringserve``
command's shared flags (``contract.flags``: ``timeout_s`` is ``--timeout-s`` and ``RINGSERVE_CLIENT_TIMEOUT_S``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ringserve.client import errors
from ringserve.contract import arguments
from ringserve.contract.backoff import backoff_s
from ringserve.contract.flags import setting
from ringserve.contract.tls import ClientTls
from ringserve.contract.v1 import inference_pb2 as pb

# The default of ``digest_first_min_bytes`` (bench/results/digest_first.md, through a cluster on loopback): from
# 90 KB up a hit is 2.55-8.635x the items/s with 0.076-0.384 of the router's CPU, and 92 % repeats 1.056-1.269x
# and all distinct 0.839-1.073x by a fresh client (the extra round trip of a miss, within the runs' spread); at
# 27 KB and below hits gain 1.447-1.632x but 92 % repeats 0.917-1.149x, so small images go with their bytes.
DIGEST_FIRST_MIN_BYTES = 64 * 1024
# The default of ``digest_first_min_hit_ratio``: under 1 hit in 10, digest-first costs a round trip on 9 items to
# spare the bytes of one, and loses at every size measured (bench/results/digest_first.md, all CPU per hit on
# loopback: digest-first pays above a hit ratio of about 0.108 at 2.5 MB, 0.222 at 483 KB, 0.403 at 90 KB); it is kept
# from 0.1 up since on a real network the bytes it spares cost more than on loopback.
DIGEST_FIRST_MIN_HIT_RATIO = 0.1
# Who places an item on the ring: the router (every item goes through it), or the client itself, which sends an
# item with a hint straight to its owner among the router's members (client/placement.py). "router" by default:
# client placement needs every node's address reachable from the caller, the router's hedging of a frozen node is
# lost on the direct path. Its speed: bench/results/hotpath.md ("the Python client's L1 hits"), and issue 17's
# notes.
PLACEMENTS = ("router", "client")
CACHE_MODES = {"exact": pb.CACHE_MODE_EXACT, "perceptual": pb.CACHE_MODE_PERCEPTUAL, "bypass": pb.CACHE_MODE_BYPASS}


class Secret(str):
    """A string a config's repr never shows (it prints ``***``); ``str`` and f-strings still give the value, so
    never format one into a log line or a message."""

    def __repr__(self) -> str:
        return "'***'"


@dataclass(frozen=True)
class ClientConfig:
    target: str = setting("localhost:50051", help="host:port of a router or a node")
    tls: ClientTls = setting(ClientTls(), prefix="tls-", group="TLS (docs/deploy.md)")
    # Who this caller is to a router that limits search writes (or searches) by bearer token (docs/deploy.md).
    token: Secret | None = setting(None, parse=Secret, help="bearer token sent with search calls; prefer the "
                                   "environment or --token-file, since a flag shows in the process list")
    token_file: Path | None = setting(None, help="file holding the bearer token sent with search calls")
    # Deadline of one call (all its images, every re-send included), in seconds; None for none.
    timeout_s: float | None = setting(120.0, help="deadline of one call, all its images and re-sends, in seconds")
    # Items sent and not yet answered, per stream.
    window: int = setting(64, help="images in flight at once, per stream")
    # Re-sends of items the server could not take (UNAVAILABLE), with exponential backoff.
    retries: int = setting(5, help="re-sends of an image the server could not take (UNAVAILABLE)")
    backoff_s: float = setting(0.1, help="seconds before the first re-send, doubled per re-send")
    backoff_max_s: float = setting(2.0, help="longest pause between re-sends")
    # Compute the pHash routing hint here, so a router need not decode the image.
    hints: bool = setting(True, help="compute the pHash routing hint here, so a router need not decode the image")
    # Many items per message (ExtractFrames, ClassifyFrames); off, or against a server without them,
    # one item per message.
    frames: bool = setting(True, help="send many images per message where the server can take them")
    # Every call's items on one long-lived frame stream per method (client/shared.py), as a router carries its
    # callers' items to a node; off: a stream per call. A call whose caller traces keeps a stream of its own.
    shared_stream: bool = setting(True, help="carry every call's images on one long-lived stream per method, "
                                  "which spares each call a stream of its own; off: a stream per call")
    # Images of at least this many bytes go digest-first: named by their digest, their bytes sent only if the
    # server has no answer for them (client/digests.py; bench/results/digest_first.md for the default); None:
    # never.
    digest_first_min_bytes: int | None = setting(DIGEST_FIRST_MIN_BYTES, help="images of at least this size (bytes, "
                                                 "or 64K, 1M) are sent as their digest first and their bytes only "
                                                 "if the server lacks them; empty: never")
    # Digest-first only while it pays: while fewer than this share of the recent answers to such images were cache
    # hits, their bytes go at once (client/digests.py; DIGEST_FIRST_MIN_HIT_RATIO above for the default).
    digest_first_min_hit_ratio: float = setting(DIGEST_FIRST_MIN_HIT_RATIO, help="send images digest-first only while "
                                                "at least this share (0 to 1) of the recent answers to them were "
                                                "cache hits; 0: whatever the answers")
    # "router" or "client" (PLACEMENTS above: why the router by default).
    placement: str = setting("router", choices=PLACEMENTS, help="who places an item on the ring: the router, or this "
                             "client, which sends an item with a hint straight to its node (the target must be a "
                             "router, and every node reachable from here)")
    members_interval_s: float = setting(5.0, help="seconds between reads of the router's members, for --placement "
                                        "client")
    model: str = setting("", help="model name; empty: the server's default")
    # "exact", "perceptual" or "bypass"; None leaves it to the server.
    cache_mode: str | None = setting(None, choices=tuple(CACHE_MODES), help="cache policy; none: the server's")
    radius: int | None = setting(None, help=f"Hamming radius for --cache-mode perceptual (0 to "
                                 f"{arguments.MAX_RADIUS}; a node may allow less); none: the server's")

    def __post_init__(self) -> None:
        check_cache_mode(self.cache_mode)
        if self.radius is not None:
            errors.checked(arguments.check_radius, self.radius)
        errors.checked(arguments.check_count, "window", self.window, 1)
        errors.checked(arguments.check_count, "retries", self.retries, 0)
        if self.digest_first_min_bytes is not None:
            errors.checked(arguments.check_count, "digest_first_min_bytes", self.digest_first_min_bytes, 0, 2**63)
        if not 0 <= self.digest_first_min_hit_ratio <= 1:
            raise errors.InvalidArgument(f"digest_first_min_hit_ratio must be a share from 0 to 1; got "
                                         f"{self.digest_first_min_hit_ratio}", argument="digest_first_min_hit_ratio")
        if self.token is not None and self.token_file is not None:
            raise errors.InvalidArgument("give the bearer token once: token or token_file, not both", argument="token")
        if self.token is not None and not isinstance(self.token, Secret):  # given in code: never shown either
            object.__setattr__(self, "token", Secret(self.token))
        if self.placement not in PLACEMENTS:
            raise errors.InvalidArgument(f"placement must be one of {', '.join(PLACEMENTS)}; got {self.placement!r}",
                                         argument="placement")
        if not self.members_interval_s > 0:
            raise errors.InvalidArgument(f"members_interval_s must be a number of seconds above 0; got "
                                         f"{self.members_interval_s}", argument="members_interval_s")
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise errors.InvalidArgument(f"timeout_s must be a number of seconds above 0, or none; got {self.timeout_s}",
                                         argument="timeout_s")

    def bearer_token(self) -> str | None:
        """The token to send, read from ``token_file`` at each call (so a rotated file is used); None: none.

        Raises:
            InvalidArgument: ``token_file`` cannot be read or is empty.
        """
        if self.token_file is None:
            return self.token or None
        try:
            token = self.token_file.read_text().strip()
        except OSError as exc:
            raise errors.InvalidArgument(f"token_file {self.token_file}: cannot read it ({exc.strerror}); correct "
                                         "--token-file", argument="token_file") from exc
        if not token:
            raise errors.InvalidArgument(f"token_file {self.token_file} is empty: write the token into it",
                                         argument="token_file")
        return token

    def backoff(self, retry: int) -> float:
        """Seconds to wait before re-send number ``retry`` (1, 2, ...): ``contract.backoff`` from ``backoff_s``
        up to ``backoff_max_s``."""
        return backoff_s(retry, self.backoff_s, self.backoff_max_s)


def check_cache_mode(mode: str | None) -> None:
    """None (the server's choice) or one of ``CACHE_MODES``; raises ``InvalidArgument`` naming them."""
    if mode is not None and mode not in CACHE_MODES:
        raise errors.InvalidArgument(f"cache_mode must be one of {', '.join(CACHE_MODES)}; got {mode!r}",
                                     argument="cache_mode")
