"""train.zero_head: a new classifier head starts at logits 0 (cross-entropy ln C) for any timm model."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from medauc.classify.models import create_model


@pytest.mark.parametrize("name", ["test_efficientnet", "test_resnet", "test_vit"])
def test_zero_head_starts_at_log_c(name):
    torch.manual_seed(0)
    x = torch.randn(8, 1, 32, 32)
    model = create_model(name, 4, 1, 32, zero_head=True).train()
    logits = model(x)
    assert torch.count_nonzero(logits) == 0
    assert F.cross_entropy(logits, torch.arange(8) % 4).item() == pytest.approx(math.log(4))
    # The head still learns: its gradient is not zero.
    F.cross_entropy(logits, torch.arange(8) % 4).backward()
    head = model.get_classifier()
    assert head.weight.grad.abs().sum() > 0


def test_default_keeps_timm_init():
    torch.manual_seed(0)
    model = create_model("test_efficientnet", 4, 1, 32).train()
    assert model(torch.randn(8, 1, 32, 32)).abs().max() > 0
