"""Augment's checks a block at a time: the same numbers as all at once, and memory that does not grow
with the number of generated images."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from medauc.augment import artefacts, checks
from medauc.augment.generate import generate, generate_blocks
from test_augment_fixtures import synthetic_images


def _data(n_src: int = 30, per: int = 5, size: int = 32):
    rng = np.random.default_rng(0)
    sources = synthetic_images(n_src, size, rng)
    src = np.repeat(np.arange(n_src), per)
    sig = np.tile(np.linspace(0.1, 0.5, per), n_src)
    gen = np.clip(sources[src] * 0.95 + rng.normal(0, 0.03, (len(src), size, size)), 0, 1).astype(np.float32)
    return sources, src, sig, gen


def _run(sources, src, sig, gen, block: int, limit: int = checks.SAMPLE_GENERATED) -> dict:
    acc = checks.GeneratedChecks(sources, src, sig, features=artefacts.image_features, seed=3, sample_limit=limit)
    order = np.arange(len(src))
    for start in range(0, len(order), block):
        sl = slice(start, min(start + block, len(order)))
        acc.add(sl, gen[sl])
    return {"b": acc.quality(), "c": acc.memorisation(sources, np.arange(len(sources)), np.arange(len(sources)), 0.98),
            "d": acc.feature_rows}


def test_checks_in_blocks_equal_all_at_once():
    sources, src, sig, gen = _data()
    whole = _run(sources, src, sig, gen, block=len(src))
    for block in (1, 7, 64):
        part = _run(sources, src, sig, gen, block=block)
        assert part["b"] == whole["b"] and part["c"] == whole["c"]
        np.testing.assert_allclose(part["d"], whole["d"], rtol=1e-12, atol=1e-15)  # torch reductions: last bits
    # and both equal the in-memory functions the stage used to call
    assert whole["b"] == checks.generated_quality(checks.quantise(gen), checks.quantise(sources[src]), sig)
    ref = checks.memorisation(gen, src, sig, sources, np.arange(len(sources)), 0.98)
    assert {k: v for k, v in whole["c"].items()} == ref
    np.testing.assert_allclose(whole["d"], artefacts.image_features(checks.quantise(gen)), rtol=1e-12, atol=1e-15)


def test_image_features_in_blocks_equal_one_block():
    _, _, _, gen = _data(n_src=9, per=3)
    np.testing.assert_allclose(artefacts.image_features(gen, block=4), artefacts.image_features(gen, block=10_000), rtol=1e-12, atol=1e-15)


def test_check_c_samples_whole_sources_above_the_limit():
    sources, src, sig, gen = _data(n_src=30, per=5)
    acc = checks.GeneratedChecks(sources, src, sig, sample_limit=40)
    acc.add(slice(0, len(src)), gen)
    assert acc.sampled.sum() == 40  # 8 whole sources of 5
    sampled_sources = set(src[acc.sampled])
    assert all(acc.sampled[src == s].all() for s in sampled_sources)  # siblings together
    c = acc.memorisation(sources, np.arange(30), np.arange(30), 0.98)
    assert c["n_sampled"] == 40 and c["n"] == 150
    # near-copy share and SSIM to the source are over every image, not only the sample
    assert c["ssim_to_source"] == checks._summary(acc.ssim_source)
    with np.testing.assert_raises(RuntimeError):  # a block that never reached the checks is a bug, not a number
        checks.GeneratedChecks(sources, src, sig).quality()


def test_generate_blocks_give_the_images_of_generate():
    rng = np.random.default_rng(0)
    sources = synthetic_images(6, 16, rng)
    plan = [(i % 6, 0.1 * (1 + i % 3), i // 6) for i in range(20)]

    def halve(noisy, sigmas):
        return noisy * 0.5

    whole, noisy = generate(sources, plan, halve, seed=4, batch_size=8, progress=False)
    parts = list(generate_blocks(sources, plan, halve, seed=4, batch_size=8, progress=False))
    assert [p[0] for p in parts] == [slice(0, 8), slice(8, 16), slice(16, 20)]
    np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), whole)
    # uint8 sources (as cached) give the same images as their float values
    u8 = np.round(sources * 255).astype(np.uint8)
    a, _ = generate(u8, plan, halve, seed=4, batch_size=8, progress=False)
    b, _ = generate(u8.astype(np.float32) / np.float32(255), plan, halve, seed=4, batch_size=8, progress=False)
    np.testing.assert_array_equal(a, b)



def test_generate_blocks_read_a_cache_view_as_its_images(tmp_path):
    # the restored test images are read from the image cache a block at a time (ShardImages)
    from medauc.data.datasets import load_images
    from medauc.data.images import save_png

    rng = np.random.default_rng(1)
    files = [save_png(tmp_path / f"{i}.png", img) for i, img in enumerate(synthetic_images(5, 16, rng))]
    eager = load_images(files, 16, tmp_path / "cache").numpy()
    lazy = load_images(files, 16, tmp_path / "cache", lazy=True)
    plan = [(i % 5, 0.2, 0) for i in range(12)]
    a, _ = generate(eager, plan, lambda noisy, sigmas: noisy * 0.5, seed=3, batch_size=4, progress=False)
    b, _ = generate(lazy, plan, lambda noisy, sigmas: noisy * 0.5, seed=3, batch_size=4, progress=False)
    np.testing.assert_array_equal(a, b)


_PEAK = r"""
import json, resource, sys
import numpy as np
from medauc.augment import artefacts, checks
n_gen, size = int(sys.argv[1]), 256
rng = np.random.default_rng(0)
sources = rng.random((n_gen // 5, size, size)).astype(np.float32)  # the healthy training images: 5 restorations each
src = np.arange(n_gen) // 5
sig = np.tile([0.1, 0.2, 0.3, 0.4, 0.5], n_gen // 5)
acc = checks.GeneratedChecks(sources, src, sig, features=artefacts.image_features, sample_limit=40)
acc.add(slice(0, 64), np.clip(sources[src[:64]] + 0.01, 0, 1))  # warm-up: libraries and first buffers
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for start in range(64, n_gen, 64):
    sl = slice(start, min(start + 64, n_gen))
    acc.add(sl, np.clip(sources[src[sl]] + 0.01, 0, 1))
acc.quality(); acc.memorisation(sources, np.arange(n_gen // 5), np.arange(n_gen // 5), 0.98)
artefacts.detectability_from_features(artefacts.image_features(sources), acc.feature_rows, src, sig, n_bootstrap=50)
print(json.dumps({"grew_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before}))
"""


def test_peak_memory_of_checks_c_and_d_does_not_grow_with_the_images():
    """Checks b, c and d on 200 and on 1,200 generated 256-px images (256 KB each as float32, check d's
    float64 temporaries about 40 times that): the peak grows by less than one image per generated
    image, so neither the images nor their temporaries are kept. What it does grow by (100-160 KB an
    image here) is the allocator's heap over 18 blocks, not data the checks hold (~8 KB an image)."""
    grew = {}
    for n in (200, 1200):
        out = subprocess.run([sys.executable, "-c", _PEAK, str(n)], capture_output=True, text=True, check=True)
        grew[n] = json.loads(out.stdout.strip().splitlines()[-1])["grew_kb"]
    per_image_kb = (grew[1200] - grew[200]) / 1000
    assert per_image_kb < 230, grew  # all images kept: > 256 KB an image; all at once: about 20 MB an image


def test_check_d_features_of_uint8_sources_in_blocks_equal_all_at_once(tmp_path):
    # the healthy sources stay uint8 (as cached) and check d's features are taken a block at a time
    import torch

    from medauc.augment.command import _block_features, _features_of
    from medauc.data.datasets import uint8_to_float
    from medauc.data.images import save_png

    rng = np.random.default_rng(2)
    u8 = np.round(synthetic_images(7, 16, rng) * 255).astype(np.uint8)
    # as before, when all of them were made float first (image_features blocks the same way: same sums, same bits)
    whole = artefacts.image_features(checks.quantise(uint8_to_float(torch.from_numpy(u8))), block=3)
    np.testing.assert_array_equal(_block_features(u8, block=3), whole)
    files = [str(save_png(tmp_path / f"{i}.png", img.astype(np.float32) / 255)) for i, img in enumerate(u8)]
    np.testing.assert_array_equal(_features_of(files, 16, tmp_path / "cache", 1, block=3), whole)  # a cache view
    np.testing.assert_array_equal(_features_of(files, 16, None, 1, block=3), whole)
