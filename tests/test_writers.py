"""Writers: NIfTI geometry from DICOM (checked independently and against dcm2niix), storage, overwrite markers.

The model is a nearest-neighbour x4 up-sampler, so every output pixel is an input pixel and the
position of each value in the output tells where the writer put it.
"""

import shutil
import subprocess

import keras
import nibabel as nib
import numpy as np
import pydicom
import pytest

from cardiac_sr.cli import main
from cardiac_sr.predict import predict
from cardiac_sr.dicom import read_dicom
from cardiac_sr.nifti import read_nifti_file
from cardiac_sr.writers import MARKER

SCALE = 4


@pytest.fixture(scope="module")
def nearest(tmp_path_factory):
    """A card-less model whose output is the input repeated 4 x 4 (every output pixel is an input pixel)."""
    path = tmp_path_factory.mktemp("nearest") / "nearest.keras"
    inp = keras.Input((None, None, 1))
    keras.Model(inp, keras.layers.UpSampling2D(SCALE, interpolation="nearest")(inp)).save(path)
    return path


@pytest.fixture(scope="module")
def oblique_series(tmp_path_factory):
    """A synthetic oblique cine series: 3 slices x 2 phases of 20 x 24 int16, with rescale slope 2,
    intercept -100, non-square pixels and every value unique (so a flip or transpose shows)."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder = tmp_path_factory.mktemp("oblique") / "study"
    folder.mkdir()
    a, b = np.radians(25), np.radians(-40)
    along_row = np.array([np.cos(a), np.sin(a), 0.0])
    along_col = np.array([-np.sin(a) * np.cos(b), np.cos(a) * np.cos(b), np.sin(b)])
    normal = np.cross(along_row, along_col)
    rows, cols, spacing = 20, 24, (1.5, 1.25)  # PixelSpacing: between rows, between columns
    series = generate_uid()
    for s in range(3):
        ipp = np.array([-80.0, 30.5, 12.0]) + s * 8.0 * normal
        for t in range(2):
            ds = pydicom.Dataset()
            ds.file_meta = FileMetaDataset()
            ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.Modality, ds.PatientID, ds.SeriesInstanceUID, ds.StudyInstanceUID = "MR", "OBL", series, "1.2.3"
            ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*along_row, *along_col)]
            ds.ImagePositionPatient = [f"{v:.6f}" for v in ipp]
            ds.PixelSpacing = [str(spacing[0]), str(spacing[1])]
            ds.SliceThickness, ds.TriggerTime, ds.InstanceNumber = 8, 40 * t, 1 + s * 2 + t
            ds.RescaleSlope, ds.RescaleIntercept = 2, -100
            pixels = (np.arange(rows * cols).reshape(rows, cols) * 3 + 100 * s + 7 * t).astype(np.int16)
            ds.set_pixel_data(pixels, photometric_interpretation="MONOCHROME2", bits_stored=16)
            ds.save_as(folder / f"im{s}{t}.dcm", enforce_file_format=True)
    return folder


def _world_lps(ds, row, col):
    """DICOM's own definition (PS3.3 C.7.6.2.1.1): the LPS position of pixel (row, col), rows and columns
    possibly fractional."""
    iop = np.asarray(ds.ImageOrientationPatient, float)
    row_mm, col_mm = (float(v) for v in ds.PixelSpacing)
    return np.asarray(ds.ImagePositionPatient, float) + col * col_mm * iop[:3] + row * row_mm * iop[3:]


def test_nifti_from_dicom_puts_every_voxel_where_the_dicom_says(oblique_series, nearest, tmp_path):
    out = tmp_path / "sr.nii.gz"
    predict(oblique_series, out, nearest, progress=False)
    img = nib.load(out)
    data = np.asarray(img.dataobj)
    study = read_dicom(oblique_series)[0]
    assert img.shape == (24 * SCALE, 20 * SCALE, 3, 2)
    assert img.header["qform_code"] == 1 and img.header["sform_code"] == 1
    assert img.header.get_xyzt_units() == ("mm", "msec") and img.header.get_zooms()[3] == pytest.approx(40)
    rng = np.random.default_rng(0)
    for _ in range(40):
        i, j, k, t = (int(rng.integers(n)) for n in img.shape)
        # the input pixel this output voxel repeats, and its centre in output pixels
        ras = img.affine @ [i, j, k, 1]
        ds = pydicom.dcmread(study.sources[k, t])
        # output pixel centres sit at input coordinate (o + 0.5) / scale - 0.5 (writers' convention)
        hits = [(r, c) for r in range(20) for c in range(24)
                if np.allclose(ds.pixel_array[r, c] * 2 - 100, data[i, j, k, t], atol=0.5)]
        assert len(hits) == 1  # values are unique per image
        r_in, c_in = hits[0]
        # the voxel lies inside that input pixel's footprint: within half an input pixel of its centre
        lps = np.array([-ras[0], -ras[1], ras[2]])
        iop = np.asarray(ds.ImageOrientationPatient, float)
        d = lps - _world_lps(ds, r_in, c_in)
        assert abs(d @ iop[:3]) <= 0.5 * 1.25 + 1e-4 and abs(d @ iop[3:]) <= 0.5 * 1.5 + 1e-4
        assert abs(d @ np.cross(iop[:3], iop[3:])) < 1e-4
    # and exactly: the output voxel centre is the DICOM position of fractional input pixel (o + 0.5) / 4 - 0.5
    ds = pydicom.dcmread(study.sources[1, 0])
    row_out, col_out = 80 - 1 - 7, 13  # voxel (i=13, j=7): column 13, 8th row from the bottom
    expected = _world_lps(ds, (row_out + 0.5) / SCALE - 0.5, (col_out + 0.5) / SCALE - 0.5)
    ras = img.affine @ [13, 7, 1, 1]
    np.testing.assert_allclose([-ras[0], -ras[1], ras[2]], expected, atol=1e-4)


def test_nifti_from_dicom_keeps_the_int16_storage_and_rescale(oblique_series, nearest, tmp_path):
    out = tmp_path / "sr.nii"
    predict(oblique_series, out, nearest, progress=False)
    img = nib.load(out)
    assert img.get_data_dtype() == np.int16
    assert (img.dataobj.slope, img.dataobj.inter) == (2.0, -100.0)
    stored = np.asarray(img.dataobj.get_unscaled())
    inputs = np.unique(np.concatenate([pydicom.dcmread(f).pixel_array.ravel() for f in oblique_series.iterdir()]))
    assert np.isin(stored, inputs).mean() > 0.99  # the stored integers of the input (highlights restored aside)
    assert bytes(img.header["descrip"]).startswith(MARKER.encode())


def _dcm2niix() -> str:
    """The dcm2niix binary (a test dependency, installed into the venv by scripts/setup.sh)."""
    import os
    import sys
    from pathlib import Path

    found = shutil.which("dcm2niix") or next(
        (str(p) for p in [Path(sys.executable).with_name("dcm2niix")] if p.is_file()), None)
    if found is None:
        message = "dcm2niix not installed (pip install -c requirements.lock dcm2niix)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def test_nifti_from_dicom_equals_dcm2niix_scaled(sunnybrook_studies, nearest, tmp_path):
    """dcm2niix (the field's converter) on the same real series, scaled x4 with the -3/8 pixel shift."""
    study = sunnybrook_studies["SCD0000101"]
    folder = tmp_path / "in"
    folder.mkdir()
    for s in (3, 4, 5):
        for t in (0, 9):
            shutil.copy(study.sources[s, t], folder)
    subprocess.run([_dcm2niix(), "-z", "n", "-f", "ref", "-o", str(tmp_path), str(folder)], check=True,
                   capture_output=True)
    ref = nib.load(tmp_path / "ref.nii")
    predict(folder, tmp_path / "sr.nii", nearest, progress=False)
    ours = nib.load(tmp_path / "sr.nii")
    assert ours.shape[:2] == (ref.shape[0] * SCALE, ref.shape[1] * SCALE) and ours.shape[2:] == ref.shape[2:]
    # world centre of the volume and direction cosines of each axis
    centre = lambda im: im.affine @ [*((np.asarray(im.shape[:3]) - 1) / 2), 1]  # noqa: E731
    np.testing.assert_allclose(centre(ours), centre(ref), atol=0.01)
    for ax in range(3):
        unit = lambda im: im.affine[:3, ax] / np.linalg.norm(im.affine[:3, ax])  # noqa: E731
        np.testing.assert_allclose(unit(ours), unit(ref), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(ours.affine[:3, :2], axis=0),
                               np.linalg.norm(ref.affine[:3, :2], axis=0) / SCALE, rtol=1e-6)
    # the -3/8 input-pixel shift: the first output voxel centre
    shift = -(1 - 1 / SCALE) / 2
    np.testing.assert_allclose(ours.affine[:3, 3], ref.affine[:3, 3] + ref.affine[:3, :2] @ [shift, shift], atol=0.01)
    # the same pixel at the same voxel (nearest model: output voxel 4i+1 repeats input voxel i)
    a, b = np.asarray(ours.dataobj)[1::SCALE, 1::SCALE], np.asarray(ref.dataobj)
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.999


def test_int16_nifti_with_a_tiny_slope_keeps_its_precision(nearest, tmp_path):
    values = np.random.default_rng(3).random((16, 20, 2)).astype(np.float32) * 0.77
    img = nib.Nifti1Image(values, np.diag([1.5, 1.5, 8, 1]))
    img.set_data_dtype(np.int16)  # nibabel picks a slope of about 1.2e-5
    nib.save(img, tmp_path / "small.nii.gz")
    slope = nib.load(tmp_path / "small.nii.gz").dataobj.slope
    assert slope < 1e-4
    predict(tmp_path / "small.nii.gz", tmp_path / "sr.nii.gz", nearest, progress=False)
    out = nib.load(tmp_path / "sr.nii.gz")
    assert out.get_data_dtype() == np.int16 and out.dataobj.slope == pytest.approx(slope)
    got = np.asarray(out.dataobj)
    assert len(np.unique(got)) > 500  # not rounded to a handful of integers
    src = np.asarray(nib.load(tmp_path / "small.nii.gz").dataobj)
    top = np.percentile(src, 99.5)
    # the model repeats pixels; highlights above the percentile are restored by cubic-spline interpolation,
    # whose tail reaches a little further than two pixels around them
    from scipy.ndimage import binary_dilation

    inside = ~binary_dilation(src > top, np.ones((5, 5, 1), bool))
    np.testing.assert_allclose(got[1::SCALE, 1::SCALE][inside], src[inside], atol=8 * slope)  # was 0.5 (rounded)


def test_values_the_input_storage_cannot_hold_are_written_as_float(tmp_path):
    """Bicubic (an untrained generator) overshoots a uint8 step past 255: the study is predicted again and
    written as float32, every value as predicted, none clipped."""
    from cardiac_sr.inference import load_model
    from cardiac_sr.models import build_generator
    from cardiac_sr.predict import predict_study

    build_generator("NN", filters=8, res_blocks=1).save(tmp_path / "bicubic.keras")
    values = np.zeros((16, 16, 1), np.uint8)
    values[4:12, 4:12] = 255
    nib.save(nib.Nifti1Image(values, np.eye(4)), tmp_path / "u8.nii")
    expected = predict_study(load_model(tmp_path / "bicubic.keras")[0], read_nifti_file(tmp_path / "u8.nii"), SCALE,
                             progress=False).sr
    assert expected.max() > 255  # the case under test happens
    predict(tmp_path / "u8.nii", tmp_path / "sr.nii", tmp_path / "bicubic.keras", progress=False)
    out = nib.load(tmp_path / "sr.nii")
    assert out.get_data_dtype() == np.float32
    assert np.array_equal(np.asarray(out.dataobj), np.transpose(expected, (2, 3, 0, 1))[..., 0])


def test_overwrite_replaces_only_our_own_files_and_never_the_input(nearest, tmp_path, capsys):
    x = np.random.default_rng(1).random((20, 20)).astype(np.float32)
    nib.save(nib.Nifti1Image(x[:, :, None], np.eye(4)), tmp_path / "in.nii.gz")
    before = (tmp_path / "in.nii.gz").read_bytes()
    args = ["predict", str(tmp_path / "in.nii.gz"), "--model", str(nearest), "--overwrite", "-o"]
    assert main(args + [str(tmp_path / "in.nii.gz")]) == 2
    assert "is the input" in capsys.readouterr().err and (tmp_path / "in.nii.gz").read_bytes() == before
    np.save(tmp_path / "notes.npy", np.arange(3))
    nib.save(nib.Nifti1Image(x[:, :, None], np.eye(4)), tmp_path / "theirs.nii.gz")
    for name in ("notes.npy", "theirs.nii.gz"):
        keep = (tmp_path / name).read_bytes()
        assert main(args + [str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert "did not write" in err and err.count("\n") == 1 and (tmp_path / name).read_bytes() == keep
    for name in ("ours.npy", "ours.nii.gz"):  # a file we wrote is replaced, and loads as usual
        assert main(args[:-2] + ["-o", str(tmp_path / name)]) == 0
        assert main(args + [str(tmp_path / name)]) == 0
    assert np.load(tmp_path / "ours.npy").shape == (1, 1, 80, 80)  # (slices, phases, H, W)
    assert read_nifti_file(tmp_path / "ours.nii.gz").image.shape == (1, 1, 80, 80)


def test_a_compressed_nifti_is_written_in_chunks_to_the_same_bytes(nearest, tmp_path):
    """The gzip tail runs under a progress bar (predict on a terminal) and carries no name or time."""
    x = np.random.default_rng(2).random((24, 20, 3)).astype(np.float32)
    nib.save(nib.Nifti1Image(x, np.eye(4)), tmp_path / "in.nii.gz")
    predict(tmp_path / "in.nii.gz", tmp_path / "a.nii.gz", nearest, progress=True)
    predict(tmp_path / "in.nii.gz", tmp_path / "b.nii.gz", nearest, progress=False)
    assert (tmp_path / "a.nii.gz").read_bytes() == (tmp_path / "b.nii.gz").read_bytes()
    assert nib.load(tmp_path / "a.nii.gz").shape == (96, 80, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nii.gz", "b.nii.gz", "in.nii.gz"]  # no temp left


def test_a_npy_stack_to_nifti_keeps_its_array_axes(nearest, tmp_path):
    """No patient geometry in a .npy: the NIfTI holds the array as it is (row, column, slice, phase)."""
    x = np.arange(2 * 3 * 16 * 12, dtype=np.float32).reshape(2, 3, 16, 12)
    np.save(tmp_path / "x.npy", x)
    predict(tmp_path / "x.npy", tmp_path / "y.nii", nearest, progress=False)
    img = nib.load(tmp_path / "y.nii")
    data = np.asarray(img.dataobj)
    assert img.shape == (64, 48, 2, 3) and img.header["sform_code"] == 0
    assert np.corrcoef(data[1::4, 1::4].ravel(), np.transpose(x, (2, 3, 0, 1)).ravel())[0, 1] > 0.999
