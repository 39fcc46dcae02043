"""Turning what a caller holds (a path, bytes, a PIL image, an array) into request bytes and a hint."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from ringserve.contract import fingerprint
from ringserve.contract.images import ImageError

ImageInput = str | os.PathLike | bytes | bytearray | memoryview | Image.Image | np.ndarray
# Bytes a call digests on the caller's event loop rather than in a thread: BLAKE3 takes about 50 us for this
# many on these machines, about what a hop to a thread and back costs the loop (a hit's whole client cost is a
# few hundred us, so the hop mattered). More than this per call, and any decode, go to threads, so one call of
# many images does not hold up the loop's other calls.
INLINE_DIGEST_BYTES = 256 * 1024


def to_bytes(image: ImageInput) -> bytes:
    """Encoded bytes to send; in-memory pixels are sent as lossless PNG."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    if isinstance(image, (str, os.PathLike)):
        return Path(image).read_bytes()
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    if isinstance(image, Image.Image):
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return buf.getvalue()
    raise TypeError(f"cannot send {type(image).__name__} as an image: pass a path, bytes, a PIL image or an array")


def hint(data: bytes, memo: fingerprint.Memo | None = None) -> int | None:
    """The routing hint for these bytes, or None when they do not decode (the server will say why).

    With a ``memo``, bytes seen before cost a digest instead of a decode.
    """
    try:
        return memo.phash_bytes(data) if memo is not None else fingerprint.phash_bytes(data)
    except ImageError:
        return None


def identify_inline(datas: list[bytes], memo: fingerprint.Memo, hints: bool,
                    named: list[bool | None]) -> list[tuple[bytes | None, int | None] | None]:
    """``identify``'s answer for each of ``datas`` that needs no decode, while the call's digests here stay within
    ``INLINE_DIGEST_BYTES``; None for each that must go to a thread."""
    budget = INLINE_DIGEST_BYTES
    out: list[tuple[bytes | None, int | None] | None] = []
    for data, name in zip(datas, named, strict=True):
        cost = len(data) if hints or name is not False else 0  # bytes to digest here
        if cost > budget:
            out.append(None)
            continue
        budget -= cost
        out.append(identify(data, memo, hints, name, decode=False))
    return out


def identify(data: bytes, memo: fingerprint.Memo, hints: bool, named: bool | None,
             decode: bool = True) -> tuple[bytes | None, int | None] | None:
    """The digest of ``data`` if it goes digest-first (``named``; None: if ``memo`` knows these bytes, that is the
    client sent them before) and its routing hint (if ``hints``; None when it does not decode); None instead,
    without ``decode``, where the hint would need a decode.

    One digest serves both: it is also the key of ``memo``, so bytes seen before cost no decode. An image that
    goes digest-first (``named``) gets a hint only from ``memo``: a hit must not pay the decode it exists to
    save (most of a hit's CPU at 12 MP); the router places it by the fingerprint it remembers for the digest,
    and fingerprints the bytes itself if the server asks for them.
    """
    if not (hints or named is not False):
        return None, None
    key = fingerprint.digest(data)
    found = memo.get(key) if hints or named is None else None  # a named image without hints needs no memo
    if named is None:
        named = found is not None
    phash = None
    if hints:
        if found is None and not named:
            if not decode:
                return None
            try:
                found = fingerprint.of_bytes(data)
            except ImageError:
                found = None
            else:
                memo.remember(key, found)
        phash = found.phash if found is not None else None
    return (key if named else None), phash
