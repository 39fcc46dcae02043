"""The node's settings that parsing its flags needs, free of torch so that flags are parsed and checked
without loading a model: which model, what the cache serves by default, and the limits of a request."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from ringserve.contract.arguments import MAX_RADIUS
from ringserve.contract.images import ImageLimits
from ringserve.contract.v1 import inference_pb2 as pb

EFFICIENTNET_LITE0 = "efficientnet_lite0"


class CacheMode(StrEnum):
    """What a request that sets no cache policy gets (bypass is per request only)."""

    EXACT = "exact"
    PERCEPTUAL = "perceptual"

    @property
    def wire(self) -> int:
        return pb.CACHE_MODE_PERCEPTUAL if self is CacheMode.PERCEPTUAL else pb.CACHE_MODE_EXACT


@dataclass(frozen=True)
class PolicyConfig:
    """What a request that leaves its cache policy unset gets, and the most it may ask for."""

    default_mode: CacheMode = CacheMode.EXACT
    default_radius: int = 4
    max_radius: int = 8
    # Write every computed feature's fingerprint to Redis (a pointer and four index sets, about 1.2 KB) so any
    # node finds it perceptually, and keep its perceptual twin in L1 (the verifier and bookkeeping, 968 bytes with
    # mobilenet_v3_small). Off, only items that ask for CACHE_MODE_PERCEPTUAL write theirs; on by itself where
    # perceptual is the default mode.
    perceptual_index: bool = False
    # Answer items that name their image by digest and carry none (ImageRequest.digest) from the caches. Such a
    # lookup tells a caller who knows a digest whether the image was seen, and its feature; off, every such item
    # is answered image_required.
    digest_lookups: bool = True
    # A near match is served only when the thumbnails of the two images (server/verifier.py) agree at least this
    # well, as PSNR in dB. 60 was calibrated on half of the study's photos (docs/fidelity.md); on the other half
    # every near match it served had cosine >= 0.99 to the image's own feature, none was another picture's, and
    # 0.90 kept the top-1 (serving exactly the variants within cosine 0.99 would keep 0.895).
    verify_min_psnr: float = 60.0

    @property
    def writes_fingerprints(self) -> bool:
        """Whether every computed feature's fingerprint goes to L2 (and its twin to L1), whatever the item asked."""
        return self.perceptual_index or self.default_mode is CacheMode.PERCEPTUAL

    def __post_init__(self) -> None:
        if not 0 <= self.default_radius <= self.max_radius <= MAX_RADIUS:
            raise ValueError(f"need 0 <= default radius <= max radius <= {MAX_RADIUS}")


@dataclass(frozen=True)
class NodeLimits:
    images: ImageLimits = ImageLimits()
    # Items admitted at once, across all streams; past it items fail fast with RESOURCE_EXHAUSTED.
    max_inflight: int = 512
    max_top_k: int = 100


@dataclass(frozen=True)
class ModelConfig:
    name: str = "mobilenet_v3_small"
    # A state_dict file, or a folder holding <name>.pth; None means random weights from `seed`.
    weights: Path | None = None
    seed: int = 0
    # "auto" picks CUDA when present (with float16 compute), else the CPU.
    device: str = "auto"
    # dtype of the canonical feature: what is cached, returned and fed to the head.
    feature_dtype: str = "float16"
    # Decode every pixel of a miss, instead of a JPEG's smallest DCT scale that covers the model's resize.
    full_decode: bool = False
