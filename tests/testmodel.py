"""The test model: mobilenet_v3_small with weights the tests make once, whose features tell images apart.

torchvision's random initialisation leaves BatchNorm's running statistics at mean 0,
variance 1, so activations shrink layer by layer: the pooled feature of a test image
has 0 to 5 nonzero float16 values out of 576 (norm about 3e-7), and a test that
compares two features compares zeros. Here the same random weights (seed 0) get
their BatchNorm statistics from a few batches of generated pictures (a data-dependent
initialisation), so every layer's output is normalised again: norms of 2 to 9, every
value nonzero, and distinct pictures at cosine below 0.95. It costs a second, runs
once per machine, and downloads nothing; a node loads it as ``--models
mobilenet_v3_small=PATH``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
import torchvision

from ringserve.local.imagegen import picture

NAME = "mobilenet_v3_small"
# Bump when the recipe changes, so a stale file from an older recipe is never reused.
RECIPE = 1


def weights_file() -> Path:
    """The weights, made on first use in the machine's temp folder (an atomic rename, so workers can race)."""
    path = Path(tempfile.gettempdir()) / "ringserve-test-model" / f"{NAME}-r{RECIPE}-torch{torch.__version__}.pth"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        staged = path.with_name(f"{path.name}.{os.getpid()}")
        torch.save(_calibrated().state_dict(), staged)
        os.replace(staged, path)
    return path


def _calibrated() -> torch.nn.Module:
    torch.manual_seed(0)
    net = torchvision.models.get_model(NAME, weights=None)
    preprocess = torchvision.models.get_model_weights(NAME).DEFAULT.transforms()
    for module in net.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # a plain average over the calibration batches
    net.train()
    with torch.no_grad():
        for batch in range(4):
            net(torch.stack([preprocess(picture(1_000_000 + 16 * batch + i, (224, 224))) for i in range(16)]))
    return net.eval()
