"""A reply's ``Tensor`` (a feature on the wire) from and to a numpy array, for its writer and every reader.

The message carries raw little-endian values in C order, their numpy dtype name and
their shape (``protos/ringserve/v1/inference.proto``); a reader gets them in the
machine's own byte order, so arithmetic on them costs no byte swapping.
"""

from __future__ import annotations

import sys

import numpy as np
from numpy.typing import DTypeLike

from ringserve.contract.v1 import inference_pb2 as pb

# On a little-endian machine (x86, ARM) an array's own bytes are the wire's: sent as they are (the hot path).
_NATIVE_LITTLE = sys.byteorder == "little"


def from_array(values: np.ndarray) -> pb.Tensor:
    """``values`` as a ``Tensor``: their bytes little-endian (an array already so is not copied to convert)."""
    little = values.dtype.byteorder == "<" or (values.dtype.byteorder in "=|" and _NATIVE_LITTLE)
    data = values.tobytes() if little else values.astype(values.dtype.newbyteorder("<")).tobytes()
    return pb.Tensor(data=data, dtype=values.dtype.name, shape=values.shape)


def to_array(tensor: pb.Tensor, dtype: DTypeLike | None = None) -> np.ndarray:
    """``tensor``'s values, shaped, in native byte order: its own dtype, or ``dtype`` when given (one copy)."""
    values = np.frombuffer(tensor.data, dtype=np.dtype(tensor.dtype).newbyteorder("<")).reshape(tuple(tensor.shape))
    return values.astype(values.dtype.newbyteorder("=") if dtype is None else dtype)
