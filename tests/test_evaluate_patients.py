"""Statistics at the level of patients: subjects in predictions files, the patient (cluster) bootstrap,
Obuchowski's clustered DeLong, coverage with correlated slices, and the smallest detectable difference."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from scipy.stats import norm

from medauc import cli
from medauc.config import load_config
from medauc.errors import EvaluationError
from medauc.evaluate import auc_ci, delong_test, evaluate_predictions
from medauc.evaluate.bootstrap import cluster_weights, patient_strata, percentile_interval, weight_chunks
from medauc.evaluate.delong import delong_variance
from medauc.evaluate.metrics import weighted_auc
from medauc.evaluate.predictions import from_arrays, read_predictions
from medauc.evaluate.power import detectable_difference, images_for
from medauc.evaluate.synthetic import simulate_run


def _clustered_data(seed: int, n_patients: int = 40, mixed: float = 0.2, ties: bool = False):
    """Patients of 1-8 slices; ``mixed`` of the slices take the other class; a patient effect shared by its slices."""
    rng = np.random.default_rng(seed)
    codes = np.repeat(np.arange(n_patients), rng.integers(1, 9, n_patients))
    y = (rng.random(n_patients) < 0.5)[codes]
    flip = rng.random(codes.size) < mixed
    y[flip] = ~y[flip]
    u = rng.normal(0, 1, n_patients)[codes]
    a = 1.2 * y + u + rng.normal(0, 0.7, codes.size)
    b = 0.9 * y + 0.8 * u + rng.normal(0, 0.7, codes.size)
    if ties:
        a, b = np.round(a, 1), np.round(b, 1)
    return y, a, b, codes


def _obuchowski_by_hand(y, s1, s2, codes):
    """Obuchowski (1997) written out as in the Cleveland Clinic's funcs_clusteredROC.R: O(n^2) kernels, one
    loop per patient. Returns (var1, var2, cov12)."""
    def psi(x, z):
        return (x > z) + 0.5 * (x == z)

    out = []
    for s in (s1, s2):
        X, Y = s[y], s[~y]
        auc = psi(X[:, None], Y[None, :]).mean()
        xc, yc, m, n = [], [], [], []
        for c in np.unique(codes):
            xs, ys = s[(codes == c) & y], s[(codes == c) & ~y]
            xc.append(sum(psi(x, Y).mean() for x in xs))
            yc.append(sum(psi(X, z).mean() for z in ys))
            m.append(xs.size)
            n.append(ys.size)
        out.append((auc, np.array(xc), np.array(yc), np.array(m), np.array(n)))
    (a1, x1, y1, m, n), (a2, x2, y2, _, _) = out
    M, N, i = m.sum(), n.sum(), m.size
    i10, i01 = (m > 0).sum(), (n > 0).sum()

    def s10(p, q, ap, aq):
        return i10 / ((i10 - 1) * M) * np.sum((p - m * ap) * (q - m * aq))

    def s01(p, q, ap, aq):
        return i01 / ((i01 - 1) * N) * np.sum((p - n * ap) * (q - n * aq))

    def s11(p, q, ap, aq):  # positives of one, negatives of the other
        return i / (i - 1) * np.sum((p - m * ap) * (q - n * aq))

    var1 = s10(x1, x1, a1, a1) / M + s01(y1, y1, a1, a1) / N + 2 * s11(x1, y1, a1, a1) / (M * N)
    var2 = s10(x2, x2, a2, a2) / M + s01(y2, y2, a2, a2) / N + 2 * s11(x2, y2, a2, a2) / (M * N)
    cov = s10(x1, x2, a1, a2) / M + s01(y1, y2, a1, a2) / N + (s11(x1, y2, a1, a2) + s11(x2, y1, a2, a1)) / (M * N)
    return var1, var2, cov


@pytest.mark.parametrize("ties", [False, True])
def test_clustered_delong_equals_obuchowskis_formulas_written_out(ties):
    y, a, b, codes = _clustered_data(0, ties=ties)
    var1, var2, cov = _obuchowski_by_hand(y, a, b, codes)
    r = delong_test(y, a, b, clusters=codes)
    assert (r.var_a, r.var_b, r.covariance) == pytest.approx((var1, var2, cov), rel=1e-12)
    assert r.n_patients == 40 and r.se == pytest.approx(np.sqrt(var1 + var2 - 2 * cov), rel=1e-12)
    assert delong_variance(y, a, clusters=codes)[1] == pytest.approx(var1, rel=1e-12)


def test_one_image_per_patient_is_exactly_plain_delong():
    # I10/(I10 - 1) = M/(M - 1) turns Obuchowski's S10 into DeLong's ddof-1 variance and S11 is 0:
    # no n/(n - 1) factor is left over, so the two agree to rounding.
    y, a, b, _ = _clustered_data(1)
    own = np.array([f"p{i}" for i in range(y.size)])
    plain, clustered = delong_test(y, a, b), delong_test(y, a, b, clusters=own)
    for field in ("var_a", "var_b", "covariance", "z", "p_value", "ci_low", "ci_high"):
        assert getattr(clustered, field) == pytest.approx(getattr(plain, field), rel=1e-12, abs=1e-15), field
    assert auc_ci(y, a, clusters=own).variance == pytest.approx(auc_ci(y, a).variance, rel=1e-12)


def test_clustered_variance_matches_a_brute_force_cluster_bootstrap():
    """Independent reference: the variance over 4,000 unstratified patient resamples (every image weighted by
    how often its patient was drawn) of the AUC and of the paired difference, on the same data."""
    y, a, b, codes = _clustered_data(3, n_patients=60, mixed=0.15)
    rng = np.random.default_rng(0)
    counts = np.stack([np.bincount(rng.integers(0, 60, 60), minlength=60) for _ in range(4000)]).astype(float)
    ra, rb = weighted_auc(counts[:, codes], a, y), weighted_auc(counts[:, codes], b, y)
    r, plain = delong_test(y, a, b, clusters=codes), delong_test(y, a, b)
    # measured: var(AUC a) bootstrap 0.00203, Obuchowski 0.00201, plain DeLong 0.00080;
    # var(difference) bootstrap 0.00062, Obuchowski 0.00059
    assert r.var_a == pytest.approx(np.var(ra, ddof=1), rel=0.1)
    assert r.se ** 2 == pytest.approx(np.var(ra - rb, ddof=1), rel=0.1)
    assert plain.var_a < 0.5 * np.var(ra, ddof=1)  # the image-level variance misses the patient effect


def test_patient_level_intervals_cover_where_image_level_ones_do_not():
    """40 patients x 6 slices, class per patient, score = y + patient effect (sd 1) + slice noise (sd 0.5).
    Measured over 300 test sets: image-level DeLong 56% and image bootstrap 56%; Obuchowski 93% and the
    patient bootstrap 93% (nominal 95%)."""
    rng = np.random.default_rng(0)
    n_patients, slices = 40, 6
    codes = np.repeat(np.arange(n_patients), slices)
    y = (np.arange(n_patients) % 2 == 1)[codes]
    truth = norm.cdf(1.0 / np.sqrt(2 * (1.0 + 0.25)))  # P(score of a positive slice > score of a negative one)
    plan = patient_strata(codes, y.astype(int))
    hits = {"delong": 0, "obuchowski": 0, "image_bootstrap": 0, "patient_bootstrap": 0}
    reps = 300
    for _ in range(reps):
        s = y + rng.normal(0, 1, n_patients)[codes] + rng.normal(0, 0.5, y.size)
        for name, clusters in (("delong", None), ("obuchowski", codes)):
            ci = auc_ci(y, s, clusters=clusters)
            hits[name] += ci.low <= truth <= ci.high
        for name, W in (("image_bootstrap", next(weight_chunks(y.astype(int), 300, int(rng.integers(1 << 31))))),
                        ("patient_bootstrap", cluster_weights(*plan, 300, rng))):
            low, high = percentile_interval(weighted_auc(W, s, y), 0.95)
            hits[name] += low <= truth <= high
    cover = {k: v / reps for k, v in hits.items()}
    assert cover["delong"] < 0.8 and cover["image_bootstrap"] < 0.8, cover
    assert 0.9 <= cover["obuchowski"] <= 0.99 and 0.9 <= cover["patient_bootstrap"] <= 0.99, cover


def test_patient_bootstrap_weights_draw_whole_patients_within_class_patterns():
    codes = np.array([0, 0, 0, 1, 1, 2, 3, 3, 4, 5, 5, 6, 7])
    y = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 0, 1, 0])  # patient 5 holds both classes, alone in its pattern
    pcodes, stratum = patient_strata(codes, y)
    # patients 0-2 and 7 hold class 0, 3, 4 and 6 class 1; patient 5's lone pattern joins the largest stratum
    assert len({stratum[p] for p in (0, 1, 2, 5, 7)}) == 1 and stratum[3] == stratum[4] == stratum[6] != stratum[0]
    W = cluster_weights(pcodes, stratum, 500, np.random.default_rng(0))
    for p in range(8):
        assert (W[:, codes == p] == W[:, codes == p][:, :1]).all()  # every slice of a patient has its patient's weight
    per_patient = W[:, [np.flatnonzero(codes == p)[0] for p in range(8)]]
    assert (per_patient[:, [0, 1, 2, 5, 7]].sum(axis=1) == 5).all() and (per_patient[:, [3, 4, 6]].sum(axis=1) == 3).all()
    assert per_patient.std(axis=0).min() > 0  # no patient is redrawn in every resample
    again = cluster_weights(pcodes, stratum, 500, np.random.default_rng(0))
    assert np.array_equal(W, again)
    # two lone patterns pool together rather than each redrawing itself in every resample
    _, two = patient_strata(np.array([0, 1, 1, 2, 3, 4]), np.array([0, 0, 1, 2, 0, 0]))
    assert two[1] == two[2] and two[0] == two[3] == two[4] != two[1]


def test_power_of_the_delong_test_at_the_detectable_difference_is_80_percent():
    """A pilot of 200 images gives the SE; scaled to the N where the true AUC gap is the smallest detectable
    difference, the DeLong test rejects about 80% of new test sets of N images. Measured: N = 855, 83% of
    600 (DeLong's SE is slightly conservative); a one-sided z (1.645) would give about 70%, no power term 50%."""
    rng = np.random.default_rng(0)

    def test_set(n):
        y = np.arange(n) % 2 == 1
        e = rng.multivariate_normal([0, 0], [[1, 0.6], [0.6, 1]], size=n)
        return y, 1.2 * y + e[:, 0], 1.0 * y + e[:, 1]

    gap = norm.cdf(1.2 / np.sqrt(2)) - norm.cdf(1.0 / np.sqrt(2))
    se = np.sqrt(np.mean([delong_test(*test_set(200)).se ** 2 for _ in range(200)]))
    n_planned = int(np.ceil(images_for(se, 200, gap)))
    assert detectable_difference(se, 0.95, 0.8, n_now=200, n_planned=n_planned) == pytest.approx(gap, rel=2e-3)
    power = np.mean([delong_test(*test_set(n_planned)).p_value < 0.05 for _ in range(600)])
    assert 0.76 <= power <= 0.9, (n_planned, power)
    assert detectable_difference(se, 0.95, 0.8) == pytest.approx((norm.ppf(0.975) + norm.ppf(0.8)) * se)
    assert np.isnan(detectable_difference(float("nan")))
    with pytest.raises(EvaluationError, match="power"):
        detectable_difference(se, power=1.0)


# ----------------------------------------------------------------------------- predictions files with subjects


def test_subject_column_is_read_kept_and_checked(tmp_path):
    f = tmp_path / "p.csv"
    f.write_text("image_id,label,prob_healthy,prob_glioma,subject\n"
                 "a,healthy,0.8,0.2,s1\nb,glioma,0.3,0.7,s2\nc,glioma,0.4,0.6,s2\n")
    p = read_predictions(f)
    assert p.subject.tolist() == ["s1", "s2", "s2"] and p.n_subjects == 2
    assert p.reorder(np.array(["c", "a", "b"])).subject.tolist() == ["s2", "s1", "s2"]
    assert p.with_classes(["glioma", "healthy"]).subject.tolist() == ["s1", "s2", "s2"]
    empty = tmp_path / "empty.csv"
    empty.write_text("image_id,label,prob_healthy,prob_glioma,subject\na,healthy,0.8,0.2,\nb,glioma,0.3,0.7,\n")
    assert read_predictions(empty).subject is None and read_predictions(empty).n_subjects is None
    partial = tmp_path / "partial.csv"
    partial.write_text("image_id,label,prob_healthy,prob_glioma,subject\na,healthy,0.8,0.2,s1\nb,glioma,0.3,0.7,\n")
    with pytest.raises(EvaluationError, match=r"partial\.csv: the subject \(patient\) column is empty in rows \[3\]"):
        read_predictions(partial)
    with pytest.raises(EvaluationError, match=r"empty in 1 of 2 rows \(image ids \['b'\]\)"):
        from_arrays(["healthy", "glioma"], [[0.8, 0.2], [0.3, 0.7]], ["healthy", "glioma"], image_ids=["a", "b"], subject=["s1", ""])


def _patient_run(tmp_path, **kw):
    return simulate_run(tmp_path, {"a": 2.0, "b": 1.6}, n_per_class=(60, 40, 40, 40), n_val_per_class=None,
                        slices_per_patient=5, **kw)


def _without_subjects(files, tmp_path):
    out = {}
    for model, seeds in files.items():
        for seed, path in seeds.items():
            rows = list(csv.DictReader(open(path)))
            dest = tmp_path / "plain" / model / f"{seed}.csv"
            dest.parent.mkdir(parents=True, exist_ok=True)
            with open(dest, "w", newline="") as fh:
                w = csv.DictWriter(fh, [k for k in rows[0] if k != "subject"], extrasaction="ignore")
                w.writeheader()
                w.writerows(rows)
            out.setdefault(model, {})[seed] = dest
    return out


def test_evaluation_resamples_patients_and_says_so(tmp_path):
    files = _patient_run(tmp_path)
    cfg = load_config("smoke", ["evaluate.n_bootstrap=300"])
    res = evaluate_predictions(files, cfg)
    plain = evaluate_predictions(_without_subjects(files, tmp_path), cfg)
    assert (res["unit"], res["n_images"], res["n_patients"]) == ("patients", 180, 36)
    assert (plain["unit"], plain["n_patients"]) == ("images", None)
    seed = res["models"]["a"]["seeds"]["0"]
    assert seed["n_patients"] == 36 and seed["n_patients_per_class"] == {"healthy": 12, "glioma": 8, "meningioma": 8, "pituitary": 8}
    # same point estimates; the patient intervals are wider, as slices share 70% of their noise (measured width
    # ratios: accuracy 1.28, macro AUC 1.28, screening AUC 1.39; a bootstrap that ignored the patients gives 1.0)
    for m in ("accuracy", "auc_macro", "screening_auc"):
        pc, ic = seed["metrics"][m], plain["models"]["a"]["seeds"]["0"]["metrics"][m]
        assert pc["value"] == ic["value"]
        assert pc["high"] - pc["low"] > 1.15 * (ic["high"] - ic["low"]), m
    rows = {(r["metric"]): r for r in res["comparisons"]}
    assert all(r["unit"] == "patients" and r["n_patients"] == 36 for r in res["comparisons"])
    a, b = read_predictions(files["a"][0]), read_predictions(files["b"][0])
    ref = delong_test(a.positive, a.screening_score, b.screening_score, clusters=a.subject)
    assert rows["screening_auc"]["p_value"] == pytest.approx(ref.p_value, rel=1e-12)
    assert rows["screening_auc"]["detectable"] == pytest.approx(detectable_difference(ref.se))
    d = rows["accuracy"]
    assert d["detectable"] == pytest.approx((norm.ppf(0.975) + norm.ppf(0.8)) * d["se"]) and d["se"] > 0
    assert "patient (cluster) bootstrap" in res["definitions"]["interval"] and "Obuchowski" in res["definitions"]["delong"]


def test_a_class_of_few_patients_is_not_assessable_however_many_slices(tmp_path):
    files = simulate_run(tmp_path, {"a": 2.0, "b": 1.6}, n_per_class=(60, 40, 40, 10), n_val_per_class=None,
                         slices_per_patient=5)  # pituitary: 10 slices of 2 patients
    res = evaluate_predictions(files, load_config("smoke", ["evaluate.n_bootstrap=50"]))
    rows = {r["metric"]: r for r in res["comparisons"]}
    for m in ("auc_pituitary", "sensitivity_pituitary", "auc_macro"):
        assert rows[m]["note"] == "not assessable: too few test patients: pituitary has 2 (fewer than 5)", m
        assert rows[m]["significant"] is None
    assert rows["auc_glioma"]["note"] == "" and rows["screening_auc"]["note"] == ""


def test_paired_files_must_agree_on_patients(tmp_path):
    files = _patient_run(tmp_path)
    plain = _without_subjects(files, tmp_path)
    cfg = load_config("smoke", ["evaluate.n_bootstrap=20"])
    with pytest.raises(EvaluationError, match="names each image's patient .* but .* does not"):
        evaluate_predictions({"a": files["a"], "b": plain["b"]}, cfg)
    other = tmp_path / "other.csv"
    text = files["b"][0].read_text().replace("healthy-p000", "healthy-p999")
    other.write_text(text)
    with pytest.raises(EvaluationError, match="different patients .* for 5 images"):
        evaluate_predictions({"a": files["a"], "b": {0: other}}, cfg)


def test_compare_detectable_prints_the_smallest_difference_now_and_for_a_planned_study(tmp_path, capsys):
    files = _patient_run(tmp_path)
    a, b = str(files["a"][0]), str(files["b"][0])
    assert cli.main(["compare", a, b, "--n-bootstrap", "200", "--detectable", "--test-images", "720"]) == 0
    out = capsys.readouterr().out
    assert "180 test images of 36 patients; intervals and tests over patients" in out
    assert "at N=720" in out and "same images per patient" in out
    assert cli.main(["compare", a, b, "--n-bootstrap", "200", "--detectable", "--test-images", "720", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    auc = next(r for r in data["detectable"] if r["metric"] == "screening_auc")
    assert auc["detectable_planned"] == pytest.approx(auc["detectable"] / 2)  # 4x the images: half the SE
    assert auc["images_for_observed"] == pytest.approx(180 * (auc["detectable"] / abs(auc["difference"])) ** 2)
    assert data["unit"] == "patients" and data["n_patients"] == 36
    assert cli.main(["compare", a, b, "--n-bootstrap", "50"]) == 0
    assert "detectable" in capsys.readouterr().out
    assert cli.main(["compare", a, b, "--test-images", "10"]) == 2  # only with --detectable
    assert "--test-images" in capsys.readouterr().err


def test_report_states_the_unit_and_the_detectable_difference(tmp_path):
    from medauc import runs
    from medauc.evaluate import evaluate_stage
    from medauc.report import report_stage

    for with_patients in (True, False):
        root = tmp_path / str(with_patients)
        simulate_run(root, {"test_resnet": 2.0, "test_vit": 1.9}, n_per_class=(30, 25, 25, 25),
                     slices_per_patient=5 if with_patients else 0)
        cfg = load_config("smoke", ["evaluate.n_bootstrap=100", "model.names=[test_resnet,test_vit]", "train.seeds=[0]"])
        run = runs.open_run(root, cfg)
        evaluate_stage(cfg, run)
        report_stage(cfg, run)
        md = (run / "report.md").read_text()
        unit = "95% CI over patients (n=21)" if with_patients else "95% CI over images (no patient ids known)"
        assert unit in md
        comparisons = list(csv.DictReader(open(run / "comparisons.csv")))
        row = next(r for r in comparisons if r["metric"] == "auc_macro")
        line = next(x for x in md.splitlines() if x.startswith("| auc\\_macro | primary | test\\_resnet | test\\_vit |"))
        assert line.endswith(f"| {float(row['detectable']):.3f} | {'yes' if row['significant'] == 'True' else 'no'} |")
        assert "smallest detectable" in md or row["significant"] == "True"


def test_missing_patient_ids_are_a_clear_error_not_a_typeerror_or_one_patient():
    # Issue 27: None ids raised a raw TypeError from np.unique; NaN ids were silently one patient
    import re

    from medauc.evaluate import delong_test

    y = np.array([0, 1] * 10)
    a, b = np.linspace(0, 1, 20), np.linspace(1, 0, 20)
    ids = [f"p{i % 10}" for i in range(20)]
    for bad, first in (([None] + ids[1:], [0]), (ids[:3] + [float("nan")] * 17, [3, 4, 5, 6, 7]), (ids[:-1] + [" "], [19])):
        with pytest.raises(EvaluationError, match=rf"patient ids\): {20 - len([v for v in bad if isinstance(v, str) and v.strip()])} of 20 "
                                                   rf"are missing .*positions {re.escape(str(first))}"):
            delong_test(y, a, b, clusters=bad)
    assert np.isfinite(delong_test(y, a, b, clusters=ids).p_value)
