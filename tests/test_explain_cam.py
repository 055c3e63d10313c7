"""The CAM wrapper: every family, the layer and ViT grid from the model, no hooks left behind."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from torch import nn

from medauc.config import ConfigError
from medauc.errors import ModelError
from medauc.explain.cam import CamExplainer, check_methods, count_hooks
from medauc.explain.layers import TokensToGrid, find_target_layer

FAMILIES = [
    ("test_resnet", {}, 64),
    ("test_efficientnet", {}, 64),
    ("test_convnext", {}, 64),
    ("test_vit", {"img_size": 48}, 48),
    ("densenet121", {}, 32),
]


def _model(name, kw, classes=3):
    torch.manual_seed(0)
    return timm.create_model(name, num_classes=classes, in_chans=1, **kw).eval()


@pytest.mark.parametrize("name,kw,size", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_maps_have_input_size_and_unit_range(name, kw, size):
    model = _model(name, kw)
    x = torch.rand(3, 1, size, size, generator=torch.Generator().manual_seed(1))
    before = count_hooks(model)
    with CamExplainer(model, "gradcam", (1, size, size)) as cam:
        maps, logits = cam(x, [0, 1, 2])
        assert count_hooks(model) > before  # the hooks are really there while in use
    assert maps.shape == (3, size, size) and maps.dtype == np.float32
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    assert maps.max() > 0.5  # a real map, normalised to a maximum of 1, not a blank one
    assert logits.shape == (3, 3)
    with torch.no_grad():
        np.testing.assert_allclose(logits, model(x).numpy(), rtol=1e-4, atol=1e-4)
    assert count_hooks(model) == before


def test_vit_grid_and_prefix_come_from_the_model():
    model = _model("test_vit", {"img_size": 48})  # 16 px patches -> a 3x3 grid, not 14x14
    layer = find_target_layer(model, (1, 48, 48))
    assert isinstance(layer.reshape, TokensToGrid)
    assert layer.reshape.grid == (3, 3) and layer.reshape.prefix == model.num_prefix_tokens == 1
    # The last block feeds only the class token to the head: its patch tokens get no gradient,
    # so the probe steps back one block.
    assert layer.name == model.feature_info[-2]["module"]


def test_methods_share_one_interface():
    model = _model("test_resnet", {})
    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(2))
    maps = {}
    for method in ("gradcam", "gradcampp", "scorecam"):
        with CamExplainer(model, method, (1, 64, 64)) as cam:
            maps[method], _ = cam(x, [0, 1])
        assert maps[method].shape == (2, 64, 64)
        assert 0.0 <= maps[method].min() and maps[method].max() <= 1.0
    assert not np.allclose(maps["gradcam"], maps["scorecam"])
    with pytest.raises(ConfigError, match="valid: gradcam"):
        check_methods(["gradcam", "lime"])


def test_hooks_removed_after_an_error_inside_the_block():
    model = _model("test_resnet", {})
    before = count_hooks(model)
    with pytest.raises(IndexError):
        # pytorch-grad-cam's own __exit__ swallows IndexError; ours must not.
        with CamExplainer(model, "gradcam", (1, 64, 64)) as cam:
            cam(torch.rand(1, 1, 64, 64), [7])  # class 7 of 3: IndexError in the target
    assert count_hooks(model) == before
    with pytest.raises(ValueError, match="got 2 classes for 1 images"):
        with CamExplainer(model, "gradcampp", (1, 64, 64)) as cam:
            cam(torch.rand(1, 1, 64, 64), [0, 1])
    assert count_hooks(model) == before
    with pytest.raises(RuntimeError):
        with CamExplainer(model, "scorecam", (1, 64, 64)):
            raise RuntimeError("boom")
    assert count_hooks(model) == before


def test_model_without_a_usable_layer_is_named():
    class Flat(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(16, 2)

        def forward(self, x):
            return self.fc(x.flatten(1))

    with pytest.raises(ModelError, match="Flat reports no feature_info"):
        find_target_layer(Flat(), (1, 4, 4))
    model = _model("test_resnet", {})
    with pytest.raises(ModelError, match="not a module of test_resnet"):
        find_target_layer(model, (1, 64, 64), name="layer9")
    with pytest.raises(ModelError, match="'fc' of test_resnet outputs shape"):
        find_target_layer(model, (1, 64, 64), name="fc")
    # At 32 px no reported layer (the finest is the stem, 16x16) has a 32x32 map.
    with pytest.raises(ModelError, match="test_resnet has no usable layer to explain: layer4 has a 1x1 map"):
        find_target_layer(model, (1, 32, 32), min_grid=32)
    assert count_hooks(model) == 0


def test_explicit_layer_overrides_the_search():
    model = _model("test_resnet", {})
    layer = find_target_layer(model, (1, 64, 64), name="layer3")
    assert layer.name == "layer3" and layer.grid == (4, 4)
    assert find_target_layer(model, (1, 64, 64)).name == "layer4"
    assert find_target_layer(model, (1, 64, 64), min_grid=4).name == "layer3"


def test_same_maps_as_pytorch_grad_cam_used_directly():
    # The wrapper starts the graph at the target layer; that must not change the maps.
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    for name, kw, size in (FAMILIES[0], FAMILIES[3]):
        model = _model(name, kw)
        x = torch.rand(2, 1, size, size, generator=torch.Generator().manual_seed(3))
        with CamExplainer(model, "gradcam", (1, size, size)) as cam:
            ours, _ = cam(x, [1, 2])
        with GradCAM(model, [cam.layer.module], reshape_transform=cam.layer.reshape) as direct:
            theirs = direct(input_tensor=x, targets=[ClassifierOutputTarget(1), ClassifierOutputTarget(2)])
        np.testing.assert_allclose(ours, theirs, atol=1e-5)
        assert torch.is_grad_enabled()
