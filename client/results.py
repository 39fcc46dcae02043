"""What a call returns: vectors and scores as numpy arrays, with where they came from."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ringserve.contract.status import source_name
from ringserve.contract.v1 import inference_pb2 as pb


@dataclass(frozen=True)
class Provenance:
    source: str  # "l1", "l2" or "computed"
    node: str
    model: str
    model_version: str
    perceptual: bool = False
    distance: int = 0

    @classmethod
    def from_pb(cls, p: pb.Provenance) -> Provenance:
        return cls(
            source=source_name(p.source),
            node=p.node, model=p.model, model_version=p.model_version, perceptual=p.perceptual, distance=p.distance,
        )


@dataclass(frozen=True)
class Feature:
    vector: np.ndarray
    provenance: Provenance

    @classmethod
    def from_pb(cls, reply: pb.ExtractReply) -> Feature:
        t = reply.feature
        vector = np.frombuffer(t.data, dtype=np.dtype(t.dtype).newbyteorder("<")).reshape(tuple(t.shape))
        return cls(vector.astype(vector.dtype.newbyteorder("=")), Provenance.from_pb(reply.provenance))


@dataclass(frozen=True)
class Classification:
    indices: np.ndarray
    names: list[str]
    scores: np.ndarray
    provenance: Provenance

    @classmethod
    def from_pb(cls, reply: pb.ClassifyReply) -> Classification:
        return cls(
            indices=np.array([c.index for c in reply.classes], dtype=np.int64),
            names=[c.name for c in reply.classes],
            scores=np.array([c.score for c in reply.classes], dtype=np.float32),
            provenance=Provenance.from_pb(reply.provenance),
        )

    @property
    def top(self) -> tuple[str, float]:
        return self.names[0], float(self.scores[0])
