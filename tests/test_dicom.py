"""DICOM series: geometry, phases, contours, duplicates, orientations, transfer syntaxes, bad files."""

import shutil
import warnings

import numpy as np
import pydicom
import pytest

from cardiac_sr.dicom import read_dicom
from cardiac_sr.errors import CardiacSRError


def _copy_images(src, dst, n=None, rename=False):
    dst.mkdir(parents=True, exist_ok=True)
    files = sorted(src.glob("*.dcm"), key=lambda p: int(p.stem))[:n]
    for i, f in enumerate(files):
        name = f"img_{(i * 7919) % 100003:06d}" if rename else f.name  # arbitrary names, no suffix
        shutil.copy(f, dst / name)
    return files


# ---------------------------------------------------------------- Sunnybrook
def test_sunnybrook_geometry(sunnybrook_studies):
    a, b = sunnybrook_studies["SCD0000101"], sunnybrook_studies["SCD0000201"]
    assert (a.n_slices, a.n_phases) == (12, 20)
    assert (b.n_slices, b.n_phases) == (13, 20)
    for st in (a, b):
        assert st.shape2d == (256, 256)
        assert st.spacing[0] == pytest.approx(1.367, abs=1e-3)
        assert st.spacing[1] == pytest.approx(1.367, abs=1e-3)
        assert st.spacing[2] == pytest.approx(10.0, abs=0.05)  # from positions, not SliceLocation
        assert st.image.dtype == np.float32 and st.image.min() >= 0


def test_sunnybrook_phases_ordered_by_trigger_time(sunnybrook_studies):
    for st in sunnybrook_studies.values():
        tt = np.asarray(st.meta["trigger_times_ms"])
        assert (np.diff(tt, axis=1) > 0).all()
        pos = np.asarray(st.meta["slice_positions_mm"])
        assert (np.diff(pos) > 0).all()


def test_sunnybrook_contours_become_roi_masks(sunnybrook_studies, sunnybrook):
    st = sunnybrook_studies["SCD0000101"]
    assert st.has_roi.sum() == len(list((sunnybrook / "contours/SC-HF-I-1/o-contours").glob("*.txt")))
    s, t = map(int, np.argwhere(st.has_roi)[0])
    mask = st.roi[s, t].astype(bool)
    assert 300 < mask.sum() < 10000  # an LV epicardium a few cm across
    # the filled o-contour sits on the image it was drawn on: the file's InstanceNumber matches
    ds = pydicom.dcmread(st.sources[s, t], stop_before_pixels=True)
    assert (sunnybrook / f"contours/SC-HF-I-1/o-contours/IM-0001-{int(ds.InstanceNumber):04d}-ocontour-manual.txt").is_file()
    # blood pool and myocardium inside are brighter than the dark lung far away
    assert st.image[s, t][mask].mean() > st.image[s, t].mean()


def test_file_names_are_not_trusted(tmp_path, sunnybrook, sunnybrook_studies):
    _copy_images(sunnybrook / "SCD0000101", tmp_path / "x", rename=True)
    (st,) = read_dicom(tmp_path / "x")
    ref = sunnybrook_studies["SCD0000101"]
    np.testing.assert_array_equal(st.image, ref.image)


def test_rescale_slope_and_intercept_are_applied(tmp_path, sunnybrook):
    files = _copy_images(sunnybrook / "SCD0000101", tmp_path / "a", n=40)
    for f in (tmp_path / "a").glob("*.dcm"):
        ds = pydicom.dcmread(f)
        ds.RescaleSlope, ds.RescaleIntercept = 2, -5
        ds.save_as(f)
    (st,) = read_dicom(tmp_path / "a")
    raw = pydicom.dcmread(files[0]).pixel_array.astype(np.float32)
    flat = st.image.reshape(-1, *st.shape2d)
    assert any(np.array_equal(img, raw * 2 - 5) for img in flat)


def test_root_of_patient_folders_and_single_study(tmp_path, sunnybrook):
    _copy_images(sunnybrook / "SCD0000101", tmp_path / "root" / "p1", n=40)
    _copy_images(sunnybrook / "SCD0000201", tmp_path / "root" / "p2", n=40)
    studies = read_dicom(tmp_path / "root")
    assert [s.patient_id for s in studies] == ["SCD0000101", "SCD0000201"]
    assert len(read_dicom(tmp_path / "root" / "p1")) == 1


# ---------------------------------------------------------------- DICOM errors
def test_folder_without_dicom(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.txt").write_text("hello")
    with pytest.raises(CardiacSRError, match="no DICOM files"):
        read_dicom(tmp_path / "d")


def _skips(caplog, name):
    """The log records that report skipping ``name``: exactly one is expected (no Python warning as well)."""
    return [r for r in caplog.records if r.message.startswith("skipping") and name in r.message]


def test_only_corrupt_dicom_is_an_error(tmp_path, caplog):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "1.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"garbage" * 10)
    with pytest.raises(CardiacSRError, match="no readable DICOM"):
        read_dicom(tmp_path / "d")
    assert len(_skips(caplog, "1.dcm")) == 1


def test_corrupt_dicom_among_good_is_skipped_with_warning_or_fails_strict(tmp_path, sunnybrook, caplog):
    _copy_images(sunnybrook / "SCD0000101", tmp_path / "d", n=40)
    bad = tmp_path / "d" / "5.dcm"
    bad.write_bytes(bad.read_bytes()[:600])  # truncated: header only
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the skip is said once, in the log, not also as a Python warning
        (st,) = read_dicom(tmp_path / "d")
    assert len(_skips(caplog, "5.dcm")) == 1
    assert st.image.shape[0] * st.image.shape[1] <= 39
    with pytest.raises(CardiacSRError, match=r"5\.dcm"):
        read_dicom(tmp_path / "d", strict=True)


def test_rgb_dicom_is_a_clear_error(tmp_path, sunnybrook):
    _copy_images(sunnybrook / "SCD0000101", tmp_path / "d", n=3)
    f = tmp_path / "d" / "2.dcm"
    ds = pydicom.dcmread(f)
    rgb = np.zeros((ds.Rows, ds.Columns, 3), np.uint8)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = rgb.tobytes()
    ds.save_as(f)
    with pytest.raises(CardiacSRError, match=r"2\.dcm.*colour"):
        read_dicom(tmp_path / "d")


def test_non_dicom_file_is_a_clear_error(tmp_path):
    f = tmp_path / "slice.png"
    f.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 50)
    with pytest.raises(CardiacSRError, match="slice.png.*not a DICOM"):
        read_dicom(f)


def test_mixed_matrix_sizes_name_the_odd_file(tmp_path, sunnybrook):
    _copy_images(sunnybrook / "SCD0000101", tmp_path / "d", n=40)
    odd = tmp_path / "d" / "17.dcm"
    ds = pydicom.dcmread(odd)
    small = ds.pixel_array[:128, :128].copy()
    ds.set_pixel_data(small, photometric_interpretation="MONOCHROME2", bits_stored=int(ds.BitsStored))
    ds.save_as(odd)
    with pytest.raises(CardiacSRError, match=r"17\.dcm: image size \(128, 128\) differs from the 39 other images"):
        read_dicom(tmp_path / "d")


# ---------------------------------------------------------------- what real folders hold
def _series(sunnybrook, dst, slices=(4, 5), phases=(0, 1, 2)):
    """Copies of SCD0000101's images at two slice positions x three phases (by position and trigger time)."""
    files = sorted((sunnybrook / "SCD0000101").glob("*.dcm"), key=lambda p: int(p.stem))
    by_place = {}
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        by_place.setdefault(round(float(ds.SliceLocation), 1), []).append((float(ds.TriggerTime), f))
    dst.mkdir(parents=True, exist_ok=True)
    for pos in [sorted(by_place)[s] for s in slices]:
        for t in phases:
            shutil.copy(sorted(by_place[pos])[t][1], dst)
    return dst


def test_a_copied_image_is_dropped_once_and_no_phase_is_lost(tmp_path, sunnybrook, caplog):
    folder = _series(sunnybrook, tmp_path / "s")
    first = sorted(folder.iterdir())[0]
    shutil.copy(first, folder / "copy_of_first.dcm")  # the same SOPInstanceUID
    ds = pydicom.dcmread(sorted(folder.iterdir())[1])  # a re-export: same pixels, place and time, new UID
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(folder / "reexport.dcm")
    (st,) = read_dicom(folder, strict=True)
    assert st.image.shape[:2] == (2, 3)
    assert sum("duplicate" in r.message for r in caplog.records) == 1


def test_two_different_images_at_one_place_and_time_are_an_error_naming_both(tmp_path, sunnybrook):
    folder = _series(sunnybrook, tmp_path / "s")
    victim = sorted(folder.iterdir())[0]
    ds = pydicom.dcmread(victim)
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.PixelData = (ds.pixel_array // 2).astype(ds.pixel_array.dtype).tobytes()
    ds.save_as(folder / "conflict.dcm")
    with pytest.raises(CardiacSRError, match="conflict.dcm: a different image at the same slice position") as exc:
        read_dicom(folder, strict=True)
    assert victim.name in str(exc.value)


def test_a_long_axis_series_is_never_merged_into_the_short_axis_stack(tmp_path, sunnybrook, caplog):
    folder = _series(sunnybrook, tmp_path / "s")
    lax_uid = pydicom.uid.generate_uid()
    for i, f in enumerate(sorted(folder.iterdir())[:3]):
        ds = pydicom.dcmread(f)
        ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]  # a coronal-like long-axis plane
        ds.SeriesInstanceUID, ds.SeriesNumber, ds.SeriesDescription = lax_uid, 900, "cine 4ch"
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.save_as(folder / f"lax{i}.dcm")
    with pytest.raises(CardiacSRError, match="2 orientations.*'cine 4ch'.*give the folder of one orientation"):
        read_dicom(folder, strict=True)
    (st,) = read_dicom(folder)  # prepare/inspect: the short-axis stack, the other named in a warning
    assert st.image.shape[:2] == (2, 3) and abs(st.spacing[2] - 10) < 0.1
    assert any("keeping the stack with the most slice positions" in r.message for r in caplog.records)


def test_enhanced_multiframe_dicom_is_refused_in_one_line(tmp_path, sunnybrook):
    folder = _series(sunnybrook, tmp_path / "s", slices=(4,), phases=(0,))
    f = next(folder.iterdir())
    ds = pydicom.dcmread(f)
    pixels = ds.pixel_array
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4.1"
    ds.NumberOfFrames = 2
    ds.PixelData = np.concatenate([pixels[None]] * 2).tobytes()
    ds.save_as(f)
    with pytest.raises(CardiacSRError, match="enhanced \\(multi-frame\\) DICOM") as exc:
        read_dicom(folder, strict=True)
    assert "\n" not in str(exc.value)


def _jpeg_lossless(ds, uid, predictor):
    import imagecodecs
    from pydicom.encaps import encapsulate

    frame = imagecodecs.jpeg8_encode(ds.pixel_array.astype(np.uint16), lossless=True, predictor=predictor,
                                     bitspersample=16)
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = uid


@pytest.mark.parametrize("syntax", ["JPEGLosslessSV1", "JPEGLossless", "JPEGLSLossless", "JPEG2000Lossless",
                                    "RLELossless", "DeflatedExplicitVRLittleEndian"])
def test_compressed_transfer_syntaxes_are_decoded_exactly(tmp_path, sunnybrook, syntax):
    folder = _series(sunnybrook, tmp_path / "s", slices=(4,), phases=(0, 1))
    plain = read_dicom(folder, strict=True)[0].image
    uid = getattr(pydicom.uid, syntax)
    for f in folder.iterdir():
        ds = pydicom.dcmread(f)
        if syntax.startswith("JPEGLossless"):
            _jpeg_lossless(ds, uid, predictor=1 if syntax.endswith("SV1") else 2)
        elif syntax.startswith("Deflated"):
            ds.file_meta.TransferSyntaxUID = uid
        else:
            ds.compress(uid)
        ds.save_as(f)
        assert pydicom.dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID == uid
    np.testing.assert_array_equal(read_dicom(folder, strict=True)[0].image, plain)
