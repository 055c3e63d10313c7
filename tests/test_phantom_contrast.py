"""phantom.lesion_contrast: the same slices and shapes, only the tumour's intensity scaled."""

from __future__ import annotations

import numpy as np
import pytest

from medauc.config import PhantomConfig, load_config, replace
from medauc.data.phantom.anatomy import load_anatomy
from medauc.data.phantom.cache import phantom_key
from medauc.data.phantom.design import check_config
from medauc.data.phantom.render import render_subject
from medauc.errors import DataError

BASE = PhantomConfig(n=8, size=64, workers=1, subtle_fraction=0.0)


def render(anat, cls, pcfg, seed, index):
    return render_subject(anat, cls, pcfg, seed, index, 1).slices[0]


@pytest.fixture(scope="module")
def anat():
    return load_anatomy("auto")


@pytest.mark.parametrize("cls", ["glioma", "meningioma"])
def test_contrast_changes_only_the_tumour(anat, cls):
    a = render(anat, cls, BASE, 5, 0)
    b = render(anat, cls, replace(BASE, lesion_contrast=2.0), 5, 0)
    assert np.array_equal(a.mask, b.mask) and a.facts == b.facts
    diff = np.abs(a.image.astype(int) - b.image.astype(int))
    lesion = a.mask > 0
    # Far from the lesion (beyond the blur and the soft edge) nothing moves.
    far = np.ones_like(lesion)
    rows, cols = np.nonzero(lesion)
    far[max(rows.min() - 6, 0) : rows.max() + 7, max(cols.min() - 6, 0) : cols.max() + 7] = False
    assert diff[far].max() == 0
    assert diff[lesion].mean() > 5.0


def test_healthy_images_do_not_change(anat):
    a = render(anat, "healthy", BASE, 5, 3)
    b = render(anat, "healthy", replace(BASE, lesion_contrast=2.0), 5, 3)
    assert np.array_equal(a.image, b.image)


def test_contrast_enters_the_cache_key_and_bad_values_are_refused():
    cfg = load_config("demo")
    assert phantom_key(cfg) != phantom_key(replace(cfg, **{"phantom.lesion_contrast": cfg.phantom.lesion_contrast + 0.5}))
    with pytest.raises(DataError, match="lesion_contrast"):
        check_config(replace(BASE, lesion_contrast=0.0))
