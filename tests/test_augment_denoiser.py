"""The U-Net denoiser: noise, quality metrics, training, checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medauc.augment.denoiser import (
    Denoiser, add_noise, load_denoiser, psnr, quality_per_sigma, restore, save_denoiser, ssim, train_denoiser,
)
from medauc.config import AugmentConfig
from medauc.errors import ModelError
from test_augment_fixtures import synthetic_images


def test_ssim_matches_monai_and_psnr_is_textbook():
    from monai.metrics import SSIMMetric

    rng = np.random.default_rng(0)
    a = rng.random((3, 24, 24)).astype(np.float32)
    b = np.clip(a + 0.1 * rng.standard_normal(a.shape), 0, 1).astype(np.float32)
    ref = SSIMMetric(spatial_dims=2, data_range=1.0)(torch.from_numpy(a)[:, None], torch.from_numpy(b)[:, None]).flatten().numpy()
    np.testing.assert_allclose(ssim(a, b), ref, atol=1e-5)
    np.testing.assert_allclose(ssim(a, a), 1.0)
    mse = ((a.astype(np.float64) - b) ** 2).mean(axis=(1, 2))
    np.testing.assert_allclose(psnr(a, b), 10 * np.log10(1 / mse))


def test_add_noise_is_seeded_clipped_and_per_sample():
    x = np.full((2, 16, 16), 0.5, dtype=np.float32)
    a = add_noise(x, np.array([0.0, 0.3]), torch.Generator().manual_seed(1))
    b = add_noise(x, np.array([0.0, 0.3]), torch.Generator().manual_seed(1))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a[0], x[0])  # sigma 0 leaves the image alone
    assert 0.2 < a[1].std() < 0.35 and a.min() >= 0 and a.max() <= 1


def test_untrained_denoiser_starts_as_identity():
    x = np.random.default_rng(0).random((2, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(restore(Denoiser([4, 8]), x), x, atol=1e-6)


def test_training_reduces_noise_and_checkpoint_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    train = synthetic_images(32, 32, rng)
    val = synthetic_images(8, 32, rng)
    acfg = AugmentConfig(image_size=32, channels=[8, 16], epochs=8, batch_size=8, lr=3e-3, sigmas=[0.2])
    model, history = train_denoiser(train, acfg, seed=0, device="cpu", progress=False)
    assert len(history) == 8 and history[-1]["loss"] < history[0]["loss"]
    q = quality_per_sigma(val, lambda z: restore(model, z), [0.2], seed=0)[0]
    assert q["psnr_restored"] > q["psnr_noisy"] + 1.0  # the denoiser removes noise
    save_denoiser(model, acfg, tmp_path, seed=0)
    again, meta = load_denoiser(tmp_path)
    np.testing.assert_array_equal(restore(again, val), restore(model, val))
    assert meta["augment"]["channels"] == [8, 16] and meta["seed"] == 0


def test_training_is_deterministic_and_validates_config():
    rng = np.random.default_rng(0)
    train = synthetic_images(8, 32, rng)
    acfg = AugmentConfig(image_size=32, channels=[4, 8], epochs=1, batch_size=4)
    a, _ = train_denoiser(train, acfg, seed=3, device="cpu", progress=False)
    b, _ = train_denoiser(train, acfg, seed=3, device="cpu", progress=False)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    with pytest.raises(ModelError, match="augment.loss"):
        train_denoiser(train, AugmentConfig(image_size=32, channels=[4, 8], loss="huber"), seed=0, progress=False)
    with pytest.raises(ModelError, match="not divisible"):
        train_denoiser(train[:, :30, :30], AugmentConfig(image_size=30, channels=[4, 8, 16]), seed=0, progress=False)
    with pytest.raises(ModelError, match="no denoiser"):
        load_denoiser("/nonexistent-folder")
