"""How long to wait before a try is made again: one formula for the client and the router.

Doubling from a base up to a ceiling, jittered down by up to half (Envoy's and gRPC's retry back-off),
so that callers that failed together do not come back together.
"""

from __future__ import annotations

import random


def backoff_s(retry: int, base_s: float, max_s: float) -> float:
    """Seconds before try number ``retry`` + 1 (``retry`` 1 is the first re-send): ``base_s * 2**(retry - 1)``,
    at most ``max_s``, times a uniform 0.5 to 1."""
    return min(max_s, base_s * 2 ** (retry - 1)) * random.uniform(0.5, 1.0)
