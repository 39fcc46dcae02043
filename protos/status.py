"""What a reply says of its item: the gRPC code number of its ItemStatus, and the tier that served it."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias, TypeVar

import grpc

from ringserve.contract.errors import ServiceError

if TYPE_CHECKING:
    from ringserve.contract.v1 import inference_pb2 as pb

# An item's reply on either stream.
Reply: TypeAlias = "pb.ExtractReply | pb.ClassifyReply"
R = TypeVar("R", "pb.ExtractReply", "pb.ClassifyReply")

_BY_VALUE = {code.value[0]: code for code in grpc.StatusCode}


def code_of(value: int) -> grpc.StatusCode:
    """The StatusCode of an ItemStatus.code number (UNKNOWN for a number gRPC does not define)."""
    return _BY_VALUE.get(value, grpc.StatusCode.UNKNOWN)


def error_reply(reply_type: type[R], request: pb.ImageRequest, code: grpc.StatusCode, message: str) -> R:
    """A reply of ``reply_type`` that fails ``request``'s item alone, with a message that says why."""
    from ringserve.contract.v1 import inference_pb2 as pb

    return reply_type(request_id=request.request_id, status=pb.ItemStatus(code=code.value[0], message=message))


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status an item or a call is answered with for ``exc``: a ``ServiceError``'s own code and reason;
    anything else, the service's own failure, INTERNAL with its type and message. INTERNAL always means a
    failure of the service (a bug): whoever answers it logs the traceback."""
    if isinstance(exc, ServiceError) and exc.code != grpc.StatusCode.INTERNAL:
        return exc.code, exc.reason()
    return grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}"


def source_name(value: int) -> str:
    """A Provenance.source number as the name callers, logs and metrics use: "l1", "l2" or "computed"."""
    from ringserve.contract.v1 import inference_pb2 as pb

    return pb.Source.Name(value).removeprefix("SOURCE_").lower()
