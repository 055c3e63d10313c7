"""The built-in phantom: anatomy, lesion placement, masks, determinism, fallback, confounds, subjects."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage as ndi

from medauc.config import PhantomConfig, load_config, replace
from medauc.data.phantom import CLASSES, class_counts, ensure_phantom, generate_phantom
from medauc.data.phantom.anatomy import load_anatomy
from medauc.data.phantom.design import plan
from medauc.data.phantom.render import render_subject
from medauc.errors import DataError

SMALL = PhantomConfig(n=16, size=80, workers=1)


@pytest.fixture(scope="module")
def anat():
    return load_anatomy("auto")


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantom")
    summary = generate_phantom(out, SMALL, seed=3)
    return out, summary


def render(anat, cls, pcfg, seed, index):
    """The first slice of subject ``index``, a subject of one slice."""
    return render_subject(anat, cls, pcfg, seed, index, 1).slices[0]


def _renders(anat, cls, n, pcfg=SMALL, seed=11):
    return [render(anat, cls, pcfg, seed, i) for i in range(n)]


def test_counts_follow_kaggle_proportions():
    counts = class_counts(PhantomConfig(n=1000))
    assert sum(counts.values()) == 1000
    assert counts == {"healthy": 285, "glioma": 231, "meningioma": 234, "pituitary": 250}
    assert class_counts(PhantomConfig(counts={"healthy": 5, "pituitary": 2})) == {
        "healthy": 5, "glioma": 0, "meningioma": 0, "pituitary": 2}
    with pytest.raises(DataError, match="unknown class 'tumour'"):
        class_counts(PhantomConfig(counts={"tumour": 3}))


def test_layout_and_masks_nonempty_exactly_for_tumours(phantom):
    out, summary = phantom
    meta = json.loads((out / "phantom.json").read_text())
    assert meta["seed"] == 3 and meta["anatomy"]["source"] in ("colin27", "mni152")
    assert sum(meta["counts"].values()) == SMALL.n == summary["n_images"]
    for name in ["montage.png", "montage_masks.png", "montage_subjects.png", "images.csv", "subjects.csv",
                 *(f"montage_{c}.png" for c in CLASSES)]:
        assert (out / name).is_file(), name
    for cls in CLASSES:
        files = sorted((out / cls).glob("*.png"))
        assert len(files) == meta["counts"][cls]
        for f in files:
            img = Image.open(f)
            assert img.mode == "L" and img.size == (80, 80)
            mask = np.asarray(Image.open(out / "masks" / cls / f.name))
            assert set(np.unique(mask)) <= {0, 255}
            assert (mask.max() == 255) == (cls != "healthy"), f


def test_slices_show_a_head_with_brain(anat):
    for cls in CLASSES:
        for r in _renders(anat, cls, 3):
            share = float((r.brain() > 0.5).mean())
            assert 0.12 < share < 0.6, (cls, share)
            # Background outside the head is dark, the brain is not.
            assert r.image[r.brain() > 0.5].mean() > 3 * np.percentile(r.image, 5) + 10


def test_glioma_lies_inside_the_brain(anat):
    for r in _renders(anat, "glioma", 4):
        m = r.mask > 0
        inside = (r.brain() > 0.5)[m].mean()
        assert inside > 0.9, inside


def test_meningioma_touches_the_brain_surface_or_falx(anat):
    for r in _renders(anat, "meningioma", 4):
        m = r.mask > 0
        outside = r.brain() < 0.5
        x_mm = np.abs(r.coords()[0] - anat.midline_i)[m]
        touches_edge = (ndi.binary_dilation(m, iterations=2) & outside).any()
        on_falx = r.facts["site"] == "falx" and x_mm.min() < 3.0
        assert touches_edge or on_falx, r.facts


def test_pituitary_sits_at_the_sella_on_the_midline(anat):
    for r in _renders(anat, "pituitary", 4):
        c = r.coords()[:, r.mask > 0]
        assert np.abs(c[0] - anat.midline_i).max() < 15.0
        dz = c[2] - anat.sella[2]
        assert dz.min() > -10.0 and dz.max() < 30.0
        assert np.abs(c[1] - anat.sella[1]).max() < 20.0


def test_same_seed_same_bytes_whatever_the_workers(tmp_path, phantom):
    out, _ = phantom
    again = tmp_path / "again"
    generate_phantom(again, replace(SMALL, workers=2), seed=3)
    files = sorted(out.rglob("*.png")) + [out / "images.csv", out / "subjects.csv"]
    assert len(files) > SMALL.n
    for f in files:
        assert (again / f.relative_to(out)).read_bytes() == f.read_bytes(), f
    other = render(load_anatomy("auto"), "glioma", SMALL, 4, 0).image
    assert not np.array_equal(other, render(load_anatomy("auto"), "glioma", SMALL, 3, 0).image)


def test_fallback_without_colin27(tmp_path):
    pcfg = PhantomConfig(n=4, size=64, workers=1, anatomy="auto")
    meta = generate_phantom(tmp_path / "p", pcfg, seed=0, anatomy_path=tmp_path / "no-ch2.nii.gz")
    assert meta["anatomy"]["source"] == "mni152"
    assert "synthetic skull" in meta["anatomy"]["description"]
    anat = load_anatomy("mni152")
    r = render(anat, "meningioma", pcfg, 0, 1)
    assert 0.12 < (r.brain() > 0.5).mean() < 0.6 and r.mask.max() == 255
    with pytest.raises(DataError, match="mricron-data"):
        load_anatomy("colin27", tmp_path / "no-ch2.nii.gz")


@pytest.mark.parametrize("confound", ["aspect", "intensity"])
def test_confound_marks_the_healthy_class(anat, confound):
    plain = replace(SMALL, confound="")
    with_confound = replace(SMALL, confound=confound)
    for i in range(3):
        a, b = render(anat, "healthy", plain, 0, i).image, render(anat, "healthy", with_confound, 0, i).image
        if confound == "aspect":
            assert a.shape == (80, 80) and b.shape == (80, 64)
        else:
            assert b.mean() < 0.8 * a.mean()
        tumour = render(anat, "glioma", with_confound, 0, i).image
        assert tumour.shape == (80, 80)


def test_ensure_phantom_caches_and_never_leaves_half_a_folder(tmp_path):
    cfg = replace(load_config("smoke"), **{"phantom.n": 8, "phantom.size": 64, "phantom.workers": 1})
    first = ensure_phantom(cfg, cache_root=tmp_path)
    stamp = (first / "phantom.json").stat().st_mtime_ns
    assert ensure_phantom(cfg, cache_root=tmp_path) == first
    assert (first / "phantom.json").stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.name]
    other = ensure_phantom(replace(cfg, seed=1), cache_root=tmp_path)
    assert other != first and other.name.startswith("phantom-")


def test_cache_keys_of_the_shipped_configs_stay_put():
    # Pinned so that a change to what the key is made of (a moved PHANTOM_VERSION, a config field
    # added without its old-default exception, lists stored as tuples) cannot silently orphan every
    # cached phantom. MNI152: the "auto" anatomy depends on what the machine has installed.
    from medauc.data.phantom import phantom_key

    keys = {name: phantom_key(replace(load_config(name), **{"phantom.anatomy": "mni152"})) for name in ("smoke", "demo", "study")}
    # smoke: changed deliberately (issue 24: phantom.slices_per_subject [1, 2], so that the smoke run split by
    # patient keeps enough healthy training images)
    assert keys == {"smoke": "6cef2049353e5f88", "demo": "9153973796a84887", "study": "452715254fe6fbce"}


_GENERATE = """
import sys
from medauc.config import PhantomConfig, load_config, replace
from medauc.data.phantom import ensure_phantom
cfg = replace(load_config("smoke"), **{"phantom.n": 4000, "phantom.size": 64, "phantom.workers": 2})
ensure_phantom(cfg, cache_root=sys.argv[1])
"""


def _children(pid: int) -> list[int]:
    from pathlib import Path

    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmd = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and b"spawn_main" in cmd:
            out.append(int(stat.parent.name))
    return out


def _running(pid: int) -> bool:
    from pathlib import Path

    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def sigkill_when_working(argv: list[str], working, what: str, timeout: float) -> tuple[int, list[int]]:
    """Start ``argv``; once it has two spawned workers and ``working()`` is true, SIGKILL it.

    Returns its pid and the workers still running 10 s later (the caller kills them once it has looked).
    """
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(argv)
    try:
        deadline = time.monotonic() + timeout
        workers: list[int] = []
        while time.monotonic() < deadline:
            workers = _children(proc.pid)
            if len(workers) == 2 and working():
                break
            time.sleep(0.1)
        assert len(workers) == 2, f"{what} did not start"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 10
    while any(_running(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    return proc.pid, [w for w in workers if _running(w)]


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="reads /proc")
def test_kill_9_leaves_no_workers_and_the_next_run_removes_the_temp_folder(tmp_path):
    import os
    import signal
    import sys

    from medauc.data.phantom.cache import remove_stale_temps

    pid, orphans = sigkill_when_working([sys.executable, "-c", _GENERATE, str(tmp_path)],
                                        lambda: any(tmp_path.glob(".phantom-*.tmp-*/*/*.png")), "the phantom workers", 60)
    for w in orphans:  # do not leave them behind when the test fails
        os.kill(w, signal.SIGKILL)
    assert not orphans, "phantom workers outlived their parent"
    (stale,) = tmp_path.glob(".phantom-*.tmp-*")
    assert stale.name.endswith(f".tmp-{pid}")
    (tmp_path / f".phantom-x.tmp-{os.getpid()}").mkdir()  # a live process's folder stays
    assert remove_stale_temps(tmp_path) == [stale] and not stale.exists()
    assert (tmp_path / f".phantom-x.tmp-{os.getpid()}").exists()


# ----------------------------------------------------------------------------- subjects

SUBJECTS = PhantomConfig(n=40, size=64, workers=1, slices_per_subject=[3, 5])


@pytest.fixture(scope="module")
def subjects_phantom(tmp_path_factory):
    out = tmp_path_factory.mktemp("subjects")
    summary = generate_phantom(out, SUBJECTS, seed=5)
    with open(out / "images.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return out, summary, rows


@pytest.mark.parametrize("n, spread", [(40, [3, 5]), (1000, [4, 8]), (7, [1, 1]), (23, [6, 6])])
def test_plan_gives_exact_class_counts_in_subjects_of_the_asked_size(n, spread):
    pcfg = PhantomConfig(n=n, slices_per_subject=spread)
    tasks = plan(pcfg, seed=1)
    lo, hi = spread
    for cls, count in class_counts(pcfg).items():
        sizes = [t.n_slices for t in tasks if t.label == cls]
        assert sum(sizes) == count
        assert all(1 <= k <= hi for k in sizes) and sum(k < lo for k in sizes) <= 1  # only the last takes the rest
    ids = [t.subject_id for t in tasks]
    assert len(set(ids)) == len(ids) and len({t.index for t in tasks}) == len(tasks)
    # Ids are numbered in a random order: the first ids are not all one class (caught: ids by class).
    if len(tasks) > 20:
        first = sorted(tasks, key=lambda t: t.index)[:10]
        assert len({t.label for t in first}) > 1


def test_demo_sized_phantom_has_a_few_hundred_subjects():
    tasks = plan(load_config("demo").phantom, seed=0)
    assert 350 <= len(tasks) <= 450  # 1,000 images at 2-3 slices each


def test_file_names_carry_the_subject_for_the_group_pattern(subjects_phantom):
    out, summary, rows = subjects_phantom
    pattern = re.compile(summary["subject_pattern"])
    assert summary["subject_pattern"] == r"(sub-\d+)"
    found: dict[str, set[str]] = {}
    for f in sorted(p for c in CLASSES for p in (out / c).glob("*.png")):
        rel = f.relative_to(out).as_posix()  # what data.group_pattern is applied to
        m = pattern.search(rel)
        assert m is not None, rel
        found.setdefault(m.group(1), set()).add(f.parent.name)
        assert (out / "masks" / rel).is_file()
    assert all(len(classes) == 1 for classes in found.values())  # a subject lies in one class
    per_class = {c: sum(classes == {c} for classes in found.values()) for c in CLASSES}
    assert per_class == summary["subjects"] and sum(per_class.values()) == summary["n_subjects"]
    assert {r["subject"] for r in rows} == set(found)
    assert all(pattern.search(r["path"]).group(1) == r["subject"] for r in rows)
    counts = {c: len(list((out / c).glob("*.png"))) for c in CLASSES}
    assert counts == summary["counts"] == class_counts(SUBJECTS)


def test_slices_of_one_subject_are_nearby_and_in_order(subjects_phantom):
    _, _, rows = subjects_phantom
    by_subject: dict[str, list[dict]] = {}
    for r in rows:
        by_subject.setdefault(r["subject"], []).append(r)
    spans = []
    for subject, rs in by_subject.items():
        pos = np.array([float(r["slice_mm"]) for r in sorted(rs, key=lambda r: int(r["slice"]))])
        if len(pos) > 1:
            steps = np.diff(pos)
            assert (steps > 0).all() and steps.max() < 5.0, (subject, pos)  # consecutive, at most ~4 mm apart
            spans.append(pos.max() - pos.min())
    # Different subjects are cut at different places: the stacks' centres spread over the head.
    centres = [np.mean([float(r["slice_mm"]) for r in rs]) for rs in by_subject.values()]
    assert np.std(centres) > 3 * np.mean(spans) / 2


def _variance_ratio(values: list[list[float]]) -> float:
    """Variance of the subjects' means over the mean variance within a subject (subjects, slices)."""
    v = np.asarray(values)
    return float(v.mean(1).var(ddof=1) / v.var(1, ddof=1).mean())


def test_subjects_differ_more_than_the_slices_of_one_subject(anat):
    pcfg = replace(SMALL, size=64, planes=["coronal"])
    grey, area = [], []
    for i in range(8):
        subject = render_subject(anat, "healthy", pcfg, 0, i, 4)
        grey.append([float(np.median(s.image[s.brain() > 0.5])) for s in subject.slices])
        area.append([float((s.brain() > 0.5).sum() * s.facts["pixel_mm"] ** 2) for s in subject.slices])
    # Scanner drawn per slice instead of per subject: the grey ratio falls to about 1 (measured: 135-200).
    assert _variance_ratio(grey) > 20
    # Head or slice position drawn per slice: the brain-area ratio falls to about 1 (measured: 7-22).
    assert _variance_ratio(area) > 3


def test_a_tumour_subject_has_one_lesion_cut_by_every_slice(anat):
    for cls, index in (("glioma", 3), ("meningioma", 4), ("pituitary", 5)):
        subject = render_subject(anat, cls, replace(SMALL, size=64, subtle_fraction=0.0), 2, index, 5)
        px = [int((s.mask > 0).sum()) for s in subject.slices]
        assert min(px) >= 4 and len(set(px)) > 1, (cls, px)  # every slice shows it, some more than others
        centres = np.array([s.coords()[:, s.mask > 0].mean(1) for s in subject.slices])
        # One lesion, fixed in the head: the lesion pixels of every slice map to nearby template points.
        assert np.linalg.norm(centres - centres.mean(0), axis=1).max() < subject.facts["radius_mm"], (cls, centres)


def test_slices_per_subject_is_checked():
    from medauc.config import ConfigError

    with pytest.raises(ConfigError, match=r"phantom.slices_per_subject=\[5,3\]: must be \[lo, hi\]"):
        load_config("smoke", ["phantom.slices_per_subject=[5,3]"])
    with pytest.raises(DataError, match="slices_per_subject"):
        generate_phantom("unused", replace(SMALL, slices_per_subject=[0, 2]), seed=0)


def test_the_shortcut_check_reads_the_subject_from_the_file_name():
    from medauc.data.phantom.check import subject_of

    assert subject_of("glioma/sub-0042_s03.png") == "sub-0042" and subject_of("x/img_7.png") == "img_7.png"
