"""NIfTI volumes: layouts, ACDC/M&Ms folders and label maps, headers that lie, bad files."""

import warnings

import nibabel as nib
import numpy as np
import pytest

from cardiac_sr.errors import CardiacSRError
from cardiac_sr.nifti import read_nifti, read_nifti_file

from test_dicom import _skips


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
