"""neardup.py: the indexed near-duplicate search equals all-pairs comparison; links between patients."""

from __future__ import annotations

import numpy as np
import pytest

from medauc.data import audit
from medauc.data.neardup import near_pairs, near_pairs_brute, patient_links


def _random(rng, n):
    return rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64) ^ (rng.integers(0, 2, n).astype(np.uint64) << np.uint64(63))


def _clustered(rng, n, spread=4):
    """Tight clusters (near-identical heads): many hashes share most chunk values, so buckets are
    large and the index must split them again; plus exact copies."""
    centers = _random(rng, max(1, n // 40))
    h = centers[rng.integers(0, len(centers), n)]
    for _ in range(spread):
        bit = rng.integers(0, 64, n).astype(np.uint64)
        h = h ^ np.where(rng.random(n) < 0.7, np.uint64(1) << bit, np.uint64(0))
    if n:
        h[: n // 8] = h[0]
    return h


@pytest.mark.parametrize("kind", ["random", "clustered"])
@pytest.mark.parametrize("d", [0, 1, 3, 6, 10, 15, 20])
def test_index_finds_exactly_the_pairs_of_all_pairs_comparison(kind, d):
    # Catches a chunking that breaks the pigeonhole (a missed pair at distance d), a pair reported
    # twice (found in two chunks), a pair out of order, and lost copies of one hash value.
    rng = np.random.default_rng(d)
    for n in (0, 1, 2, 40, 700):
        h = _random(rng, n) if kind == "random" else _clustered(rng, n)
        if n > 10:
            h[5] = h[3] ^ np.uint64((1 << d) - 1)  # exactly d bits apart
        got, want = near_pairs(h, d), near_pairs_brute(h, d)
        assert got.shape == want.shape and np.array_equal(got, want), (kind, d, n, len(got), len(want))


def test_index_on_real_perceptual_hashes_of_slices(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (8, 8)).astype(np.float64)
    paths = []
    for i in range(60):  # "slices": a smooth image drifting slowly, so neighbours are near-duplicates
        low = np.clip(base + i * rng.normal(0, 6, (8, 8)), 0, 255).astype(np.uint8)
        p = tmp_path / f"{i}.png"
        Image.fromarray(low).resize((64, 64), Image.Resampling.BICUBIC).save(p)
        paths.append(str(p))
    h = audit.hex_to_uint64([r["phash"] for r in audit.scan_files(paths)])
    for d in (0, 6, 12):
        assert np.array_equal(near_pairs(h, d), near_pairs_brute(h, d))
    assert len(near_pairs(h, 6)) > 0


def test_near_duplicates_between_patients_are_reported_and_merged_only_on_request():
    # Images 0-1 (patient A) and 2-3 (patient B) are near-duplicates across the patients; 4 is a copy of 5 (C, D).
    sha = ["a0", "a1", "b0", "b1", "c", "c"]
    phash = ["0000000000000000", "0000000000000003", "000000000000000f", "00000000000000ff", "ffffffff00000000",
             "ffffffff00000000"]
    subjects = ["A", "A", "B", "B", "C", "D"]
    ids = [f"x/{i}" for i in range(6)]
    rep = audit.duplicate_groups(sha, phash, 4, subjects, "report")
    mer = audit.duplicate_groups(sha, phash, 4, subjects, "merge")
    # (1, 3) are 6 bits apart; the exact copy (4, 5) is also a near-duplicate of two patients
    assert {tuple(p) for p in rep["cross_patient"].tolist()} == {(0, 2), (1, 2), (4, 5)}
    assert len(set(rep["group"][:4])) > 1 and len(set(mer["group"][:4])) == 1
    assert rep["group"][4] == rep["group"][5]  # exact copies always join, whatever the patients
    from medauc.data.split import combine_groups

    info, warnings, joined = patient_links(rep["cross_patient"], subjects, combine_groups(rep["group"], subjects), ids,
                                           "report", 4)
    assert info["image_pairs"] == 3 and info["patient_pairs"] == 2 and joined == ""
    assert info["joined_patients"] == 2  # C and D, by the exact copy
    assert any("data.near_duplicates=merge" in w for w in warnings)
    info, warnings, joined = patient_links(mer["cross_patient"], subjects, combine_groups(mer["group"], subjects), ids,
                                           "merge", 4)
    assert info["joined_patients"] == 4 and info["joined_groups"] == 2
    assert info["largest_joined"] == {"patients": 2, "images": 4}
    assert "data.near_duplicates=report" in joined and "4 patients" in joined
