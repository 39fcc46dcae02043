"""The Python client of ringserve: ``Client`` (blocking) and ``AsyncClient`` (asyncio).

Installs and imports without torch: ``pip install ringserve``.
"""

from ringserve.client.aio import AsyncClient
from ringserve.client.config import ClientConfig
from ringserve.client.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    InvalidImage,
    NotFound,
    Overloaded,
    RingserveError,
    ServerError,
    Unavailable,
)
from ringserve.client.results import Classification, Feature, Provenance
from ringserve.client.search import CollectionInfo, Hit, Indexed, SearchResult
from ringserve.client.sync import Client

__all__ = [
    "AsyncClient",
    "Classification",
    "Client",
    "ClientConfig",
    "CollectionInfo",
    "DeadlineExceeded",
    "FailedPrecondition",
    "Feature",
    "Hit",
    "Indexed",
    "InvalidArgument",
    "InvalidImage",
    "NotFound",
    "Overloaded",
    "Provenance",
    "RingserveError",
    "SearchResult",
    "ServerError",
    "Unavailable",
]
