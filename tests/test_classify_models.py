"""Model factory, local weights, input preparation and the in-memory image cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from medauc.classify.models import create_model, input_stats, prepare_batch, resolve_weights
from medauc.data.datasets import image_set, load_images, resize_uint8, uint8_to_float
from medauc.errors import ModelError

CLASSES = ["healthy", "glioma", "meningioma", "pituitary"]


def make_dataset(root: Path, per_class: dict[str, int] | None = None, size: int = 40, seed: int = 0) -> Path:
    """Tiny learnable PNGs (a bright square whose position depends on the class) and a manifest CSV."""
    per_class = per_class or {"train": 6, "val": 3, "test": 3}
    rng = np.random.default_rng(seed)
    rows = []
    for k, label in enumerate(CLASSES):
        for split, n in per_class.items():
            for i in range(n):
                img = rng.uniform(0, 0.3, (size, size))
                r, c = divmod(k, 2)
                h = size // 2
                img[r * h + 4 : r * h + h - 4, c * h + 4 : c * h + h - 4] += 0.6
                path = root / "img" / label / f"{split}_{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(path)
                rows.append({"image_id": f"{label}/{split}_{i}", "path": str(path), "label": label, "split": split})
    manifest = root / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest


@pytest.mark.parametrize("name", ["test_resnet", "test_vit", "test_efficientnet"])
@pytest.mark.parametrize("in_chans", [1, 3])
def test_any_timm_model_takes_grey_images_at_the_configured_size(name: str, in_chans: int) -> None:
    model = create_model(name, num_classes=4, in_chans=in_chans, image_size=32).eval()
    mean, std = input_stats(model, in_chans)
    meta = {"image_size": 32, "in_chans": in_chans, "mean": mean, "std": std}
    x = prepare_batch(np.random.default_rng(0).uniform(size=(2, 50, 40)).astype(np.float32), meta)
    assert x.shape == (2, in_chans, 32, 32)
    with torch.no_grad():
        assert model(x).shape == (2, 4)


def test_vit_is_built_for_the_configured_size_from_timms_config() -> None:
    vit = create_model("test_vit", 3, 1, 48)
    assert tuple(vit.patch_embed.img_size) == (48, 48)  # timm's fixed_input_size, not a name table
    cnn = create_model("test_resnet", 3, 1, 48)
    assert cnn.pretrained_cfg.get("fixed_input_size", False) is False


def test_local_weights_file_loads_and_replaces_the_head(tmp_path: Path) -> None:
    torch.manual_seed(1)
    src = create_model("test_resnet", num_classes=1000, in_chans=3, image_size=32)
    file = tmp_path / "test_resnet.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(file))
    for weights in (str(file), str(tmp_path)):  # a file, or a folder of <name>.safetensors
        torch.manual_seed(2)
        m = create_model("test_resnet", num_classes=4, in_chans=1, image_size=32, weights=weights)
        assert torch.equal(m.layer1[0].conv1.weight, src.layer1[0].conv1.weight)
        assert m.get_classifier().out_features == 4
        # timm folds the RGB stem into one grey channel
        assert torch.allclose(m.conv1[0].weight, src.conv1[0].weight.sum(1, keepdim=True), atol=1e-6)
    pth = tmp_path / "w.pth"
    torch.save(src.state_dict(), pth)
    m = create_model("test_resnet", num_classes=2, in_chans=3, image_size=32, weights=str(pth))
    assert torch.equal(m.layer1[0].conv1.weight, src.layer1[0].conv1.weight)


def test_weights_errors_name_the_file_and_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ModelError, match="no weights for 'test_resnet'"):
        resolve_weights("test_resnet", str(tmp_path))
    with pytest.raises(ModelError, match="no such file"):
        resolve_weights("test_resnet", str(tmp_path / "nope.safetensors"))
    bad = tmp_path / "test_resnet.pth"
    torch.save({"x": torch.zeros(3)}, bad)
    with pytest.raises(ModelError, match="cannot load"):
        create_model("test_resnet", 4, 1, 32, weights=str(bad))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="model.weights=/path/to/folder"):
        create_model("test_resnet", 4, 1, 32, pretrained=True)
    with pytest.raises(ModelError, match="not a timm model"):
        create_model("resnet_does_not_exist", 4, 1, 32)


def test_image_cache_decodes_once_and_matches_prepare_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = make_dataset(tmp_path, {"train": 2})
    df = pd.read_csv(manifest)
    s = image_set(df, CLASSES, 24, tmp_path / "cache")
    assert s.images.dtype == torch.uint8 and s.images.shape == (8, 24, 24)
    assert len(list((tmp_path / "cache" / "images-24").glob("*.npy"))) == 1

    import medauc.data.datasets as ds

    def fail(*a: object) -> None:
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(ds, "_decode", fail)
    again = load_images(list(df["path"]), 24, tmp_path / "cache")
    assert torch.equal(again, s.images)
    # prepare_batch (used by Grad-CAM and the augmentation checks) gives the training input exactly
    from medauc.data.images import load_image

    meta = {"image_size": 24, "in_chans": 1, "mean": [0.5], "std": [0.25]}
    x = prepare_batch(np.stack([load_image(p) for p in df["path"]]), meta)
    assert torch.equal(x, (s.images[:, None].float() - 127.5) / 63.75)
    assert torch.equal(resize_uint8(np.stack([load_image(p) for p in df["path"]]), 24), s.images)


def test_a_damaged_image_cache_is_decoded_again_not_read(tmp_path: Path) -> None:
    """Issue 27 case 3: a zeroed cache/*.npy (right shape and dtype) was read as it was, and every test
    image got the same probabilities."""
    paths = list(pd.read_csv(make_dataset(tmp_path, {"train": 2}))["path"])
    good = load_images(paths, 24, tmp_path / "cache")
    (cache,) = (tmp_path / "cache" / "images-24").glob("*.npy")
    header = cache.read_bytes()[:128]
    cache.write_bytes(header + bytes(cache.stat().st_size - 128))  # zeroed pixels, the header intact
    assert torch.equal(load_images(paths, 24, tmp_path / "cache"), good)
    (again,) = (tmp_path / "cache" / "images-24").glob("*.npy")
    assert torch.equal(torch.from_numpy(np.load(again)), good)  # and the cache rewritten
    (tmp_path / "cache" / "images-24" / "index.json").unlink()  # shards no index vouches for: decoded again
    assert torch.equal(load_images(paths, 24, tmp_path / "cache"), good)


def test_float_images_are_the_8_bit_images_over_255(tmp_path: Path) -> None:
    """What the denoiser and its checks compute on: the classifier's 8-bit images as float32 in [0, 1],
    equal to reading an 8-bit PNG of them (a /256, a float64 result or a skipped quantisation fails)."""
    from medauc.data.images import load_image, save_png

    u8 = load_images(list(pd.read_csv(make_dataset(tmp_path, {"train": 1}))["path"]), 24)
    f = uint8_to_float(u8)
    assert f.dtype == np.float32 and f.shape == (4, 24, 24)
    assert np.array_equal(f[0], load_image(save_png(tmp_path / "u8.png", u8[0].numpy())))
    every = torch.arange(256, dtype=torch.uint8).reshape(1, 16, 16)
    assert np.array_equal(uint8_to_float(every).ravel(), (np.arange(256) / 255.0).astype(np.float32))
    # No images: an empty array and no cache file (a cached empty set would only litter the run folder).
    assert uint8_to_float(load_images([], 24, tmp_path / "cache")).shape == (0, 24, 24)
    assert not (tmp_path / "cache").exists()
