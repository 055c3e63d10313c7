"""The U-Net denoiser: trained on noisy healthy training images to give back the clean ones.

Images are float32 arrays (N, H, W) in [0, 1]. Noise is additive Gaussian with a standard
deviation ``sigma`` (on the [0, 1] scale), clipped to [0, 1]. The network predicts the correction
to the noisy image (residual learning), which trains faster than predicting the clean image from
scratch.

A blind denoiser trained only on the listed sigmas (0.1..0.5) learns to smooth whatever it is
given: measured on the demo, a CLEAN image came back at 26 dB (anatomy erased) and sigma 0.1 was
worse than a plain Gaussian blur. So, as in FFDNet (Zhang et al. 2018), the U-Net is told the noise
level (``augment.noise_level_input``: a constant sigma map as a second input channel) and trains on
sigma drawn uniformly from [0, max(sigmas)] (``augment.train_noise``), zero included. Its output is
scaled by sigma (``augment.noise_scaled_output``: it estimates the unit noise, as diffusion models
do), so a clean input passes unchanged, and each image's loss is divided by its sigma
(``augment.loss_on_noise``), so the low noise levels, where blur and non-local means are hardest to
beat, weigh as much as the high ones. Generation knows each copy's sigma, so every restore function
takes it: ``restore_fn(noisy, sigmas)``.

Training is :mod:`medauc.augment.training`; noise and quality measures :mod:`medauc.augment.quality`;
the blur and non-local-means baselines :mod:`medauc.augment.restoration`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medauc.config import AugmentConfig, to_dict
from medauc.errors import ModelError
from medauc.fileio import atomic_path, read_json, write_json

# A restore function maps noisy images (N, H, W) in [0, 1] and their noise levels sigmas (N,) to
# restored images (N, H, W). Blind restorers may ignore the sigmas.
RestoreFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


class Denoiser(torch.nn.Module):
    """MONAI ``UNet`` (2-D) with a residual output: ``restored = noisy + unet([noisy, sigma map])``.

    With ``noise_level_input`` the U-Net gets a second input channel filled with each image's sigma
    (FFDNet's noise-level map); without it, it is blind (``unet(noisy)``) and ignores ``sigma``.
    With ``noise_scaled_output`` the correction is ``sigma * unet(...)``: exactly the identity at sigma 0.
    """

    def __init__(
        self, channels: Sequence[int], num_res_units: int = 0, noise_level_input: bool = True, noise_scaled_output: bool = False
    ) -> None:
        super().__init__()
        from monai.networks.nets import UNet

        if len(channels) < 2:
            raise ModelError(f"augment.channels={list(channels)}: the U-Net needs at least two levels, e.g. [16, 32, 64]")
        if noise_scaled_output and not noise_level_input:
            raise ModelError(
                "augment.noise_scaled_output=true needs augment.noise_level_input=true (the output is scaled by the known sigma); "
                "for a blind denoiser set both to false"
            )
        self.noise_level_input = bool(noise_level_input)
        self.noise_scaled_output = bool(noise_scaled_output)
        self.unet = UNet(
            spatial_dims=2,
            in_channels=2 if self.noise_level_input else 1,
            out_channels=1,
            channels=tuple(channels),
            strides=tuple([2] * (len(channels) - 1)),
            num_res_units=num_res_units,
        )
        self.levels = len(channels)
        # Zero the last layer so training starts from the identity (restored = noisy) instead of
        # from random output: measured here, several times better PSNR after the same few steps.
        last = [m for m in self.unet.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))][-1]
        torch.nn.init.zeros_(last.weight)
        if last.bias is not None:
            torch.nn.init.zeros_(last.bias)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | None = None) -> torch.Tensor:
        """x: (N, 1, H, W) noisy in [0, 1], sigma: (N,) noise levels -> (N, 1, H, W) restored (not clamped)."""
        if not self.noise_level_input:
            return x + self.unet(x)
        if sigma is None:
            raise ModelError("this denoiser takes the noise level: call it as model(noisy, sigma) with sigma of shape (N,)")
        sigma = sigma.to(x.dtype).reshape(-1, 1, 1, 1)
        correction = self.unet(torch.cat([x, sigma.expand(-1, 1, *x.shape[2:])], dim=1))
        # Scaled: the U-Net estimates the unit-variance noise and the correction is sigma times it
        # (as diffusion models' epsilon prediction), so a clean input (sigma 0) passes unchanged.
        return x + sigma * correction if self.noise_scaled_output else x + correction


def build_denoiser(acfg: AugmentConfig) -> Denoiser:
    """The U-Net that ``acfg`` describes (untrained)."""
    return Denoiser(acfg.channels, acfg.num_res_units, acfg.noise_level_input, acfg.noise_scaled_output)


RESTORE_PIXELS = 16 * 224 * 224  # pixels per inference batch: the U-Net's activations (~50 MB a 224-px image) stay near 1 GB


def restore_batch(size: int, cap: int = 64) -> int:
    """Images per inference batch at ``size`` px: 64 at the demo's 64 px, 16 at the study's 224 px."""
    return max(1, min(cap, RESTORE_PIXELS // (size * size)))


@torch.no_grad()
def restore(model: torch.nn.Module, noisy: np.ndarray, sigmas: np.ndarray | float, batch_size: int | None = None) -> np.ndarray:
    """Run the denoiser: noisy (N, H, W) in [0, 1], sigmas scalar or (N,) -> restored (N, H, W) float32 in [0, 1].

    ``batch_size`` None: :func:`restore_batch` of the image size (each image is restored on its own,
    so the batch changes memory, not the result's meaning).
    """
    model.eval()
    dev = next(model.parameters()).device
    batch_size = batch_size or restore_batch(int(noisy.shape[-1]))
    sig = np.broadcast_to(np.asarray(sigmas, dtype=np.float32), (len(noisy),)).copy()
    out = np.empty(noisy.shape, dtype=np.float32)
    for start in range(0, len(noisy), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(noisy[start : start + batch_size], dtype=np.float32))[:, None]
        s = torch.from_numpy(np.ascontiguousarray(sig[start : start + batch_size]))
        out[start : start + len(x)] = model(x.to(dev), s.to(dev)).clamp_(0.0, 1.0)[:, 0].cpu().numpy()
    return out


def model_restore_fn(model: torch.nn.Module, batch_size: int | None = None) -> RestoreFn:
    """A :data:`RestoreFn` that runs ``model`` with each image's sigma."""
    return lambda noisy, sigmas: restore(model, noisy, sigmas, batch_size)


# ----------------------------------------------------------------------------- checkpoint


def save_denoiser(model: Denoiser, acfg: AugmentConfig, directory: str | Path, **meta: Any) -> Path:
    """Write ``denoiser.safetensors`` and ``denoiser.json`` (the config that rebuilds it, plus ``meta``)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    path = directory / "denoiser.safetensors"
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp))
    arch = "monai.networks.nets.UNet (residual" + (", sigma-map input channel)" if acfg.noise_level_input else ", blind)")
    write_json(directory / "denoiser.json", {"augment": to_dict(acfg), "architecture": arch, **meta})
    return path


def load_denoiser(directory: str | Path) -> tuple[Denoiser, dict[str, Any]]:
    """Rebuild the denoiser saved by :func:`save_denoiser`; returns (model in eval mode, meta)."""
    from safetensors.torch import load_file

    directory = Path(directory)
    weights, meta_path = directory / "denoiser.safetensors", directory / "denoiser.json"
    if not weights.is_file() or not meta_path.is_file():
        raise ModelError(f"no denoiser in {directory} (need denoiser.safetensors and denoiser.json); run `medauc augment` first")
    meta = read_json(meta_path)
    a = meta["augment"]
    # .get: denoiser.json written before these settings existed describes a blind U-Net
    model = Denoiser(a["channels"], a.get("num_res_units", 0), a.get("noise_level_input", False), a.get("noise_scaled_output", False))
    try:
        model.load_state_dict(load_file(str(weights)))
    except RuntimeError as exc:
        raise ModelError(f"{weights} does not match the U-Net described in {meta_path}: {exc}") from exc
    model.eval()
    return model, meta


__all__ = [
    "Denoiser",
    "RestoreFn",
    "build_denoiser",
    "load_denoiser",
    "model_restore_fn",
    "restore",
    "save_denoiser",
]
