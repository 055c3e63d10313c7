"""DICOM reading: calibration, windows, MONOCHROME1, frames, compression and skip reasons,
on files written with pydicom and on pydicom's own bundled test files."""

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.pixels import apply_modality_lut, apply_windowing
from pydicom.uid import JPEG2000Lossless, RLELossless

from medauc.data.dicom import read_dicom
from medauc.data.medical import UnusableFile, dicom_voi_window, file_kind, linear_window, percentile_range
from medical_data import dicom_dataset, phantom_slice, write_dicom, write_sr


@pytest.fixture(scope="module")
def img():
    return phantom_slice(np.random.default_rng(3), 48, lesion=True)[0]


def _read(tmp_path, ds, name="x.dcm", compress="", **kw):
    return read_dicom(write_dicom(tmp_path / name, ds, compress), **kw)


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
@pytest.mark.parametrize("center,width", [(40.0, 400.0), (1000.0, 1.0), (-500.5, 1500.0)])
def test_voi_window_equals_pydicom_scaled_to_unit(function, center, width):
    # Reference: pydicom's apply_windowing on 16-bit unsigned output, divided by 65535.
    # Mutation caught: LINEAR without the standard's -0.5 / -1 offsets, or a clipped-wrong end.
    x = np.linspace(center - width, center + width, 2001)
    x = np.concatenate([x, [center - width / 2, center + width / 2, center - 0.5]])
    if function != "LINEAR" or width >= 1:
        ds = Dataset()
        ds.PhotometricInterpretation, ds.BitsStored, ds.PixelRepresentation = "MONOCHROME2", 16, 0
        ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = center, width, function
        ref = apply_windowing(x.copy(), ds) / 65535.0
        np.testing.assert_allclose(dicom_voi_window(x, center, width, function), ref, atol=1e-6)


def test_rescale_window_and_monochrome1_give_the_same_picture(tmp_path, img):
    plain = _read(tmp_path, dicom_dataset(img, 1), "plain.dcm")
    expected = linear_window(np.round(1000 * img), *percentile_range(np.round(1000 * img)))
    np.testing.assert_allclose(plain.images[0], expected, atol=1e-6)
    assert plain.windows == ["percentile"] and plain.mode == "MONOCHROME2 12-bit" and plain.modality == "MR"
    # MONOCHROME1 stores the picture inverted; read back it is the same picture (mutation: no inversion).
    mono1 = _read(tmp_path, dicom_dataset(img, 2, photometric="MONOCHROME1"), "m1.dcm")
    np.testing.assert_allclose(mono1.images[0], plain.images[0], atol=2e-3)
    # Stored (value + 1000) / 2: the window in calibrated units only fits once the rescale is applied.
    rescaled = _read(tmp_path, dicom_dataset(img, 3, slope=2.0, intercept=-1000.0, window=(500.0, 1001.0)), "r.dcm")
    assert rescaled.windows == ["dicom"]
    np.testing.assert_allclose(rescaled.images[0], dicom_voi_window(1000 * img, 500.0, 1001.0), atol=2e-3)
    fixed = _read(tmp_path, dicom_dataset(img, 4, slope=2.0, intercept=-1000.0), "f.dcm", window=(0.0, 1000.0))
    np.testing.assert_allclose(fixed.images[0], img, atol=2e-3)


def test_bundled_ct_in_hounsfield_units():
    # CT_small.dcm: slope 1, intercept -1024, no window; [-100, 200] HU is a soft-tissue window.
    path = get_testdata_file("CT_small.dcm")
    ds = dcmread(path)
    hu = apply_modality_lut(ds.pixel_array, ds)
    got = read_dicom(path, window=(-100.0, 200.0))
    np.testing.assert_allclose(got.images[0], linear_window(hu, -100.0, 200.0), atol=1e-6)
    assert got.modality == "CT" and got.patient_source == "PatientID"
    # No window in the file: data.window=dicom falls back to percentiles.
    assert read_dicom(path, window="dicom").windows == ["percentile"]


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"])
def test_bundled_compressed_files_decode_like_the_uncompressed_one(name):
    ref = read_dicom(get_testdata_file("MR_small.dcm"), window="percentile").images[0]
    np.testing.assert_array_equal(read_dicom(get_testdata_file(name), window="percentile").images[0], ref)


@pytest.mark.parametrize("syntax", [JPEG2000Lossless, RLELossless])
def test_written_compressed_file_decodes_to_the_same_image(tmp_path, img, syntax):
    plain = _read(tmp_path, dicom_dataset(img, 1), "plain.dcm")
    packed = _read(tmp_path, dicom_dataset(img, 1), "packed.dcm", compress=syntax)
    np.testing.assert_array_equal(packed.images[0], plain.images[0])


def test_frames_first_or_all(tmp_path):
    rng = np.random.default_rng(0)
    frames = [phantom_slice(rng, 32)[0] for _ in range(3)]
    ds = dicom_dataset(frames[0], 1, frames=frames)
    path = write_dicom(tmp_path / "multi.dcm", ds)
    first = read_dicom(path, frames="first", window=(0.0, 1000.0))
    every = read_dicom(path, frames="all", window=(0.0, 1000.0))
    assert first.frames == [0] and every.frames == [0, 1, 2]
    for got, want in zip(every.images, frames):
        np.testing.assert_allclose(got, want, atol=2e-3)
    np.testing.assert_array_equal(first.images[0], every.images[0])


def test_blank_frames_are_counted_not_kept(tmp_path):
    frames = [np.zeros((16, 16), np.float32), phantom_slice(np.random.default_rng(1), 16)[0]]
    got = read_dicom(write_dicom(tmp_path / "b.dcm", dicom_dataset(frames[0], 1, frames=frames)), frames="all")
    assert got.frames == [1] and got.blank == 1


def test_patient_from_patient_id_then_study_uid(tmp_path, img):
    assert _read(tmp_path, dicom_dataset(img, 1, patient_id="P1"), "a.dcm").patient == "P1"
    ds = dicom_dataset(img, 2, patient_id="")
    got = _read(tmp_path, ds, "b.dcm")
    assert got.patient == ds.StudyInstanceUID and got.patient_source == "StudyInstanceUID"


@pytest.mark.parametrize("name,start", [
    ("test-SR.dcm", "non-image DICOM (SOP class"),
    ("rtplan.dcm", "non-image DICOM (SOP class RT Plan Storage"),
    ("liver_1frame.dcm", "non-image DICOM (SOP class Segmentation Storage"),
    ("SC_rgb_rle.dcm", "colour DICOM (PhotometricInterpretation RGB"),
    ("examples_palette.dcm", "colour DICOM (PhotometricInterpretation PALETTE"),
    ("MR_truncated.dcm", "truncated or corrupt DICOM pixel data"),
    ("JPGExtended.dcm", "compressed DICOM that cannot be decoded (transfer syntax JPEG Extended (Process 2 and 4), 1.2.840.10008.1.2.4.51"),
])
def test_bundled_files_that_give_no_image_say_why(name, start):
    with pytest.raises(UnusableFile) as err:
        read_dicom(get_testdata_file(name))
    assert str(err.value).startswith(start), str(err.value)


def test_written_files_that_give_no_image_say_why(tmp_path, img):
    with pytest.raises(UnusableFile, match=r"^non-image DICOM \(SOP class Comprehensive SR Storage\)"):
        read_dicom(write_sr(tmp_path / "sr.dcm"))
    ds = dicom_dataset(img, 1)
    ds.BurnedInAnnotation = "YES"
    with pytest.raises(UnusableFile, match="burned-in annotation"):
        _read(tmp_path, ds, "burned.dcm")
    del ds.PixelData, ds.SOPClassUID
    with pytest.raises(UnusableFile, match=r"^DICOM without pixel data \(SOP class not given\)"):
        _read(tmp_path, ds, "empty.dcm")
    (tmp_path / "junk.dcm").write_bytes(b"\x00" * 10)
    with pytest.raises(UnusableFile, match="^(not a readable DICOM file|DICOM without pixel data)"):
        read_dicom(tmp_path / "junk.dcm")


def test_file_kind_by_extension_or_preamble(tmp_path, img):
    write_dicom(tmp_path / "IM0001", dicom_dataset(img, 1))  # PACS exports: no extension
    bare = dicom_dataset(img, 2)
    bare.file_meta = FileMetaDataset()
    dcmwrite(tmp_path / "no_meta.dcm", bare, implicit_vr=True, little_endian=True)  # no preamble, no meta header
    (tmp_path / "notes").write_text("not dicom")
    (tmp_path / "a.png").write_bytes(b"\x89PNG")
    kinds = {p: file_kind(tmp_path / p, "_seg.nii.gz") for p in ("IM0001", "no_meta.dcm", "notes", "a.png")}
    kinds |= {p: file_kind(tmp_path / p, "_seg.nii.gz") for p in ("c_t1.nii.gz", "c_seg.nii.gz", "c.NII")}
    assert kinds == {"IM0001": "dicom", "no_meta.dcm": "dicom", "notes": "", "a.png": "", "c_t1.nii.gz": "nifti",
                     "c_seg.nii.gz": "segmentation", "c.NII": "nifti"}
    # A file without a file meta header is read in the encoding pydicom found.
    np.testing.assert_allclose(read_dicom(tmp_path / "no_meta.dcm", window=(0.0, 1000.0)).images[0], img, atol=2e-3)
