"""The U-Net denoiser: noise, quality metrics, training, checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medauc.augment.denoiser import Denoiser, load_denoiser, model_restore_fn, restore, save_denoiser
from medauc.augment.quality import add_noise, psnr, ssim
from medauc.augment.restoration import gaussian_blur, nlm_denoise, quality_per_sigma
from medauc.augment.training import train_denoiser
from medauc.augment.generate import generate
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
    for kind in ({}, {"noise_scaled_output": True}, {"noise_level_input": False}):
        np.testing.assert_allclose(restore(Denoiser([4, 8], **kind), x, [0.1, 0.3]), x, atol=1e-6)
    with pytest.raises(ModelError, match="noise_level_input"):
        Denoiser([4, 8], noise_level_input=False, noise_scaled_output=True)


def test_training_reduces_noise_and_checkpoint_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    train = synthetic_images(32, 32, rng)
    val = synthetic_images(8, 32, rng)
    acfg = AugmentConfig(image_size=32, channels=[8, 16], epochs=8, batch_size=8, lr=1e-2, sigmas=[0.2], num_res_units=1)
    model, history = train_denoiser(train, acfg, seed=0, device="cpu", progress=False)
    assert len(history) == 8 and history[-1]["loss"] < history[0]["loss"]
    q = quality_per_sigma(val, model_restore_fn(model), [0.2], seed=0)[0]
    assert q["psnr_restored"] > q["psnr_noisy"] + 1.0  # the denoiser removes noise
    save_denoiser(model, acfg, tmp_path, seed=0)
    again, meta = load_denoiser(tmp_path)
    noisy = add_noise(val, 0.2, torch.Generator().manual_seed(0))
    sig = np.linspace(0.0, 0.5, len(val))
    np.testing.assert_array_equal(restore(again, noisy, sig), restore(model, noisy, sig))
    assert again.noise_level_input and again.noise_scaled_output
    assert meta["augment"]["channels"] == [8, 16] and meta["augment"]["num_res_units"] == 1 and meta["seed"] == 0


def test_training_is_deterministic_and_validates_config():
    rng = np.random.default_rng(0)
    train = synthetic_images(8, 32, rng)
    acfg = AugmentConfig(image_size=32, channels=[4, 8], epochs=1, batch_size=4)
    a, _ = train_denoiser(train, acfg, seed=3, device="cpu", progress=False)
    b, _ = train_denoiser(train, acfg, seed=3, device="cpu", progress=False)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    # uint8 images (as cached, a quarter of the memory) train the same weights as their float values
    u8 = np.round(train * 255).astype(np.uint8)
    c, _ = train_denoiser(u8, acfg, seed=3, device="cpu", progress=False)
    d, _ = train_denoiser(u8.astype(np.float32) / np.float32(255), acfg, seed=3, device="cpu", progress=False)
    for (k, vc), vd in zip(c.state_dict().items(), d.state_dict().values()):
        assert torch.equal(vc, vd), k
    with pytest.raises(ModelError, match="augment.loss"):
        train_denoiser(train, AugmentConfig(image_size=32, channels=[4, 8], loss="huber"), seed=0, progress=False)
    with pytest.raises(ModelError, match="not divisible"):
        train_denoiser(train[:, :30, :30], AugmentConfig(image_size=30, channels=[4, 8, 16]), seed=0, progress=False)
    with pytest.raises(ModelError, match="no denoiser"):
        load_denoiser("/nonexistent-folder")


def _old_blind_settings(acfg: AugmentConfig) -> AugmentConfig:
    """The denoiser before issue 12: blind, trained on the listed sigmas only, constant learning rate, plain loss."""
    from dataclasses import replace

    return replace(acfg, noise_level_input=False, noise_scaled_output=False, train_noise="listed", lr_schedule="constant",
                   loss_on_noise=False)


def _restores_and_keeps_clean(acfg: AugmentConfig) -> tuple[dict, dict]:
    rng = np.random.default_rng(0)
    train, val = synthetic_images(48, 32, rng), synthetic_images(12, 32, rng)
    model, _ = train_denoiser(train, acfg, seed=0, device="cpu", progress=False)
    clean_row, noisy_row = quality_per_sigma(val, model_restore_fn(model), [0.0, 0.1], seed=1, baselines=True)
    return clean_row, noisy_row


# The bars of issue 12 in miniature. With _old_blind_settings(ACFG) this test fails (measured:
# sigma 0 at ~26 dB, the blind U-Net smooths the clean image; sigma 0.1 below the best blur).
ACFG = AugmentConfig(image_size=32, channels=[8, 16], epochs=12, batch_size=8, lr=3e-3, sigmas=[0.1, 0.2, 0.3, 0.4, 0.5])


def test_denoiser_beats_best_blur_and_keeps_a_clean_image():
    clean_row, noisy_row = _restores_and_keeps_clean(ACFG)
    assert clean_row["psnr_restored"] >= 35.0, clean_row  # a clean input comes back (nearly) unchanged
    assert noisy_row["psnr_restored"] > noisy_row["psnr_blur"], noisy_row  # better than the oracle blur
    assert noisy_row["psnr_restored"] > noisy_row["psnr_noisy"] + 2.0


def test_baselines_on_the_same_noisy_images():
    rng = np.random.default_rng(0)
    clean = synthetic_images(4, 32, rng)
    identity = lambda noisy, sigmas: noisy  # noqa: E731
    rows = quality_per_sigma(clean, identity, [0.0, 0.2], seed=0, baselines=True, blur_widths=(0.5, 1.0, 2.0))
    assert rows[0]["psnr_noisy"] == rows[0]["psnr_restored"] == 100.0  # sigma 0: capped, identical
    assert rows[1]["blur_sigma"] in (0.5, 1.0, 2.0)
    assert rows[1]["psnr_blur"] > rows[1]["psnr_noisy"] and rows[1]["psnr_nlm"] > rows[1]["psnr_noisy"]
    x = np.zeros((1, 9, 9), dtype=np.float32)
    x[0, 4, 4] = 1.0
    b = gaussian_blur(x, 1.0)
    assert abs(b.sum() - 1.0) < 1e-5 and b[0, 4, 4] == b.max()  # normalised, centred
    np.testing.assert_array_equal(gaussian_blur(x, 0.0), x)
    assert nlm_denoise(clean).shape == clean.shape


def test_generation_passes_each_images_sigma():
    sources = np.full((3, 8, 8), 0.5, dtype=np.float32)
    plan = [(0, 0.1, 0), (1, 0.3, 0), (2, 0.5, 0), (0, 0.3, 0), (1, 0.0, 0)]
    seen = []

    def report_sigma(noisy: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
        seen.extend(np.asarray(sigmas).tolist())
        return np.broadcast_to(np.asarray(sigmas, dtype=np.float32)[:, None, None], noisy.shape).copy()

    restored, noisy = generate(sources, plan, report_sigma, seed=0, batch_size=2, progress=False)
    expected = [p[1] for p in plan]
    np.testing.assert_allclose(seen, expected, atol=1e-7)
    np.testing.assert_allclose(restored[:, 0, 0], expected, atol=1e-7)  # each image restored with its own sigma
    np.testing.assert_array_equal(noisy[4], sources[1])  # sigma 0: no noise added


def test_the_noise_level_reaches_the_unet_as_an_input_channel():
    # Mutation caught: the sigma map zeroed (or dropped) before the U-Net. With a scaled output, only the
    # output scaling by sigma was exercised; here the unit-noise estimate itself must depend on sigma.
    torch.manual_seed(0)
    model = Denoiser([8, 16], noise_level_input=True, noise_scaled_output=True).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)  # a trained-looking network: the fresh one's output layer may start at 0
    x = torch.rand(3, 1, 16, 16)
    with torch.no_grad():
        unit = [(model(x, torch.full((3,), s)) - x) / s for s in (0.1, 0.4)]
        # and a blind U-Net's estimate does not move with sigma: the dependence above comes through the channel
        blind = Denoiser([8, 16], noise_level_input=False).eval()
        for p in blind.parameters():
            p.normal_(0.0, 0.3)
        same = [blind(x, torch.full((3,), s)) for s in (0.1, 0.4)]
    assert (unit[0] - unit[1]).abs().max() > 1e-3
    assert torch.equal(same[0], same[1])


def test_restore_batch_bounds_pixels_and_keeps_the_result():
    from medauc.augment.denoiser import build_denoiser, restore_batch

    assert restore_batch(64) == 64 and restore_batch(224) == 16 and restore_batch(2048) == 1
    torch.manual_seed(0)
    model = build_denoiser(AugmentConfig(channels=(4, 8)))
    noisy = np.random.default_rng(0).random((5, 32, 32)).astype(np.float32)
    sig = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    np.testing.assert_allclose(restore(model, noisy, sig, batch_size=2), restore(model, noisy, sig), atol=1e-6)
