"""The five checks on generated images, each on tiny data with a known answer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medauc.augment import artefacts, checks, classifier_checks
from test_augment_fixtures import synthetic_images


@pytest.fixture(scope="module")
def originals():
    return synthetic_images(40, 32, np.random.default_rng(0))


def _five_each(n: int) -> tuple[np.ndarray, np.ndarray]:
    source = np.repeat(np.arange(n), 5)
    sigmas = np.tile([0.1, 0.2, 0.3, 0.4, 0.5], n)
    return source, sigmas


def test_planted_artefact_is_detected(originals):
    source, sigmas = _five_each(len(originals))
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:32, 0:32]
    pattern = 0.03 * ((yy + xx) % 2 * 2 - 1)  # a faint checkerboard: a generator's signature
    planted = np.clip(originals[source] + pattern + rng.normal(0, 0.002, (len(source), 32, 32)), 0, 1)
    d = artefacts.artefact_detectability(originals, planted, source, sigmas, seed=0, n_bootstrap=100)
    assert d["auc"] > 0.9
    assert d["ci"][0] > 0.8 and d["ci"][0] <= d["auc"] <= d["ci"][1]
    assert [r["sigma"] for r in d["per_sigma"]] == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert d["features"] and d["n_generated"] == len(source)


def test_identity_denoiser_leaves_no_signature(originals):
    source, sigmas = _five_each(len(originals))
    identical = originals[source].copy()  # a "denoiser" that gives back the clean image unchanged
    d = artefacts.artefact_detectability(originals, identical, source, sigmas, seed=0, n_bootstrap=100)
    assert abs(d["auc"] - 0.5) < 0.05
    assert d["ci"][0] <= 0.5 <= d["ci"][1]


def test_memorisation_flags_copies_and_images_closer_to_others(originals):
    n = len(originals)
    source, sigmas = _five_each(n)
    copies = checks.memorisation(originals[source], source, sigmas, originals, np.arange(n), threshold=0.98)
    assert copies["near_copy_share"] == 1.0 and copies["closer_to_other_share"] == 0.0
    assert copies["ssim_to_source"]["min"] > 0.999
    assert copies["sibling_ssim_mean"] > 0.999  # five identical restorations: no diversity
    # "generated" images that are really another training image: memorised, not restored
    swapped = originals[(source + 1) % n]
    mem = checks.memorisation(swapped, source, sigmas, originals, np.arange(n), threshold=0.98)
    assert mem["near_copy_share"] == 0.0 and mem["closer_to_other_share"] == 1.0
    assert mem["ssim_to_nearest_other"]["min"] > 0.999
    assert 0 < mem["baseline_nearest_ssim_mean"] < 0.999
    assert len(mem["per_sigma"]) == 5


def test_generated_quality_per_sigma(originals):
    source, sigmas = _five_each(4)
    noisy = np.clip(originals[source] + sigmas[:, None, None] * 0.2, 0, 1)
    q = checks.generated_quality(noisy, originals[source], sigmas)
    assert [r["sigma"] for r in q] == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert all(a["psnr"] > b["psnr"] for a, b in zip(q, q[1:]))  # more noise, lower PSNR


def _pred(ids, probs, classes=("healthy", "glioma")):
    df = pd.DataFrame({"image_id": ids, "label": "healthy"})
    for j, c in enumerate(classes):
        df[f"prob_{c}"] = [p[j] for p in probs]
    return df


def test_healthy_share_per_sigma():
    prov = pd.DataFrame({"image_id": ["a", "b", "c", "d"], "sigma": [0.1, 0.1, 0.5, 0.5]})
    pred = _pred(["a", "b", "c", "d"], [(0.9, 0.1), (0.8, 0.2), (0.7, 0.3), (0.2, 0.8)])
    a = classifier_checks.healthy_share(pred, prov, "healthy")
    assert a["share"] == 0.75 and a["n"] == 4 and a["predicted"] == {"healthy": 3, "glioma": 1}
    assert [(r["sigma"], r["share"]) for r in a["per_sigma"]] == [(0.1, 1.0), (0.5, 0.5)]
    assert a["ci"][0] < 0.75 < a["ci"][1]


def test_flip_rate_and_paired_comparison():
    test = _pred(["t1", "t2", "t3", "t4"], [(0.1, 0.9), (0.2, 0.8), (0.3, 0.7), (0.9, 0.1)])
    prov = pd.DataFrame({"image_id": [f"t{i}_r{s}" for i in range(1, 5) for s in (1, 2)],
                         "source_image_id": [f"t{i}" for i in range(1, 5) for _ in (1, 2)],
                         "sigma": [0.1, 0.5] * 4})
    # model A (trained on restorations) calls most restored tumours healthy; model B does not
    rest_a = _pred(prov["image_id"], [(0.9, 0.1)] * 6 + [(0.1, 0.9)] * 2)
    rest_b = _pred(prov["image_id"], [(0.1, 0.9)] * 8)
    ta = classifier_checks.flip_table(test, rest_a, prov, "healthy")
    tb = classifier_checks.flip_table(test, rest_b, prov, "healthy")
    sa, sb = classifier_checks.flip_summary(ta), classifier_checks.flip_summary(tb)
    assert sa["healthy_share_original"] == 0.25  # t4 was already called healthy
    assert sa["flip_rate"] == 1.0 and sb["flip_rate"] == 0.0  # of restored t1-t3 (called tumour before)
    assert sa["healthy_share_restored"] == 0.75
    cmp_ = classifier_checks.compare_flip(ta, tb, n_bootstrap=200, level=0.95, seed=0)
    assert cmp_["difference"] == 0.75 and cmp_["ci"][0] <= 0.75 <= cmp_["ci"][1]


def test_wilson_interval():
    lo, hi = classifier_checks.wilson(9766, 10000)
    assert lo < 0.9766 < hi and hi - lo < 0.01
    assert classifier_checks.wilson(0, 10)[0] == 0.0
    # Textbook values (Newcombe 1998; Agresti & Coull 1998). Mutation caught: a Wald interval, which
    # gives [0, 0] for 0 of 10 and [0.190, 0.810] for 5 of 10.
    np.testing.assert_allclose(classifier_checks.wilson(0, 10), [0.0, 0.2775], atol=1e-4)
    np.testing.assert_allclose(classifier_checks.wilson(5, 10), [0.2366, 0.7634], atol=1e-4)
    np.testing.assert_allclose(classifier_checks.wilson(81, 263), [0.2553, 0.3662], atol=1e-4)


def test_checks_a_and_e_resample_patients_when_known():
    # Check e's interval was over source images while every other interval was over patients. Two
    # patients of 6 source images each: the patient bootstrap has only 2 units, so its interval is far
    # wider than one over 12 images, and equals the cluster bootstrap over the patients.
    rows = []
    for i in range(12):
        rows.append({"image_id": f"r{i}", "source_image_id": f"t{i}", "sigma": 0.1, "subject": "p0" if i < 6 else "p1",
                     "healthy_original": False})
    ta = pd.DataFrame(rows).assign(healthy_restored=[True] * 6 + [False] * 6)
    tb = pd.DataFrame(rows).assign(healthy_restored=False)
    patients = classifier_checks.compare_flip(ta, tb, n_bootstrap=400, level=0.95, seed=0)
    images = classifier_checks.compare_flip(ta.drop(columns="subject"), tb.drop(columns="subject"), 400, 0.95, 0)
    assert (patients["unit"], patients["n_units"]) == ("patients", 2) and (images["unit"], images["n_units"]) == ("source images", 12)
    assert patients["ci"] == [0.0, 1.0]  # either patient drawn twice
    assert images["ci"][0] > 0.1 and images["ci"][1] < 0.9
    # check a: the same clustering; without patients, Wilson's interval over images
    pred = pd.DataFrame({"image_id": [f"g{i}" for i in range(12)], "prob_healthy": [0.9] * 6 + [0.1] * 6,
                         "prob_glioma": [0.1] * 6 + [0.9] * 6})
    prov = pd.DataFrame({"image_id": [f"g{i}" for i in range(12)], "sigma": 0.1, "subject": ["p0"] * 6 + ["p1"] * 6})
    a = classifier_checks.healthy_share(pred, prov, "healthy", 0.95, n_bootstrap=400, seed=0)
    assert a["unit"] == "patients" and a["n_patients"] == 2 and a["ci"] == [0.0, 1.0]
    b = classifier_checks.healthy_share(pred, prov.drop(columns="subject"), "healthy", 0.95)
    assert b["unit"] == "images" and b["ci"] == classifier_checks.wilson(6, 12)


def test_artefact_interval_and_folds_are_over_patients_when_known(originals):
    """Issue 24: check (d) resamples patients. Four slices per patient that share their statistics
    are one unit of evidence: the patient interval is wider than the per-source one."""
    n_pat, per = 10, 4
    base = synthetic_images(n_pat, 32, np.random.default_rng(5))
    rng = np.random.default_rng(6)
    slices = np.clip(np.repeat(base, per, axis=0) + rng.normal(0, 0.001, (n_pat * per, 32, 32)), 0, 1)
    patients = np.repeat([f"s{i}" for i in range(n_pat)], per)
    source, sigmas = _five_each(len(slices))
    # A faint signature whose strength is the patient's: how detectable depends on the patient.
    strength = np.repeat(np.linspace(0.0, 0.03, n_pat), per)[source]
    yy, xx = np.mgrid[0:32, 0:32]
    planted = np.clip(slices[source] + strength[:, None, None] * ((yy + xx) % 2 * 2 - 1), 0, 1)
    kw = dict(seed=0, n_bootstrap=400)
    by_source = artefacts.artefact_detectability(slices, planted, source, sigmas, **kw)
    by_patient = artefacts.artefact_detectability(slices, planted, source, sigmas, source_patients=patients, **kw)
    assert by_source["unit"] == "source images" and by_source["n_units"] == n_pat * per
    assert by_patient["unit"] == "patients" and by_patient["n_units"] == n_pat
    assert by_patient["ci"][1] - by_patient["ci"][0] > 1.3 * (by_source["ci"][1] - by_source["ci"][0])
    few = artefacts.artefact_detectability(slices, planted, source, sigmas, source_patients=np.repeat(["a", "b", "c", "d"], 10), **kw)
    assert few["unit"] == "patients" and few["n_units"] == 4 and few["folds"] == 4  # leave one patient out
    one = artefacts.artefact_detectability(slices, planted, source, sigmas, source_patients=np.repeat(["a"], 40), **kw)
    assert one["unit"] == "source images" and one["n_units"] == 40  # one patient is no unit to resample
    with pytest.raises(Exception, match="one entry per original"):
        artefacts.artefact_detectability(slices, planted, source, sigmas, source_patients=patients[:5], **kw)
