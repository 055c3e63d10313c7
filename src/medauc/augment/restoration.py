"""Measuring restoration: the U-Net against a Gaussian blur and non-local means, per noise level.

Check (b)'s validation rows (:func:`quality_per_sigma`) and the report's side-by-side examples
(:func:`restoration_examples`); every method sees the same noisy images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medauc.augment.denoiser import RestoreFn
from medauc.augment.quality import add_noise, psnr, ssim


def gaussian_blur(images: np.ndarray, width: float) -> np.ndarray:
    """Gaussian blur of (N, H, W) with standard deviation ``width`` px (reflected edges); width 0 = copy."""
    images = np.asarray(images, dtype=np.float32)
    if width <= 0:
        return images.copy()
    radius = max(1, int(math.ceil(3 * width)))
    g = torch.exp(-((torch.arange(-radius, radius + 1, dtype=torch.float32)) ** 2) / (2 * width**2))
    g = g / g.sum()
    x = torch.from_numpy(images)[:, None]
    pad = min(radius, images.shape[-1] - 1, images.shape[-2] - 1)
    if pad < radius:  # reflection cannot pad more than the image; fall back to replicate
        x = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    else:
        x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(F.conv2d(x, g.view(1, 1, 1, -1)), g.view(1, 1, -1, 1))
    return x[:, 0].numpy()


def nlm_denoise(noisy: np.ndarray, patch_size: int = 5, patch_distance: int = 6, h_factor: float = 0.8) -> np.ndarray:
    """scikit-image non-local means per image, blind: sigma estimated from the image (``estimate_sigma``).

    noisy (N, H, W) in [0, 1] -> (N, H, W) float32; ``h = h_factor * sigma_est``, ``fast_mode``.
    Patch 5 px searched within 6 px suits 64 px images (scikit-image's default is 7 / 11 for larger ones).
    """
    from skimage.restoration import denoise_nl_means, estimate_sigma

    out = np.empty(np.shape(noisy), dtype=np.float32)
    for i, img in enumerate(np.asarray(noisy, dtype=np.float64)):
        est = float(estimate_sigma(img))
        out[i] = denoise_nl_means(img, h=h_factor * est, sigma=est, patch_size=patch_size,
                                  patch_distance=patch_distance, fast_mode=True) if est > 0 else img
    return np.clip(out, 0.0, 1.0)


def quality_per_sigma(
    clean: np.ndarray,
    restore_fn: RestoreFn,
    sigmas: Sequence[float],
    seed: int,
    baselines: bool = False,
    blur_widths: Sequence[float] = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0),
) -> list[dict[str, Any]]:
    """PSNR (dB) and SSIM of noisy and restored images against clean ones (N, S, S), per sigma.

    Returns ``[{sigma, n, psnr_noisy, psnr_restored, ssim_noisy, ssim_restored}]`` (means over images;
    PSNR capped at 100 dB, so a sigma-0 noisy image, identical to the clean one, scores 100).
    With ``baselines`` every row also gets, on the same noisy images: the best Gaussian blur of
    ``blur_widths`` px chosen per sigma by mean PSNR against the clean images (an oracle, which a
    real restorer could not do) as ``psnr_blur``, ``ssim_blur``, ``blur_sigma``; and non-local means
    (:func:`nlm_denoise`) as ``psnr_nlm``, ``ssim_nlm``.
    """
    rows = []
    gen = torch.Generator().manual_seed(seed)
    for sigma in sigmas:
        noisy = add_noise(clean, float(sigma), gen)
        restored = restore_fn(noisy, np.full(len(noisy), float(sigma), dtype=np.float32))
        row = {
            "sigma": float(sigma),
            "n": int(len(clean)),
            "psnr_noisy": float(np.mean(np.minimum(psnr(noisy, clean), 100.0))),
            "psnr_restored": float(np.mean(np.minimum(psnr(restored, clean), 100.0))),
            "ssim_noisy": float(np.mean(ssim(noisy, clean))),
            "ssim_restored": float(np.mean(ssim(restored, clean))),
        }
        if baselines:
            blurred = {w: gaussian_blur(noisy, w) for w in blur_widths}
            scores = {w: float(np.mean(np.minimum(psnr(b, clean), 100.0))) for w, b in blurred.items()}
            best = max(scores, key=scores.__getitem__)
            nlm = nlm_denoise(noisy)
            row.update(
                psnr_blur=scores[best],
                ssim_blur=float(np.mean(ssim(blurred[best], clean))),
                blur_sigma=float(best),
                psnr_nlm=float(np.mean(np.minimum(psnr(nlm, clean), 100.0))),
                ssim_nlm=float(np.mean(ssim(nlm, clean))),
            )
        rows.append(row)
    return rows


def restoration_examples(
    clean: np.ndarray, restore_fn: RestoreFn, rows: Sequence[dict[str, Any]], seed: int, n_images: int = 3, n_sigmas: int = 2
) -> dict[str, np.ndarray]:
    """Side-by-side examples for the report: the first ``n_images`` clean images (K, S, S), noised at
    ``n_sigmas`` of the non-zero sigmas in ``rows`` (rows of :func:`quality_per_sigma` with baselines;
    the lowest and the middle one), restored by the U-Net, the row's best blur and non-local means.

    Returns ``{clean (K, S, S), sigmas (J,), blur_sigma (J,), noisy, unet, blur, nlm (J, K, S, S)}``, float32.
    """
    noisy_rows = sorted((r for r in rows if r["sigma"] > 0 and "blur_sigma" in r), key=lambda r: r["sigma"])
    if not noisy_rows:
        raise ValueError("restoration_examples needs quality rows with sigma > 0 computed with baselines=True")
    picks = [noisy_rows[0], noisy_rows[len(noisy_rows) // 2]][: max(1, n_sigmas)] if len(noisy_rows) > 1 else noisy_rows[:1]
    clean = np.asarray(clean[:n_images], dtype=np.float32)
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, list[np.ndarray]] = {"noisy": [], "unet": [], "blur": [], "nlm": []}
    for r in picks:
        noisy = add_noise(clean, r["sigma"], gen)
        out["noisy"].append(noisy)
        out["unet"].append(restore_fn(noisy, np.full(len(noisy), r["sigma"], dtype=np.float32)))
        out["blur"].append(gaussian_blur(noisy, r["blur_sigma"]))
        out["nlm"].append(nlm_denoise(noisy))
    return {
        "clean": clean,
        "sigmas": np.array([r["sigma"] for r in picks], dtype=np.float32),
        "blur_sigma": np.array([r["blur_sigma"] for r in picks], dtype=np.float32),
        **{k: np.stack(v).astype(np.float32) for k, v in out.items()},
    }


__all__ = ["gaussian_blur", "nlm_denoise", "quality_per_sigma", "restoration_examples"]
