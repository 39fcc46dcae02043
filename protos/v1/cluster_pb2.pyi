from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MemberState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MEMBER_STATE_UNSPECIFIED: _ClassVar[MemberState]
    MEMBER_STATE_SERVING: _ClassVar[MemberState]
    MEMBER_STATE_NOT_SERVING: _ClassVar[MemberState]
    MEMBER_STATE_EJECTED: _ClassVar[MemberState]
MEMBER_STATE_UNSPECIFIED: MemberState
MEMBER_STATE_SERVING: MemberState
MEMBER_STATE_NOT_SERVING: MemberState
MEMBER_STATE_EJECTED: MemberState

class MembersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Member(_message.Message):
    __slots__ = ("name", "address", "weight", "state", "inflight", "placed", "ejections", "reason")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    INFLIGHT_FIELD_NUMBER: _ClassVar[int]
    PLACED_FIELD_NUMBER: _ClassVar[int]
    EJECTIONS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    name: str
    address: str
    weight: int
    state: MemberState
    inflight: int
    placed: int
    ejections: int
    reason: str
    def __init__(self, name: _Optional[str] = ..., address: _Optional[str] = ..., weight: _Optional[int] = ..., state: _Optional[_Union[MemberState, str]] = ..., inflight: _Optional[int] = ..., placed: _Optional[int] = ..., ejections: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class MembersReply(_message.Message):
    __slots__ = ("members", "router", "load_factor", "answered", "min_load", "spill")
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    ROUTER_FIELD_NUMBER: _ClassVar[int]
    LOAD_FACTOR_FIELD_NUMBER: _ClassVar[int]
    ANSWERED_FIELD_NUMBER: _ClassVar[int]
    MIN_LOAD_FIELD_NUMBER: _ClassVar[int]
    SPILL_FIELD_NUMBER: _ClassVar[int]
    members: _containers.RepeatedCompositeFieldContainer[Member]
    router: str
    load_factor: float
    answered: _containers.RepeatedCompositeFieldContainer[Answered]
    min_load: int
    spill: str
    def __init__(self, members: _Optional[_Iterable[_Union[Member, _Mapping]]] = ..., router: _Optional[str] = ..., load_factor: _Optional[float] = ..., answered: _Optional[_Iterable[_Union[Answered, _Mapping]]] = ..., min_load: _Optional[int] = ..., spill: _Optional[str] = ...) -> None: ...

class Answered(_message.Message):
    __slots__ = ("node", "tier", "model_version", "items")
    NODE_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    node: str
    tier: str
    model_version: str
    items: int
    def __init__(self, node: _Optional[str] = ..., tier: _Optional[str] = ..., model_version: _Optional[str] = ..., items: _Optional[int] = ...) -> None: ...

class OwnerRequest(_message.Message):
    __slots__ = ("image", "phash")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    PHASH_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    phash: int
    def __init__(self, image: _Optional[bytes] = ..., phash: _Optional[int] = ...) -> None: ...

class OwnerReply(_message.Message):
    __slots__ = ("phash", "owner", "order", "placed")
    PHASH_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    PLACED_FIELD_NUMBER: _ClassVar[int]
    phash: int
    owner: str
    order: _containers.RepeatedScalarFieldContainer[str]
    placed: str
    def __init__(self, phash: _Optional[int] = ..., owner: _Optional[str] = ..., order: _Optional[_Iterable[str]] = ..., placed: _Optional[str] = ...) -> None: ...
