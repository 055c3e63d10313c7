"""phantom.site: another virtual hospital changes the scanner and the population, not the anatomy or the class balance."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medauc.config import PhantomConfig, load_config, replace
from medauc.data.phantom.anatomy import load_anatomy
from medauc.data.phantom.cache import phantom_key
from medauc.data.phantom.design import class_counts, plan
from medauc.data.phantom.generate import generate_phantom
from medauc.data.phantom.render import render_subject
from medauc.data.phantom.sites import SITES, get_site
from medauc.errors import ConfigError, DataError
from medauc.validate import CHOICES

BASE = PhantomConfig(n=24, size=48, workers=1, subtle_fraction=0.0, slices_per_subject=(1, 2))


@pytest.fixture(scope="module")
def anat():
    return load_anatomy("auto")


def _images(folder):
    rows = pd.read_csv(folder / "images.csv")
    return rows, np.stack([np.asarray(Image.open(folder / p), dtype=np.float64) for p in rows["path"]])


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    out = {}
    for site in ("", "b"):
        folder = tmp_path_factory.mktemp(f"site{site or 'a'}")
        summary = generate_phantom(folder, replace(BASE, site=site), seed=3)
        out[site] = (summary, *_images(folder), pd.read_csv(folder / "subjects.csv"))
    return out


def test_site_keeps_class_balance_and_subject_plan(phantoms):
    a, b = phantoms[""], phantoms["b"]
    assert a[0]["counts"] == b[0]["counts"] == class_counts(BASE)
    assert a[1]["label"].value_counts().to_dict() == b[1]["label"].value_counts().to_dict()
    assert plan(BASE, 3) == plan(replace(BASE, site="b"), 3)


def test_site_changes_image_statistics_and_population(phantoms):
    (_, _, ia, sa), (_, _, ib, sb) = phantoms[""], phantoms["b"]
    # Site b: a darker, noisier, lower-contrast scanner; smaller heads, larger ventricles.
    assert ib.mean() < ia.mean() - 3
    assert np.percentile(ib, 99) < np.percentile(ia, 99)
    assert sb["noise"].mean() > sa["noise"].mean()
    assert sb["ventricles"].mean() > sa["ventricles"].mean()
    assert sb["head_scale"].mean() < sa["head_scale"].mean()
    assert sb["spacing_mm"].max() > 0 and sb["contrast"].mean() < sa["contrast"].mean()


def test_default_site_draws_as_before(anat):
    # The default site's ranges are the ones the phantom always drew from: same images as without a site.
    r = render_subject(anat, "glioma", BASE, 5, 0, 1)
    again = render_subject(anat, "glioma", replace(BASE, site=""), 5, 0, 1)
    assert np.array_equal(r.slices[0].image, again.slices[0].image)
    assert r.facts["noise"] >= 0.015 and r.facts["noise"] <= 0.06


def test_site_enters_the_cache_key_only_when_set():
    cfg = load_config("demo")
    assert phantom_key(cfg) == phantom_key(replace(cfg, **{"phantom.site": ""}))
    assert phantom_key(cfg) != phantom_key(replace(cfg, **{"phantom.site": "b"}))


def test_unknown_site_is_refused_and_choices_match_presets():
    assert CHOICES["phantom.site"] == tuple(SITES)
    with pytest.raises(ConfigError, match="phantom.site"):
        load_config("smoke", ["phantom.site=z"])
    with pytest.raises(DataError, match="sites"):
        get_site("z")
