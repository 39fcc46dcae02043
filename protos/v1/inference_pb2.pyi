from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CacheMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CACHE_MODE_UNSPECIFIED: _ClassVar[CacheMode]
    CACHE_MODE_EXACT: _ClassVar[CacheMode]
    CACHE_MODE_PERCEPTUAL: _ClassVar[CacheMode]
    CACHE_MODE_BYPASS: _ClassVar[CacheMode]

class Source(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SOURCE_UNSPECIFIED: _ClassVar[Source]
    SOURCE_L1: _ClassVar[Source]
    SOURCE_L2: _ClassVar[Source]
    SOURCE_COMPUTED: _ClassVar[Source]
CACHE_MODE_UNSPECIFIED: CacheMode
CACHE_MODE_EXACT: CacheMode
CACHE_MODE_PERCEPTUAL: CacheMode
CACHE_MODE_BYPASS: CacheMode
SOURCE_UNSPECIFIED: Source
SOURCE_L1: Source
SOURCE_L2: Source
SOURCE_COMPUTED: Source

class CachePolicy(_message.Message):
    __slots__ = ("mode", "max_distance")
    MODE_FIELD_NUMBER: _ClassVar[int]
    MAX_DISTANCE_FIELD_NUMBER: _ClassVar[int]
    mode: CacheMode
    max_distance: int
    def __init__(self, mode: _Optional[_Union[CacheMode, str]] = ..., max_distance: _Optional[int] = ...) -> None: ...

class ImageRequest(_message.Message):
    __slots__ = ("request_id", "image", "model", "phash_hint", "cache_policy", "top_k", "trace_context", "timeout_ms", "digest")
    class TraceContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PHASH_HINT_FIELD_NUMBER: _ClassVar[int]
    CACHE_POLICY_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    TRACE_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    image: bytes
    model: str
    phash_hint: int
    cache_policy: CachePolicy
    top_k: int
    trace_context: _containers.ScalarMap[str, str]
    timeout_ms: int
    digest: ImageDigest
    def __init__(self, request_id: _Optional[str] = ..., image: _Optional[bytes] = ..., model: _Optional[str] = ..., phash_hint: _Optional[int] = ..., cache_policy: _Optional[_Union[CachePolicy, _Mapping]] = ..., top_k: _Optional[int] = ..., trace_context: _Optional[_Mapping[str, str]] = ..., timeout_ms: _Optional[int] = ..., digest: _Optional[_Union[ImageDigest, _Mapping]] = ...) -> None: ...

class ImageDigest(_message.Message):
    __slots__ = ("blake3_128", "size_bytes")
    BLAKE3_128_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    blake3_128: bytes
    size_bytes: int
    def __init__(self, blake3_128: _Optional[bytes] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class ItemStatus(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class Provenance(_message.Message):
    __slots__ = ("source", "node", "model", "model_version", "perceptual", "distance", "low_information", "verified", "verifier_score", "placement_key")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    PERCEPTUAL_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    LOW_INFORMATION_FIELD_NUMBER: _ClassVar[int]
    VERIFIED_FIELD_NUMBER: _ClassVar[int]
    VERIFIER_SCORE_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_KEY_FIELD_NUMBER: _ClassVar[int]
    source: Source
    node: str
    model: str
    model_version: str
    perceptual: bool
    distance: int
    low_information: bool
    verified: bool
    verifier_score: float
    placement_key: int
    def __init__(self, source: _Optional[_Union[Source, str]] = ..., node: _Optional[str] = ..., model: _Optional[str] = ..., model_version: _Optional[str] = ..., perceptual: _Optional[bool] = ..., distance: _Optional[int] = ..., low_information: _Optional[bool] = ..., verified: _Optional[bool] = ..., verifier_score: _Optional[float] = ..., placement_key: _Optional[int] = ...) -> None: ...

class Tensor(_message.Message):
    __slots__ = ("data", "dtype", "shape")
    DATA_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, data: _Optional[bytes] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class ExtractReply(_message.Message):
    __slots__ = ("request_id", "status", "feature", "provenance", "image_required")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    status: ItemStatus
    feature: Tensor
    provenance: Provenance
    image_required: bool
    def __init__(self, request_id: _Optional[str] = ..., status: _Optional[_Union[ItemStatus, _Mapping]] = ..., feature: _Optional[_Union[Tensor, _Mapping]] = ..., provenance: _Optional[_Union[Provenance, _Mapping]] = ..., image_required: _Optional[bool] = ...) -> None: ...

class ClassScore(_message.Message):
    __slots__ = ("index", "name", "score")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    index: int
    name: str
    score: float
    def __init__(self, index: _Optional[int] = ..., name: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class ClassifyReply(_message.Message):
    __slots__ = ("request_id", "status", "classes", "provenance", "image_required")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    status: ItemStatus
    classes: _containers.RepeatedCompositeFieldContainer[ClassScore]
    provenance: Provenance
    image_required: bool
    def __init__(self, request_id: _Optional[str] = ..., status: _Optional[_Union[ItemStatus, _Mapping]] = ..., classes: _Optional[_Iterable[_Union[ClassScore, _Mapping]]] = ..., provenance: _Optional[_Union[Provenance, _Mapping]] = ..., image_required: _Optional[bool] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "version", "feature_dim", "dtype", "num_classes", "input_size", "random_weights")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FEATURE_DIM_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    INPUT_SIZE_FIELD_NUMBER: _ClassVar[int]
    RANDOM_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    feature_dim: int
    dtype: str
    num_classes: int
    input_size: int
    random_weights: bool
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., feature_dim: _Optional[int] = ..., dtype: _Optional[str] = ..., num_classes: _Optional[int] = ..., input_size: _Optional[int] = ..., random_weights: _Optional[bool] = ...) -> None: ...

class ListModelsReply(_message.Message):
    __slots__ = ("models", "default_model", "node")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_MODEL_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    default_model: str
    node: str
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., default_model: _Optional[str] = ..., node: _Optional[str] = ...) -> None: ...

class ItemFrame(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ImageRequest]
    def __init__(self, items: _Optional[_Iterable[_Union[ImageRequest, _Mapping]]] = ...) -> None: ...

class ExtractFrame(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ExtractReply]
    def __init__(self, items: _Optional[_Iterable[_Union[ExtractReply, _Mapping]]] = ...) -> None: ...

class ClassifyFrame(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ClassifyReply]
    def __init__(self, items: _Optional[_Iterable[_Union[ClassifyReply, _Mapping]]] = ...) -> None: ...
