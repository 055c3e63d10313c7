"""The denoiser's training loop: noisy healthy images in, the clean ones as targets.

Noise levels, loss and learning-rate schedule follow ``augment.*`` (see :mod:`medauc.augment.denoiser`
for why the U-Net is told the noise level and how the loss is weighted).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medauc.augment.denoiser import Denoiser, build_denoiser
from medauc.config import AugmentConfig
from medauc.device import resolve_device
from medauc.errors import ModelError
from medauc.progress import progress_bar


def train_sigmas(acfg: AugmentConfig, n: int, generator: torch.Generator) -> torch.Tensor:
    """Noise levels (n,) for one training batch, per ``acfg.train_noise``.

    - ``uniform``: uniform on [0, max(sigmas)], so clean and lightly noisy images are seen too;
    - ``listed``: drawn from ``acfg.sigmas`` only (the old blind denoiser's training).
    """
    if acfg.train_noise == "uniform":
        return torch.rand(n, generator=generator) * float(max(acfg.sigmas))
    listed = torch.tensor(acfg.sigmas, dtype=torch.float32)
    return listed[torch.randint(len(listed), (n,), generator=generator)]


def train_denoiser(
    train_images: np.ndarray,
    acfg: AugmentConfig,
    seed: int,
    device: str = "auto",
    progress: bool = True,
) -> tuple[Denoiser, list[dict[str, Any]]]:
    """Train the denoiser on clean images (N, S, S) in [0, 1], or uint8 read as value / 255 (already at ``acfg.image_size``).

    Each sample gets its own sigma (:func:`train_sigmas`) and fresh noise every epoch; random
    horizontal flips add variety; the learning rate follows ``acfg.lr_schedule``. Returns the model
    (eval mode) and per-epoch history ``[{epoch, loss, lr, seconds, images_per_s}]``.
    """
    if len(train_images) == 0:
        raise ModelError("no healthy training images to train the denoiser on; check the manifest's train split")
    if acfg.loss not in ("l1", "mse"):
        raise ModelError(f"augment.loss={acfg.loss!r}; use 'l1' or 'mse'")
    if acfg.train_noise not in ("uniform", "listed"):
        raise ModelError(f"augment.train_noise={acfg.train_noise!r}; use 'uniform' or 'listed'")
    if acfg.lr_schedule not in ("cosine", "constant"):
        raise ModelError(f"augment.lr_schedule={acfg.lr_schedule!r}; use 'cosine' or 'constant'")
    if not acfg.sigmas or min(acfg.sigmas) < 0:
        raise ModelError(f"augment.sigmas={acfg.sigmas}: give one or more noise levels >= 0, e.g. [0.1, 0.2, 0.3]")
    size = train_images.shape[-1]
    if size % (2 ** (len(acfg.channels) - 1)) != 0:
        raise ModelError(
            f"augment.image_size={size} is not divisible by 2**{len(acfg.channels) - 1} "
            f"(the U-Net has {len(acfg.channels)} levels); use e.g. {2 ** (len(acfg.channels) - 1) * 8}"
        )
    patch = acfg.patch_size if 0 < acfg.patch_size < size else size
    if patch % (2 ** (len(acfg.channels) - 1)) != 0:
        raise ModelError(f"augment.patch_size={acfg.patch_size} is not divisible by 2**{len(acfg.channels) - 1}; use e.g. {2 ** (len(acfg.channels) - 1) * 4}")
    dev = resolve_device(device)
    torch.manual_seed(seed)  # the U-Net's initial weights
    model = build_denoiser(acfg).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=acfg.lr)
    n = len(train_images)
    bs = max(1, min(acfg.batch_size, n))
    steps = acfg.epochs * math.ceil(n / bs)
    # Cosine decay to zero: the last epochs take small steps, which is where PSNR at low sigma is won.
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps)) if acfg.lr_schedule == "cosine" else None
    loss_fn = F.l1_loss if acfg.loss == "l1" else F.mse_loss
    gen = torch.Generator().manual_seed(seed)
    # uint8 images (as cached) stay uint8, a quarter of float32's memory; each batch is read as value / 255,
    # the same float32 values uint8_to_float gives.
    arr = np.asarray(train_images)
    clean_all = torch.from_numpy(np.ascontiguousarray(arr if arr.dtype == np.uint8 else arr.astype(np.float32, copy=False)))[:, None]
    history: list[dict[str, Any]] = []
    model.train()
    # A bar over steps, not epochs: at the study's size one epoch takes minutes on a CPU, and a log
    # off a terminal gets a line with the rate and time left at least every 30 s.
    bar = progress_bar(total=steps, desc="denoiser", unit="step", disable=not progress)
    for epoch in range(acfg.epochs):
        t0 = time.perf_counter()
        order = torch.randperm(n, generator=gen)
        total, seen = 0.0, 0
        for start in range(0, n, bs):
            idx = order[start : start + bs]
            clean = clean_all[idx]
            if clean.dtype == torch.uint8:
                clean = clean.to(torch.float32) / 255.0
            flip = torch.rand(len(idx), generator=gen) < 0.5
            clean = torch.where(flip[:, None, None, None], clean.flip(-1), clean)
            if patch < size:  # one random crop per batch: more steps for the same seconds
                y0, x0 = (int(v) for v in torch.randint(size - patch + 1, (2,), generator=gen))
                clean = clean[..., y0 : y0 + patch, x0 : x0 + patch]
            s = train_sigmas(acfg, len(idx), gen)
            noisy = (clean + s[:, None, None, None] * torch.randn(clean.shape, generator=gen)).clamp(0.0, 1.0)
            clean, noisy, s = clean.to(dev), noisy.to(dev), s.to(dev)
            if acfg.loss_on_noise:
                # error on the noise scale (divided by sigma): every noise level counts alike, as mean
                # PSNR over sigmas does, instead of the high sigmas' large errors dominating.
                err = loss_fn(model(noisy, s), clean, reduction="none").mean(dim=(1, 2, 3))
                loss = (err / s.clamp_min(0.02) ** (1 if acfg.loss == "l1" else 2)).mean()
            else:
                loss = loss_fn(model(noisy, s), clean)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            total += loss.detach().item() * len(idx)
            seen += len(idx)
            bar.update(1)
        secs = time.perf_counter() - t0
        history.append({"epoch": epoch + 1, "loss": total / seen, "lr": opt.param_groups[0]["lr"], "seconds": secs, "images_per_s": seen / secs})
        bar.set_postfix(loss=f"{total / seen:.4f}", epoch=epoch + 1)
    bar.close()
    model.eval()
    return model, history


__all__ = ["train_denoiser", "train_sigmas"]
