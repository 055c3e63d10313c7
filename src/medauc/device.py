"""Which torch device a stage computes on, and which reduced precision that device offers.

Every stage that runs a network (the denoiser, the classifiers, Grad-CAM) resolves ``train.device``
here, so "auto" means the same device everywhere; the training loop asks :func:`amp_context` for
its mixed-precision autocast.
"""

from __future__ import annotations

from typing import Any

import torch

from medauc.errors import ModelError

AMP_DTYPES = ("auto", "bf16", "fp16")


def resolve_device(choice: str, local_rank: int = 0) -> torch.device:
    """``train.device`` ("auto", "cpu", "cuda") -> a torch device (auto = CUDA when available).

    ``local_rank``: this process's rank on its machine under torchrun; ranks share the visible
    GPUs round robin. Example: ``resolve_device("cpu")`` -> ``device(type='cpu')``.
    """
    if choice not in ("auto", "cpu", "cuda"):
        raise ModelError(f"train.device={choice!r}: use auto, cpu or cuda")
    if choice == "cuda" and not torch.cuda.is_available():
        raise ModelError("train.device=cuda but no CUDA device is visible; use train.device=auto or cpu")
    if choice == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def amp_context(device_type: str, dtype: str = "auto") -> tuple[Any, torch.amp.GradScaler | None]:
    """Autocast factory and loss scaler for mixed precision on ``device_type``.

    ``dtype``: "bf16" (no scaler needed), "fp16" (with a GradScaler) or "auto" (bf16 where the
    device supports it, else fp16). The trainer asks for it on CUDA only (``train.amp``); the
    tests run the same code on CPU, where torch supports both dtypes too.
    """
    if dtype not in AMP_DTYPES:
        raise ModelError(f"train.amp_dtype={dtype!r}: use one of {', '.join(AMP_DTYPES)}")
    if dtype == "auto":
        bf16 = torch.cuda.is_bf16_supported() if device_type == "cuda" else True
        dtype = "bf16" if bf16 else "fp16"
    if dtype == "bf16":
        return (lambda: torch.autocast(device_type, dtype=torch.bfloat16)), None
    return (lambda: torch.autocast(device_type, dtype=torch.float16)), torch.amp.GradScaler(device_type)
