"""Which layer to explain, and how to turn its output into a (N, C, h, w) grid.

Both come from what the model reports, never from a table of architecture names:

* the layer is the deepest entry of timm's ``model.feature_info`` (a module name), or the
  module named by ``explain.target_layer``;
* a token sequence (N, T, C) becomes a grid through ``model.patch_embed.grid_size`` after
  dropping ``model.num_prefix_tokens`` (class and register tokens);
* a channels-last map (N, h, w, C) is recognised by ``feature_info``'s ``num_chs``.

A probe (one forward and backward pass on a seeded random input) walks ``feature_info`` from
the deepest entry back and takes the first layer that

* has a map of at least ``explain.min_grid`` cells a side (a 1x1 map says nothing about where);
* receives gradient from the logits at its spatial positions. The last block of a ViT that
  classifies from its class token does not: the patch tokens after it never reach the head,
  so Grad-CAM there would be blank, and the search takes the block before.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from medauc.errors import ModelError

log = logging.getLogger(__name__)


class TokensToGrid:
    """(N, T, C) tokens -> (N, C, gh, gw): drop the ``prefix`` leading tokens, fold the rest."""

    def __init__(self, grid: tuple[int, int], prefix: int) -> None:
        self.grid = (int(grid[0]), int(grid[1]))
        self.prefix = int(prefix)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n, t, c = x.shape
        gh, gw = self.grid
        if t - self.prefix != gh * gw:
            raise ModelError(
                f"cannot fold {t} tokens ({self.prefix} prefix) into the {gh}x{gw} patch grid the model "
                "reports; set explain.target_layer to a layer with a spatial output"
            )
        return x[:, self.prefix :, :].reshape(n, gh, gw, c).permute(0, 3, 1, 2)

    def __repr__(self) -> str:
        return f"TokensToGrid(grid={self.grid}, prefix={self.prefix})"


class ChannelsLastToFirst:
    """(N, h, w, C) -> (N, C, h, w), for models whose stages are channels-last (e.g. Swin)."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 3, 1, 2)

    def __repr__(self) -> str:
        return "ChannelsLastToFirst()"


@dataclass(frozen=True)
class TargetLayer:
    """The layer to explain: its dotted name, the module, and the reshape to (N, C, h, w) or None."""

    name: str
    module: nn.Module
    reshape: Callable[[torch.Tensor], torch.Tensor] | None
    grid: tuple[int, int]  # spatial size of the layer's map (h, w) for the probe input


def _model_name(model: nn.Module) -> str:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return str(cfg.get("architecture") or type(model).__name__)


def _candidates(model: nn.Module) -> list[tuple[str, int | None]]:
    """Layer names from ``feature_info``, deepest first, with their channel counts."""
    info = getattr(model, "feature_info", None)
    entries: list[tuple[str, int | None]] = []
    if isinstance(info, (list, tuple)):
        for entry in info:
            if isinstance(entry, dict) and entry.get("module"):
                entries.append((str(entry["module"]), entry.get("num_chs")))
    elif info is not None and hasattr(info, "module_name"):  # timm FeatureInfo object
        for i in range(len(info.out_indices)):
            entries.append((info.module_name(i), info.channels(i)))
    seen: set[str] = set()
    out = []
    for name, chs in reversed(entries):
        if name not in seen:
            seen.add(name)
            out.append((name, chs))
    return out


def _reshape_for(model: nn.Module, out: torch.Tensor, num_chs: int | None) -> Callable[[torch.Tensor], torch.Tensor] | None | str:
    """The reshape that makes ``out`` (a layer's output) a (N, C, h, w) map, None if it is one, or why not (str)."""
    if out.ndim == 4:
        if num_chs is not None and out.shape[1] != num_chs and out.shape[-1] == num_chs:
            return ChannelsLastToFirst()
        return None
    if out.ndim == 3:
        grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
        if grid is None:
            return f"outputs tokens {tuple(out.shape)} but the model reports no patch_embed.grid_size"
        reshape = TokensToGrid(tuple(grid), int(getattr(model, "num_prefix_tokens", 0) or 0))
        if out.shape[1] - reshape.prefix != reshape.grid[0] * reshape.grid[1]:
            return f"outputs {out.shape[1]} tokens, which do not fold into the {reshape.grid} patch grid"
        return reshape
    return f"outputs shape {tuple(out.shape)}, neither (N, C, h, w) nor (N, tokens, C)"


def _probe(
    model: nn.Module, module: nn.Module, num_chs: int | None, input_shape: tuple[int, int, int], seed: int, min_grid: int
) -> TargetLayer | str:
    """Forward and backward once; the layer if its spatial positions get gradient, else why not (str)."""
    captured: dict[str, torch.Tensor] = {}

    def keep(_m: nn.Module, _inp: object, out: object) -> None:
        if isinstance(out, torch.Tensor):
            out.retain_grad()
            captured["out"] = out

    gen = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    x = torch.randn((2, *input_shape), generator=gen).to(device).requires_grad_(True)
    was_training = model.training
    model.eval()
    handle = module.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            logits = model(x)
            if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
                raise ModelError(
                    f"{_model_name(model)} returns {type(logits).__name__} of shape "
                    f"{tuple(getattr(logits, 'shape', ()))}; Grad-CAM needs (N, classes) logits"
                )
            logits.sum().backward()
    finally:
        handle.remove()
        model.train(was_training)
        model.zero_grad(set_to_none=True)
    out = captured.get("out")
    if out is None:
        return "returns no tensor in a forward pass"
    reshape = _reshape_for(model, out, num_chs)
    if isinstance(reshape, str):
        return reshape
    grad = out.grad
    grid_grad = None if grad is None else (reshape(grad) if reshape is not None else grad)
    if grid_grad is None or not torch.any(grid_grad != 0):
        return "receives no gradient from the logits at its spatial positions"
    h, w = int(grid_grad.shape[-2]), int(grid_grad.shape[-1])
    if min(h, w) < min_grid:
        return f"has a {h}x{w} map at this input size (explain.min_grid={min_grid})"
    return TargetLayer(name="", module=module, reshape=reshape, grid=(h, w))


def find_target_layer(
    model: nn.Module, input_shape: tuple[int, int, int], name: str = "", seed: int = 0, min_grid: int = 2
) -> TargetLayer:
    """The deepest reported layer whose map is at least ``min_grid`` cells a side and whose
    spatial positions receive gradient from the logits.

    ``input_shape`` is (C, H, W) of one model input. ``name`` (a dotted module name) overrides
    the search. Raises ModelError naming the model when no layer is usable.
    """
    modules = dict(model.named_modules())
    model_name = _model_name(model)
    if name:
        if name not in modules:
            near = [n for n in modules if n and n.split(".")[0] == name.split(".")[0]][:8]
            raise ModelError(
                f"explain.target_layer={name!r} is not a module of {model_name}"
                + (f"; modules with the same prefix: {', '.join(near)}" if near else "")
            )
        chs = dict(_candidates(model)).get(name)
        found = _probe(model, modules[name], chs, input_shape, seed, 1)
        if isinstance(found, str):
            raise ModelError(f"explain.target_layer={name!r} of {model_name} {found}; choose another layer")
        return dataclasses.replace(found, name=name)
    candidates = _candidates(model)
    if not candidates:
        raise ModelError(
            f"{model_name} reports no feature_info (timm models do), so medauc cannot choose a layer to "
            "explain; set explain.target_layer to the dotted name of its last spatial layer"
        )
    tried = []
    for cand, chs in candidates:
        module = modules.get(cand)
        if module is None:
            tried.append(f"{cand} (not a module)")
            continue
        found = _probe(model, module, chs, input_shape, seed, min_grid)
        if not isinstance(found, str):
            if tried:
                log.debug("%s: explaining %s, not %s", model_name, cand, "; ".join(tried))
            return dataclasses.replace(found, name=cand)
        tried.append(f"{cand} {found}")
    raise ModelError(
        f"{model_name} has no usable layer to explain: {'; '.join(tried)}. "
        "Set explain.target_layer to the dotted name of a spatial layer that feeds the classifier"
    )
