"""NIfTI reading: canonical orientation, slicing axis, slice choice, segmentations, bad volumes."""

import nibabel as nib
import numpy as np
import pytest

from medauc.data.medical import SliceSpec, UnusableFile, linear_window, parse_slices
from medauc.data.nifti import read_nifti
from medical_data import phantom_volume, write_nifti


@pytest.fixture(scope="module")
def case():
    return phantom_volume(np.random.default_rng(5), size=24, depth=10, lesion=True)


def test_slices_are_the_volume_in_display_orientation(tmp_path, case):
    vol, _ = case
    got = read_nifti(write_nifti(tmp_path / "v.nii.gz", vol), window=(0.0, 1000.0))
    assert got.slices == list(range(1, 9)) and got.blank == 2  # the empty first and last slices
    k = got.slices[3]
    # Axial slice k of an RAS+ volume: rows from anterior (top) to posterior, columns left to right.
    np.testing.assert_array_equal(got.images[3], linear_window(vol[:, :, k].T[::-1], 0.0, 1000.0))
    assert got.mode == "int16" and got.shape == vol.shape


def test_any_stored_orientation_gives_the_same_slices(tmp_path, case):
    # The same head stored left-right and anterior-posterior flipped (an LPS affine): nibabel's
    # canonical reorientation must undo it. Mutation caught: slicing the stored array as it is.
    vol, _ = case
    ras = read_nifti(write_nifti(tmp_path / "ras.nii.gz", vol), window=(0.0, 1000.0))
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    affine[:3, 3] = [vol.shape[0] - 1, vol.shape[1] - 1, 0]
    lps = read_nifti(write_nifti(tmp_path / "lps.nii.gz", vol[::-1, ::-1, :], affine), window=(0.0, 1000.0))
    assert lps.slices == ras.slices
    for a, b in zip(lps.images, ras.images):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("axis,shape", [(0, (10, 24)), (1, (10, 24)), (2, (24, 24))])
def test_volume_axis_picks_the_plane(tmp_path, case, axis, shape):
    vol, _ = case
    got = read_nifti(write_nifti(tmp_path / "v.nii", vol), axis=axis, spec=parse_slices("middle:1"))
    assert len(got.images) == 1 and got.images[0].shape == shape
    assert got.slices == [(vol.shape[axis] - 1) // 2]


def test_slice_choice_and_masks_follow_the_segmentation(tmp_path, case):
    vol, seg = case
    v, s = write_nifti(tmp_path / "c_t1.nii.gz", vol), write_nifti(tmp_path / "c_seg.nii.gz", seg, dtype=np.uint8)
    with_tissue = [k for k in range(vol.shape[2]) if seg[:, :, k].any()]
    masked = read_nifti(v, s, spec=SliceSpec("mask"), window=(0.0, 1000.0))
    assert masked.slices == with_tissue and len(with_tissue) == 4
    for img, mask in zip(masked.images, masked.masks):
        assert mask.shape == img.shape and mask.any()
        assert img[mask].mean() > img[~mask].mean() + 0.2  # the mask lies on the bright lesion, not beside it
    middle = read_nifti(v, s, spec=SliceSpec("middle", 3))
    assert middle.slices == [3, 4, 5]
    every = read_nifti(v, s, spec=SliceSpec("all"))
    assert [m.any() for m in every.masks] == [bool(seg[:, :, k].any()) for k in every.slices]
    with pytest.raises(UnusableFile, match=r"^no segmentation for data.slices=mask"):
        read_nifti(v, None, spec=SliceSpec("mask"))


def test_window_from_cal_min_max_else_percentiles(tmp_path, case):
    vol, _ = case
    img = nib.Nifti1Image(vol, np.eye(4))
    img.header["cal_min"], img.header["cal_max"] = 0.0, 500.0
    nib.save(img, str(tmp_path / "cal.nii.gz"))
    got = read_nifti(tmp_path / "cal.nii.gz", window="dicom")
    assert got.window == "dicom"
    np.testing.assert_array_equal(got.images[0], linear_window(vol[:, :, got.slices[0]].T[::-1], 0.0, 500.0))
    assert read_nifti(write_nifti(tmp_path / "plain.nii.gz", vol), window="dicom").window == "percentile"


def test_volumes_that_give_no_slice_say_why(tmp_path, case):
    vol, seg = case
    with pytest.raises(UnusableFile, match=r"^4-D NIfTI volume \(shape 24x24x10x2"):
        read_nifti(write_nifti(tmp_path / "4d.nii.gz", np.stack([vol, vol], -1)))
    # A 4-D file of one volume is that volume.
    assert read_nifti(write_nifti(tmp_path / "4d1.nii.gz", vol[..., None])).slices == list(range(1, 9))
    good = write_nifti(tmp_path / "v.nii.gz", vol).read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(good[: len(good) // 2])
    with pytest.raises(UnusableFile, match=r"^(truncated or corrupt|not a readable) NIfTI volume"):
        read_nifti(tmp_path / "cut.nii.gz")
    (tmp_path / "junk.nii").write_bytes(b"not a nifti" * 10)
    with pytest.raises(UnusableFile, match=r"^not a readable NIfTI volume"):
        read_nifti(tmp_path / "junk.nii")
    small = write_nifti(tmp_path / "small_seg.nii.gz", seg[:20], dtype=np.uint8)
    with pytest.raises(UnusableFile, match=r"^segmentation on another grid"):
        read_nifti(tmp_path / "v.nii.gz", small)
    rgb = nib.Nifti1Image(np.zeros((4, 4, 2), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")]), np.eye(4))
    nib.save(rgb, str(tmp_path / "rgb.nii"))
    with pytest.raises(UnusableFile, match=r"^colour NIfTI volume"):
        read_nifti(tmp_path / "rgb.nii")
