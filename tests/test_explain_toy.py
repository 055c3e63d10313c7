"""A tiny model trained on a planted-lesion task localises better than its randomised twin."""

from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import torch

from medauc.config import load_config, replace
from medauc.explain.passes import ExplainModel
from medauc.explain.stage import explain_models

SIZE, SIDE = 32, 6


def planted(n: int, rng: np.random.Generator):
    """Noise images (n, 32, 32); class 1 has a bright 6x6 square at a random place (its mask)."""
    x = (0.3 + 0.1 * rng.standard_normal((n, SIZE, SIZE))).astype(np.float32)
    y = np.arange(n) % 2
    masks = np.zeros((n, SIZE, SIZE), bool)
    for i in np.flatnonzero(y == 1):
        r, c = rng.integers(0, SIZE - SIDE + 1, 2)
        x[i, r : r + SIDE, c : c + SIDE] += 0.5
        masks[i, r : r + SIDE, c : c + SIDE] = True
    return np.clip(x, 0, 1), y, masks


def _create(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    # output_stride=8 keeps a 4x4 map at 32 px, so that there is something to localise with.
    return timm.create_model("test_resnet", num_classes=2, in_chans=1, output_stride=8)


@pytest.fixture(scope="module")
def trained():
    torch.set_num_threads(1)
    x, y, _ = planted(512, np.random.default_rng(0))
    model = _create(0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x)[:, None], torch.from_numpy(y)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(60):
        idx = torch.randint(0, len(xt), (32,), generator=gen)
        loss = torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_trained_model_localises_better_than_random_twin(trained, tmp_path):
    x, y, masks = planted(96, np.random.default_rng(1))
    # Hits within 4 px (half a cell of the 4x4 map) count, see medauc.explain.scores.
    cfg = replace(load_config("smoke"), **{"explain.per_class": 2, "explain.batch_size": 32, "explain.pointing_tolerance": 0.125})
    entry = ExplainModel(
        name="toy",
        model=trained,
        classes=["clear", "lesion"],
        prepare=lambda imgs: torch.from_numpy(np.asarray(imgs, dtype=np.float32))[:, None],
        input_shape=(1, SIZE, SIZE),
        make_twin=lambda: _create(123).eval(),
    )
    result = explain_models(
        [entry], list(x), y, [m if m.any() else None for m in masks], [f"img{i:03d}" for i in range(96)], cfg, tmp_path
    )
    out = result["models"]["toy"]["methods"]["gradcam"]
    t, r = out["trained"]["all"], out["random_twin"]["all"]
    assert result["models"]["toy"]["accuracy_on_sample"] > 0.9
    assert t["pointing_game"]["n"] == 48 and result["lesion_classes"] == ["lesion"]
    assert t["energy_ratio"]["mean"] > 1.5 > r["energy_ratio"]["mean"]
    assert t["pointing_game"]["mean"] > r["pointing_game"]["mean"]
    assert out["sanity"]["verdict"] == "better", out["sanity"]["text"]
    # Files: explain.json (valid JSON, no NaN), one panel per class, the score tables.
    stored = json.loads((tmp_path / "explain.json").read_text())
    assert stored["panels"]["gradcam"] == {"clear": "explain/gradcam_clear.png", "lesion": "explain/gradcam_lesion.png"}
    for rel in stored["panels"]["gradcam"].values():
        assert (tmp_path / rel).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    per_image = (tmp_path / "explain" / "per_image.csv").read_text().splitlines()
    assert len(per_image) == 1 + 2 * 48  # trained and twin, lesion images only
