"""Cache keys: an exact digest of the bytes and a perceptual fingerprint, namespaced by model.

The namespace carries the model's name and weights digest, so features of a
new model version can never be served for an old one, and the reverse.
"""

from __future__ import annotations

from dataclasses import dataclass

from ringserve.contract import fingerprint
from ringserve.contract.fingerprint import to_hex


def exact_digest(data: bytes) -> str:
    """The exact key's name for the encoded bytes: their BLAKE3-128 (``fingerprint.digest``) and their length,
    as ``named`` spells them. Needs no decoding, so it is checked first."""
    return named(fingerprint.digest(data), len(data))


def named(blake3_128: bytes, size_bytes: int) -> str:
    """The exact key's name for bytes known by their digest and length (a digest-first item's
    ``ImageDigest``): hash and size together, as a content-addressed store names a blob."""
    return f"{blake3_128.hex()}-{size_bytes}"


@dataclass(frozen=True)
class Namespace:
    """All keys of one model version share this prefix."""

    model: str
    version: str
    prefix: str = "rs"

    @property
    def root(self) -> str:
        return f"{self.prefix}:{self.model}:{self.version}"

    def exact(self, digest: str) -> str:
        return f"{self.root}:x:{digest}"

    def perceptual(self, phash: int) -> str:
        """Where a fingerprint points to the exact digest whose feature it has (in L2; L1 holds the feature
        itself): the feature is stored once. The fingerprint's version is in the key, so rules never mix; the
        ``r`` says its value is a reference (an earlier layout held a second copy of the feature)."""
        return f"{self.root}:r{fingerprint.VERSION}:{to_hex(phash)}"

    def chunk(self, index: int, value: int) -> str:
        """Set of full pHashes whose chunk ``index`` equals ``value`` (multi-index hashing)."""
        return f"{self.root}:m{fingerprint.VERSION}.{index}:{value:04x}"

    def lock(self, digest: str) -> str:
        return f"{self.root}:lock:{digest}"
