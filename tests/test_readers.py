import warnings
import shutil
import nibabel as nib
import numpy as np
import pydicom
import pytest

from cardiac_sr.errors import CardiacSRError
from cardiac_sr.dicom import read_dicom
from cardiac_sr.nifti import read_nifti, read_nifti_file


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
def test_missing_and_empty_paths(tmp_path):
    with pytest.raises(CardiacSRError, match="no such file"):
        read_dicom(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CardiacSRError, match="empty"):
        read_dicom(tmp_path / "empty")
    with pytest.raises(CardiacSRError, match="empty input path"):
        read_dicom("")


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


def test_scanning_reads_headers_only_and_loads_one_study_at_a_time(tmp_path, sunnybrook, monkeypatch):
    """prepare, external, predict and assess scan a collection first and read one study's pixels at a time."""
    from cardiac_sr import dicom, readers

    _copy_images(sunnybrook / "SCD0000101", tmp_path / "root" / "A", n=6)
    _copy_images(sunnybrook / "SCD0000101", tmp_path / "root" / "B", n=4)
    for f in (tmp_path / "root" / "B").iterdir():  # another patient
        ds = pydicom.dcmread(f)
        ds.PatientID = "B"
        ds.save_as(f)
    pixel_reads = []
    real = dicom._read_one_dicom
    monkeypatch.setattr(dicom, "_read_one_dicom", lambda f: pixel_reads.append(f) or real(f))
    scanned = dicom.scan_dicom(tmp_path / "root")
    ids = [pid for pid, _ in scanned]
    assert len(ids) == 2 and "B" in ids and pixel_reads == []  # headers only
    first = scanned[0][1]()
    assert first.patient_id == ids[0] and len(pixel_reads) == first.image.shape[0] * first.image.shape[1]
    fmt, pairs = readers.scan_input(tmp_path / "root")
    assert fmt == "dicom" and [pid for pid, _ in pairs] == ids


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


# ---------------------------------------------------------------- NIfTI
def _write_nifti(path, data, zooms):
    img = nib.Nifti1Image(data, np.diag(list(zooms[:3]) + [1.0]))
    img.header.set_zooms(zooms)
    nib.save(img, str(path))


def test_nifti_4d_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.random((40, 48, 5, 7)).astype(np.float32)
    _write_nifti(tmp_path / "patient001_4d.nii.gz", data, (1.5, 1.25, 8.0, 30.0))
    st = read_nifti_file(tmp_path / "patient001_4d.nii.gz")
    assert st.patient_id == "patient001"
    assert st.image.shape == (5, 7, 40, 48)
    assert st.spacing == pytest.approx((1.5, 1.25, 8.0))
    np.testing.assert_array_equal(st.image[2, 3], data[:, :, 2, 3])


def test_nifti_3d_and_folder_layouts(tmp_path):
    data = np.ones((32, 32, 4), np.int16)
    _write_nifti(tmp_path / "A_sa.nii.gz", data, (1.2, 1.2, 10.0))
    _write_nifti(tmp_path / "A_sa_gt.nii.gz", data, (1.2, 1.2, 10.0))  # labels: skipped
    _write_nifti(tmp_path / "B_sa.nii", data * 3, (1.2, 1.2, 10.0))
    studies = read_nifti(tmp_path)
    assert sorted(s.patient_id for s in studies) == ["A", "B"]
    assert studies[0].image.shape == (4, 1, 32, 32)


def test_nifti_errors(tmp_path):
    _write_nifti(tmp_path / "five.nii.gz", np.zeros((16, 16, 2, 2, 2), np.float32), (1, 1, 1, 1, 1))
    with pytest.raises(CardiacSRError, match="five.nii.gz.*5 dimensions"):
        read_nifti(tmp_path / "five.nii.gz")
    rgb_type = np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1")])
    img = nib.Nifti1Image(np.zeros((16, 16, 2), rgb_type), np.eye(4))
    nib.save(img, str(tmp_path / "rgb.nii"))
    with pytest.raises(CardiacSRError, match="rgb.nii.*RGB"):
        read_nifti(tmp_path / "rgb.nii")
    (tmp_path / "broken.nii.gz").write_bytes(b"not a nifti at all")
    with pytest.raises(CardiacSRError, match="broken.nii.gz.*not a readable NIfTI"):
        read_nifti(tmp_path / "broken.nii.gz")


def test_corrupt_nifti_among_good_is_skipped_with_warning(tmp_path, caplog):
    _write_nifti(tmp_path / "good_4d.nii.gz", np.ones((16, 16, 2, 3), np.float32), (1, 1, 1, 1))
    (tmp_path / "bad_4d.nii.gz").write_bytes(b"garbage")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        studies = read_nifti(tmp_path)
    assert len(_skips(caplog, "bad_4d.nii.gz")) == 1
    assert [s.patient_id for s in studies] == ["good"]
    with pytest.raises(CardiacSRError, match="bad_4d"):
        read_nifti(tmp_path, strict=True)


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


def test_dicomdir_and_reports_are_skipped_and_a_stray_nifti_does_not_switch_the_format(tmp_path, sunnybrook, caplog):
    from pydicom.dataset import FileMetaDataset

    from cardiac_sr.readers import detect_format, scan_input

    folder = _series(sunnybrook, tmp_path / "s")
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.FileSetID, ds.DirectoryRecordSequence = "CD", []
    ds.save_as(folder / "DICOMDIR", enforce_file_format=True)
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 2), np.float32), np.eye(4)), folder / "stray.nii.gz")
    assert detect_format(folder) == "dicom"
    assert any("ignoring 1 file(s), e.g." in r.message and "stray.nii.gz" in r.message for r in caplog.records)
    fmt, pairs = scan_input(folder)  # strict, as predict reads
    assert fmt == "dicom" and pairs[0][1]().image.shape[:2] == (2, 3)


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


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_a_header_claiming_more_than_the_file_holds_is_refused_before_reading(tmp_path, suffix):
    import resource

    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.float32)
    hdr.set_data_shape((2048, 2048, 64, 8))  # 8 GiB claimed
    hdr["vox_offset"] = 352
    path = tmp_path / f"liar{suffix}"
    opener = __import__("gzip").open if suffix.endswith(".gz") else open
    with opener(path, "wb") as fh:  # the header of 8 GiB with 64 bytes of voxels
        fh.write(hdr.binaryblock + b"\0" * 4 + np.zeros(16, np.float32).tobytes())
    assert path.stat().st_size < 2000 and nib.load(path).shape == (2048, 2048, 64, 8)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(CardiacSRError, match=r"the header claims \(2048, 2048, 64, 8\) float32 voxels "
                                             r"\(8192.0 MiB\) but the file holds 0.0 MiB"):
        read_nifti_file(path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB: nothing like 8 GiB


# ---------------------------------------------------------------- ACDC / M&Ms layouts
def acdc_tree(root, patients=("patient001", "patient002"), shape=(38, 46, 3)):
    """A tiny ACDC-shaped tree: patientNNN/{Info.cfg, patientNNN_frame01(_gt), patientNNN_frame09(_gt)}.nii.gz,
    an odd matrix size, labels 1-3 on a disc in the middle slices (none on the first)."""
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    disc = (yy - shape[0] / 2) ** 2 + (xx - shape[1] / 2) ** 2 < 64
    for p in patients:
        folder = root / p
        folder.mkdir(parents=True)
        (folder / "Info.cfg").write_text("ED: 1\nES: 9\nGroup: NOR\nNbFrame: 20\n")
        affine = np.diag([1.56, 1.56, 10.0, 1.0])
        for frame in (1, 9):
            img = (rng.random(shape) * 200 + disc[..., None] * 50 * frame).astype(np.uint8)
            nib.save(nib.Nifti1Image(img, affine), folder / f"{p}_frame{frame:02d}.nii.gz")
            labels = np.zeros(shape, np.uint8)
            labels[..., 1:][disc] = 3
            labels[..., 1:][disc & (xx < shape[1] / 2)] = 2
            nib.save(nib.Nifti1Image(labels, affine), folder / f"{p}_frame{frame:02d}_gt.nii.gz")
    return root


def test_acdc_frames_are_one_study_per_patient_with_the_labels_as_roi(tmp_path):
    acdc_tree(tmp_path)
    studies = read_nifti(tmp_path)
    assert [s.patient_id for s in studies] == ["patient001", "patient002"]  # never a _gt file, never twice
    st = studies[0]
    assert st.image.shape == (3, 2, 38, 46) and st.meta["frames"] == [1, 9]
    assert st.has_roi.tolist() == [[False, False], [True, True], [True, True]]
    labels = nib.load(tmp_path / "patient001" / "patient001_frame01_gt.nii.gz").get_fdata()
    np.testing.assert_array_equal(st.roi[1, 0], labels[..., 1] > 0)  # image[s, t] = data[:, :, s, t]
    assert st.image[1, 1].max() > st.image[1, 0].max()  # frame 9 is the second phase


def test_acdc_root_prepares_with_patient_splits(tmp_path):
    from cardiac_sr.dataset import load_split, read_manifest
    from cardiac_sr.prepare import prepare

    acdc_tree(tmp_path / "acdc", patients=("patient001", "patient002", "patient003"))
    info = prepare({"source": "nifti", "path": str(tmp_path / "acdc"), "seed": 1, "hr_size": 48,
                    "percentile": 99.5, "split": {"train": ["patient001"], "val": ["patient002"],
                                                  "test": ["patient003"]}}, 4, tmp_path / "prepared")
    assert sum(info["splits"].values()) == 18  # 3 patients x 3 slices x 2 frames, never a label map
    rows = [r for r in read_manifest(tmp_path / "prepared") if r["split"] == "test"]
    assert {r["patient"] for r in rows} == {"patient003"} and sum(int(r["has_roi"]) for r in rows) == 4
    assert load_split(tmp_path / "prepared", "test", "roi")[2].any()  # slice 1, frame 1 (slices x frames order)


def test_a_patient_with_a_full_cine_uses_it_and_the_others_their_frames(tmp_path):
    """As in ../shared/data/acdc-train, where one patient also has its _4d cine: the 4D for that patient
    (its labelled frames' maps as the ROI of those phases), the frames for every other patient."""
    acdc_tree(tmp_path)
    folder = tmp_path / "patient002"
    frames = [nib.load(folder / f"patient002_frame0{f}.nii.gz") for f in (1, 9)]
    cine = np.stack([np.asarray(frames[0].dataobj)] * 10, axis=-1)
    nib.save(nib.Nifti1Image(cine, frames[0].affine), folder / "patient002_4d.nii.gz")
    studies = {s.patient_id: s for s in read_nifti(tmp_path)}
    assert sorted(studies) == ["patient001", "patient002"]
    assert studies["patient001"].image.shape[1] == 2 and studies["patient002"].image.shape[1] == 10
    assert studies["patient002"].has_roi.any(axis=0).tolist() == [t in (0, 8) for t in range(10)]
