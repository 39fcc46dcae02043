from ringserve.contract.v1 import inference_pb2 as _inference_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class IndexRequest(_message.Message):
    __slots__ = ("request_id", "collection", "id", "image", "model", "digest")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    collection: str
    id: str
    image: bytes
    model: str
    digest: _inference_pb2.ImageDigest
    def __init__(self, request_id: _Optional[str] = ..., collection: _Optional[str] = ..., id: _Optional[str] = ..., image: _Optional[bytes] = ..., model: _Optional[str] = ..., digest: _Optional[_Union[_inference_pb2.ImageDigest, _Mapping]] = ...) -> None: ...

class IndexReply(_message.Message):
    __slots__ = ("request_id", "id", "status", "model_version", "image_required")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    id: str
    status: _inference_pb2.ItemStatus
    model_version: str
    image_required: bool
    def __init__(self, request_id: _Optional[str] = ..., id: _Optional[str] = ..., status: _Optional[_Union[_inference_pb2.ItemStatus, _Mapping]] = ..., model_version: _Optional[str] = ..., image_required: _Optional[bool] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("collection", "image", "id", "k", "max_distance", "model")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    MAX_DISTANCE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    collection: str
    image: bytes
    id: str
    k: int
    max_distance: int
    model: str
    def __init__(self, collection: _Optional[str] = ..., image: _Optional[bytes] = ..., id: _Optional[str] = ..., k: _Optional[int] = ..., max_distance: _Optional[int] = ..., model: _Optional[str] = ...) -> None: ...

class Hit(_message.Message):
    __slots__ = ("id", "score", "distance")
    ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    id: str
    score: float
    distance: int
    def __init__(self, id: _Optional[str] = ..., score: _Optional[float] = ..., distance: _Optional[int] = ...) -> None: ...

class SearchReply(_message.Message):
    __slots__ = ("nearest", "duplicates", "model_version", "stale_ms", "query_low_information")
    NEAREST_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    STALE_MS_FIELD_NUMBER: _ClassVar[int]
    QUERY_LOW_INFORMATION_FIELD_NUMBER: _ClassVar[int]
    nearest: _containers.RepeatedCompositeFieldContainer[Hit]
    duplicates: _containers.RepeatedCompositeFieldContainer[Hit]
    model_version: str
    stale_ms: int
    query_low_information: bool
    def __init__(self, nearest: _Optional[_Iterable[_Union[Hit, _Mapping]]] = ..., duplicates: _Optional[_Iterable[_Union[Hit, _Mapping]]] = ..., model_version: _Optional[str] = ..., stale_ms: _Optional[int] = ..., query_low_information: _Optional[bool] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("collection", "ids", "all")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: _containers.RepeatedScalarFieldContainer[str]
    all: bool
    def __init__(self, collection: _Optional[str] = ..., ids: _Optional[_Iterable[str]] = ..., all: _Optional[bool] = ...) -> None: ...

class DeleteReply(_message.Message):
    __slots__ = ("deleted", "missing")
    DELETED_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    missing: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, deleted: _Optional[int] = ..., missing: _Optional[_Iterable[str]] = ...) -> None: ...

class DescribeCollectionRequest(_message.Message):
    __slots__ = ("collection",)
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    collection: str
    def __init__(self, collection: _Optional[str] = ...) -> None: ...

class CollectionInfo(_message.Message):
    __slots__ = ("collection", "model", "model_version", "dim", "entries", "stale_ms")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    STALE_MS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    model: str
    model_version: str
    dim: int
    entries: int
    stale_ms: int
    def __init__(self, collection: _Optional[str] = ..., model: _Optional[str] = ..., model_version: _Optional[str] = ..., dim: _Optional[int] = ..., entries: _Optional[int] = ..., stale_ms: _Optional[int] = ...) -> None: ...
