"""The client's settings: one dataclass, passed to every call it makes."""

from __future__ import annotations

from dataclasses import dataclass

from ringserve.client import errors
from ringserve.contract import arguments
from ringserve.contract.backoff import backoff_s
from ringserve.contract.v1 import inference_pb2 as pb

CACHE_MODES = {"exact": pb.CACHE_MODE_EXACT, "perceptual": pb.CACHE_MODE_PERCEPTUAL, "bypass": pb.CACHE_MODE_BYPASS}


@dataclass(frozen=True)
class ClientConfig:
    target: str = "localhost:50051"
    # Deadline of one call (all its images, every re-send included), in seconds; None for none.
    timeout_s: float | None = 120.0
    # Items sent and not yet answered, per stream.
    window: int = 64
    # Re-sends of items the server could not take (UNAVAILABLE), with exponential backoff.
    retries: int = 5
    backoff_s: float = 0.1
    backoff_max_s: float = 2.0
    # Compute the pHash routing hint here, so a router need not decode the image.
    hints: bool = True
    # Many items per message (ExtractFrames, ClassifyFrames); off, or against a server without them,
    # one item per message.
    frames: bool = True
    model: str = ""
    # "exact", "perceptual" or "bypass"; None leaves it to the server.
    cache_mode: str | None = None
    radius: int | None = None

    def __post_init__(self) -> None:
        check_cache_mode(self.cache_mode)
        if self.radius is not None:
            errors.checked(arguments.check_radius, self.radius)

    def backoff(self, retry: int) -> float:
        """Seconds to wait before re-send number ``retry`` (1, 2, ...): ``contract.backoff`` from ``backoff_s``
        up to ``backoff_max_s``."""
        return backoff_s(retry, self.backoff_s, self.backoff_max_s)


def check_cache_mode(mode: str | None) -> None:
    """None (the server's choice) or one of ``CACHE_MODES``; raises ``InvalidArgument`` naming them."""
    if mode is not None and mode not in CACHE_MODES:
        raise errors.InvalidArgument(f"cache_mode must be one of {', '.join(CACHE_MODES)}; got {mode!r}",
                                     argument="cache_mode")
