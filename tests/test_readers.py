"""The readers' entry point: paths, format detection, scanning one study at a time, sources for prepare."""

import nibabel as nib
import numpy as np
import pydicom
import pytest

from cardiac_sr.dicom import read_dicom
from cardiac_sr.errors import CardiacSRError
from cardiac_sr.params import Prepare

from test_dicom import _copy_images, _series
from test_nifti import acdc_tree


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


def test_acdc_root_prepares_with_patient_splits(tmp_path):
    from cardiac_sr.dataset import load_split, read_manifest
    from cardiac_sr.prepare import prepare

    acdc_tree(tmp_path / "acdc", patients=("patient001", "patient002", "patient003"))
    info = prepare(Prepare.of({"source": "nifti", "path": str(tmp_path / "acdc"), "seed": 1, "hr_size": 48,
                    "percentile": 99.5, "split": {"train": ["patient001"], "val": ["patient002"],
                                                  "test": ["patient003"]}}, "prepare"), 4, tmp_path / "prepared")
    assert sum(info["splits"].values()) == 18  # 3 patients x 3 slices x 2 frames, never a label map
    rows = [r for r in read_manifest(tmp_path / "prepared") if r["split"] == "test"]
    assert {r["patient"] for r in rows} == {"patient003"} and sum(int(r["has_roi"]) for r in rows) == 4
    assert load_split(tmp_path / "prepared", "test", "roi")[2].any()  # slice 1, frame 1 (slices x frames order)


def test_missing_and_empty_paths(tmp_path):
    with pytest.raises(CardiacSRError, match="no such file"):
        read_dicom(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CardiacSRError, match="empty"):
        read_dicom(tmp_path / "empty")
    with pytest.raises(CardiacSRError, match="empty input path"):
        read_dicom("")
