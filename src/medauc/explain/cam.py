"""Class activation maps through pytorch-grad-cam, one interface for every method and model.

``with CamExplainer(model, "gradcam", (C, S, S)) as cam: maps, logits = cam(x, classes)``

The layer and the ViT token reshape come from :func:`medauc.explain.layers.find_target_layer`.
Hooks are removed when the ``with`` block ends, also after an error, and errors are never
swallowed (pytorch-grad-cam's own ``__exit__`` hides ``IndexError``; we do not call it with the
exception).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from medauc.config import ConfigError
from medauc.explain.layers import TargetLayer, find_target_layer

# name in explain.methods -> (pytorch_grad_cam class name, uses gradients)
METHODS: dict[str, tuple[str, bool]] = {
    "gradcam": ("GradCAM", True),
    "gradcampp": ("GradCAMPlusPlus", True),
    "scorecam": ("ScoreCAM", False),  # gradient-free: one forward pass per channel of the layer
}


def check_methods(methods: Sequence[str]) -> list[str]:
    """The method names, validated against :data:`METHODS` (ConfigError listing the valid ones)."""
    if not methods:
        raise ConfigError(f"explain.methods is empty; choose from {', '.join(METHODS)}")
    for m in methods:
        if m not in METHODS:
            raise ConfigError(f"explain.methods: unknown method {m!r}; valid: {', '.join(METHODS)}")
    return list(methods)


def _cut_graph(_module: nn.Module, _inp: object, out: object) -> object:
    # Start the autograd graph at the target layer: Grad-CAM needs gradients only from the logits
    # back to this layer. The layers below it run without recording a graph (the call is made
    # under torch.no_grad, restored when it returns or raises); from here on gradients are on.
    if isinstance(out, torch.Tensor):
        torch.set_grad_enabled(True)
        return out.detach().requires_grad_(True)
    return None


@contextlib.contextmanager
def _quiet_scorecam() -> Iterator[None]:
    # ScoreCAM draws one tqdm bar per image; silence it so that only medauc's own bar shows.
    from pytorch_grad_cam import score_cam
    import tqdm

    original = score_cam.tqdm
    score_cam.tqdm = SimpleNamespace(tqdm=functools.partial(tqdm.tqdm, disable=True))
    try:
        yield
    finally:
        score_cam.tqdm = original


class CamExplainer:
    """A CAM method bound to one model; use as a context manager.

    ``input_shape`` is one model input's (C, H, W); ``target_layer`` a dotted module name or ""
    for the deepest layer the model reports. Calling it with x (N, C, H, W) and one class index
    per image returns (maps (N, H, W) float32 in [0, 1], logits (N, classes) float32).
    """

    def __init__(
        self,
        model: nn.Module,
        method: str,
        input_shape: tuple[int, int, int],
        target_layer: str = "",
        batch_size: int = 64,
        seed: int = 0,
        min_grid: int = 2,
    ) -> None:
        check_methods([method])
        self.model = model
        self.method = method
        self.batch_size = batch_size
        self.uses_gradients = METHODS[method][1]
        self.layer: TargetLayer = find_target_layer(model, input_shape, target_layer, seed, min_grid)
        self._cam = None
        self._cut = None

    def __enter__(self) -> "CamExplainer":
        import pytorch_grad_cam

        if self.uses_gradients:
            # Registered before pytorch-grad-cam's hooks so that theirs see the cut tensor.
            self._cut = self.layer.module.register_forward_hook(_cut_graph)
        try:
            cls = getattr(pytorch_grad_cam, METHODS[self.method][0])
            self._cam = cls(self.model, [self.layer.module], reshape_transform=self.layer.reshape)
            self._cam.batch_size = self.batch_size  # read by ScoreCAM: masked inputs per forward pass
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove every hook this explainer placed (idempotent)."""
        try:
            if self._cam is not None:
                self._cam.activations_and_grads.release()
        finally:
            self._cam = None
            if self._cut is not None:
                self._cut.remove()
                self._cut = None

    def __call__(self, x: torch.Tensor, classes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Maps (N, H, W) in [0, 1] for ``classes[i]`` of image i, and the logits (N, K)."""
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        if self._cam is None:
            raise RuntimeError("CamExplainer must be used inside a `with` block")
        if len(classes) != x.shape[0]:
            raise ValueError(f"got {len(classes)} classes for {x.shape[0]} images")
        targets = [ClassifierOutputTarget(int(c)) for c in classes]
        if self.uses_gradients:
            with torch.no_grad():  # _cut_graph turns gradients on at the target layer
                maps = self._cam(input_tensor=x, targets=targets)
        else:
            with torch.no_grad(), _quiet_scorecam():
                maps = self._cam(input_tensor=x, targets=targets)
        logits = self._cam.outputs.detach().float().cpu().numpy()
        self._cam.activations_and_grads.clear()
        self._cam.outputs = None
        return np.clip(np.asarray(maps, dtype=np.float32), 0.0, 1.0), logits


def count_hooks(model: nn.Module) -> int:
    """Forward, forward-pre and backward hooks on all modules of ``model`` (for leak checks)."""
    n = 0
    for m in model.modules():
        n += len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        n += len(getattr(m, "_backward_pre_hooks", {}))
    return n
