"""Classifiers by timm name: creation, local weights, input preparation and reloading.

Every architecture goes through the same three functions, so training, Grad-CAM and the
augmentation checks feed a model exactly the same tensors:

- :func:`create_model` builds any timm model for ``num_classes`` grey-level classes;
- :func:`prepare_batch` turns float images ``(N, H, W)`` in [0, 1] into the model's input;
- :func:`load_trained` rebuilds a trained model from its ``model.json`` + ``best.safetensors``.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from medauc.data.datasets import resize_uint8
from medauc.errors import ModelError
from medauc.preflight import WEIGHT_SUFFIXES, resolve_weights  # noqa: F401 (re-exported)

_LOAD_ERRORS = (RuntimeError, OSError, ValueError, KeyError, pickle.UnpicklingError, SafetensorError)


def _pretrained_cfg(name: str) -> dict[str, Any]:
    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('_')[0]}*")[:8]
        hint = f"; similar names: {', '.join(close)}" if close else ""
        raise ModelError(f"model.names: {name!r} is not a timm model{hint} (all: timm.list_models())")
    cfg = timm.models.get_pretrained_cfg(name)
    return cfg.to_dict() if cfg is not None else {}


def zero_init_head(model: nn.Module) -> None:
    """Zero the last linear (or 1x1 conv) layer of every classifier head, so training starts from logits 0.

    timm's own head init depends on the architecture: EfficientNet's scales with 1/sqrt(num_classes),
    which for 4 classes gives logits of std ~4 at the first step (cross-entropy ~4.5 instead of
    ln 4) and costs a from-scratch run its first epochs.
    """
    heads = model.get_classifier()
    for head in heads if isinstance(heads, (tuple, list)) else (heads,):
        layers = [m for m in head.modules() if isinstance(m, (nn.Linear, nn.Conv2d))] if isinstance(head, nn.Module) else []
        if layers:
            nn.init.zeros_(layers[-1].weight)
            if layers[-1].bias is not None:
                nn.init.zeros_(layers[-1].bias)


def create_model(
    name: str,
    num_classes: int,
    in_chans: int,
    image_size: int,
    pretrained: bool = False,
    weights: str = "",
    drop_rate: float = 0.0,
    zero_head: bool = False,
) -> nn.Module:
    """Any timm architecture for ``num_classes`` classes and ``in_chans`` input channels.

    Models whose pretrained config says their input size is fixed (ViTs and relatives) are built
    for ``image_size`` (position embeddings resampled when weights are loaded). ``weights`` (a
    local file or folder, see :func:`resolve_weights`) wins over ``pretrained``; both load through
    timm, which adapts the stem to ``in_chans`` and replaces the head. Loads are safetensors or
    ``torch.load(weights_only=True)``, never an unrestricted pickle. ``zero_head``: a head that does not
    come from the weights starts at zero (:func:`zero_init_head`).
    """
    if in_chans not in (1, 3):
        raise ModelError(f"model.in_chans={in_chans}: use 1 (grey-level stem) or 3 (grey replicated for an RGB stem)")
    if num_classes < 2:
        raise ModelError(f"{name}: num_classes={num_classes}; a classifier needs at least 2 classes in the training data")
    pcfg = _pretrained_cfg(name)
    kwargs: dict[str, Any] = {"num_classes": num_classes, "in_chans": in_chans, "drop_rate": drop_rate}
    if pcfg.get("fixed_input_size", False):
        kwargs["img_size"] = image_size
    file = resolve_weights(name, weights)
    if file is not None:
        fix = f"the file must be a state dict of {name} (.safetensors, or a .pth readable with weights_only=True)"
        try:
            model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(file)}, **kwargs)
            file_state = timm.models.load_state_dict(str(file))
            loaded = set(file_state)
        except _LOAD_ERRORS as exc:
            raise ModelError(f"model.weights: cannot load {file} into {name} ({type(exc).__name__}: {exc}); {fix}") from exc
        # timm loads non-strictly when it replaces the head: check that everything else came from the file.
        heads = pcfg.get("classifier") or ()
        heads = (heads,) if isinstance(heads, str) else tuple(heads)
        missing = [k for k in model.state_dict() if k not in loaded and not k.startswith(tuple(h + "." for h in heads))]
        if missing:
            raise ModelError(
                f"model.weights: cannot load {file} into {name}: {len(missing)} tensors are missing "
                f"(first: {', '.join(missing[:3])}); {fix}"
            )
        head_keys = [k for k in model.state_dict() if k.startswith(tuple(h + "." for h in heads))]
        if zero_head and not all(k in file_state and file_state[k].shape == model.state_dict()[k].shape for k in head_keys):
            zero_init_head(model)  # timm dropped the file's head: it was made for another class count
        return model
    if pretrained:
        if not (pcfg.get("hf_hub_id") or pcfg.get("url")):
            raise ModelError(f"{name}: timm has no pretrained weights for it; set model.weights=PATH or model.pretrained=false")
        try:
            model = timm.create_model(name, pretrained=True, **kwargs)
        except _LOAD_ERRORS as exc:
            offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") else ""
            raise ModelError(
                f"{name}: pretrained weights could not be fetched{offline}: {type(exc).__name__}. "
                f"Put them in a folder as {name}.safetensors (or .pth) and set model.weights=/path/to/folder, "
                "or set model.pretrained=false to train from scratch"
            ) from exc
        if zero_head and pcfg.get("num_classes") != num_classes:
            zero_init_head(model)  # timm dropped the pretrained head: it was made for another class count
        return model
    model = timm.create_model(name, pretrained=False, **kwargs)
    if zero_head:
        zero_init_head(model)
    return model


def input_stats(model: nn.Module, in_chans: int) -> tuple[list[float], list[float]]:
    """Normalisation (mean, std), one value per input channel, from the model's pretrained config.

    A grey-level stem (``in_chans=1``) gets the mean of the RGB values: timm sums the RGB stem
    weights when it adapts pretrained weights to one channel, which assumes a grey input.
    """
    pcfg = getattr(model, "pretrained_cfg", None) or {}
    mean = [float(v) for v in pcfg.get("mean", (0.5, 0.5, 0.5))]
    std = [float(v) for v in pcfg.get("std", (0.5, 0.5, 0.5))]
    if in_chans == 1:
        return [float(np.mean(mean))], [float(np.mean(std))]
    return mean[:3], std[:3]


class InputTransform:
    """uint8 images (N, S, S) -> normalised float (N, in_chans, S, S): the one input path."""

    def __init__(self, meta: dict[str, Any], device: torch.device | str = "cpu", channels_last: bool = False) -> None:
        self.in_chans = int(meta["in_chans"])
        self.mean = torch.tensor(meta["mean"], dtype=torch.float32, device=device).view(1, -1, 1, 1) * 255.0
        self.std = torch.tensor(meta["std"], dtype=torch.float32, device=device).view(1, -1, 1, 1) * 255.0
        self.device = torch.device(device)
        self.channels_last = channels_last

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.device, non_blocking=True).unsqueeze(1).float()
        x = ((x - self.mean) / self.std).expand(-1, self.in_chans, -1, -1)
        if self.channels_last:
            return x.contiguous(memory_format=torch.channels_last)
        return x.contiguous()


def prepare_batch(images: np.ndarray, meta: dict[str, Any]) -> torch.Tensor:
    """float images (N, H, W) in [0, 1] -> float tensor (N, in_chans, S, S) on CPU.

    Resized and quantised to 8 bits exactly as the training cache does, then normalised
    with the model's mean/std (``meta`` from :func:`load_trained`).
    """
    arr = np.asarray(images)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"prepare_batch expects images of shape (N, H, W), got {arr.shape}")
    return InputTransform(meta)(resize_uint8(arr, int(meta["image_size"])))


def load_trained(model_dir: str | os.PathLike[str]) -> tuple[nn.Module, dict[str, Any]]:
    """A trained model in eval mode on CPU, and its meta (``model.json``: model_name, classes,
    image_size, in_chans, mean, std, seed, epoch, and the config sections)."""
    model_dir = Path(model_dir)
    meta_path, weights_path = model_dir / "model.json", model_dir / "best.safetensors"
    for p in (meta_path, weights_path):
        if not p.is_file():
            raise ModelError(f"{p} is missing: {model_dir} is not a finished medauc training folder (run `medauc train`)")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    model = create_model(
        meta["model_name"], len(meta["classes"]), int(meta["in_chans"]), int(meta["image_size"]),
        drop_rate=float(meta.get("drop_rate", 0.0)),
    )
    try:
        model.load_state_dict(load_file(str(weights_path), device="cpu"))
    except (RuntimeError, SafetensorError) as exc:
        raise ModelError(f"{weights_path} does not fit {meta['model_name']} as described in {meta_path}: {exc}") from exc
    return model.eval(), meta
