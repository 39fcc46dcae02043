"""What a call returns: vectors and scores as numpy arrays, with where they came from."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ringserve.contract.status import source_name
from ringserve.contract.tensor import to_array
from ringserve.contract.v1 import inference_pb2 as pb


@dataclass(frozen=True)
class Provenance:
    """Where an answer came from: the tier (``source``: "l1", "l2" or "computed"), the node and the model
    version; ``perceptual`` and ``distance`` (Hamming bits) when a near fingerprint's feature served it, with
    ``verified`` and ``verifier_score`` (PSNR in dB of the two thumbnails, docs/fidelity.md) when its verifier
    passed; ``low_information`` when the image has too little structure to be matched perceptually (so it never is)."""

    source: str
    node: str
    model: str
    model_version: str
    perceptual: bool = False
    distance: int = 0
    low_information: bool = False
    verified: bool = False
    verifier_score: float = 0.0

    @classmethod
    def from_pb(cls, p: pb.Provenance) -> Provenance:
        return cls(
            source=source_name(p.source),
            node=p.node, model=p.model, model_version=p.model_version, perceptual=p.perceptual, distance=p.distance,
            low_information=p.low_information, verified=p.verified, verifier_score=p.verifier_score,
        )


@dataclass(frozen=True)
class Feature:
    """One image's feature vector (the model's canonical dtype, float16 by default) and its provenance."""

    vector: np.ndarray
    provenance: Provenance

    @classmethod
    def from_pb(cls, reply: pb.ExtractReply) -> Feature:
        return cls(to_array(reply.feature), Provenance.from_pb(reply.provenance))


@dataclass(frozen=True)
class Classification:
    """One image's top classes, best first: class indices, names and softmax scores, and the provenance."""

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
        """The best class's name and score."""
        return self.names[0], float(self.scores[0])
