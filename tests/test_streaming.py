"""Streaming predict (lean predict issue): a study is predicted and written a chunk of images at a time.

Chunks give the same numbers as the whole study, the streamed files hold exactly what nibabel and
numpy write for the whole volume, an output missing images is never kept, and the memory that
``predict`` allocates does not grow with the number of phases.
"""

import tracemalloc

import keras
import nibabel as nib
import numpy as np
import pytest

import cardiac_sr.predict as predict_mod
from cardiac_sr.dataset import fit_normalisation
from cardiac_sr.errors import CardiacSRError
from cardiac_sr.inference import load_model, super_resolve
from cardiac_sr.models import build_generator
from cardiac_sr.predict import UNCERTAINTY_THRESHOLD, _restore_highlights, predict, predict_study
from cardiac_sr.study import Study, blocks, compact_image
from cardiac_sr.writers import open_writer


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    """A small generator with random weights everywhere (its network path is not zero, unlike an untrained
    one's), saved as a .keras file."""
    model = build_generator("NN", filters=8, res_blocks=1)
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0, 0.05, w.shape).astype(np.float32) for w in model.get_weights()])
    path = tmp_path_factory.mktemp("net") / "net.keras"
    model.save(path)
    return path


def _study(slices=3, phases=5, h=24, w=20, seed=1):
    image = (np.random.default_rng(seed).random((slices, phases, h, w)) * 500).astype(np.float32)
    return Study("p", image, (1.5, 1.5, 8.0), meta={"ndim": 4})


def _images_per_chunk(monkeypatch, h, w, images):
    monkeypatch.setattr(predict_mod, "CHUNK_OUTPUT_PIXELS", images * h * w * 16)


def test_a_study_predicted_in_chunks_equals_the_whole_study_bit_for_bit(net, monkeypatch):
    model = keras.saving.load_model(net)
    study = _study()
    whole = predict_study(model, study, 4, uncertainty=True, batch_size=2, progress=False)
    _images_per_chunk(monkeypatch, 24, 20, 2)  # 15 images in chunks of 2 (the model's batch): 8 chunks
    chunked = predict_study(model, study, 4, uncertainty=True, batch_size=2, progress=False)
    for a, b in ((whole.sr, chunked.sr), (whole.uncertainty, chunked.uncertainty), (whole.warning, chunked.warning)):
        assert a.shape == (3, 5, 96, 80) and np.array_equal(a, b)
    # and what predict computed before it streamed: the whole stack through super_resolve at once
    norm = fit_normalisation(study.image, 99.5)
    x = ((study.image - norm.offset) / norm.scale).reshape(15, 24, 20).astype(np.float32)
    old = _restore_highlights(super_resolve(model, np.clip(x, 0, 1), 4, batch_size=2, progress=False), x, 4)
    assert np.array_equal(norm.invert(np.maximum(old, 0.0)).reshape(3, 5, 96, 80).astype(np.float32),
                          predict_study(model, study, 4, batch_size=2, progress=False).sr)
    assert whole.warning.any() and not whole.warning.all()  # the uncertainty test above is not vacuous
    assert UNCERTAINTY_THRESHOLD > 0


def test_a_compacted_study_predicts_the_same_numbers(net):
    """predict keeps a study of integers as int16 (uint16 past 32767) while it waits: half the memory of
    float32, the same normalisation and the same output bit for bit; fractional values stay float32."""
    model = keras.saving.load_model(net)
    study = _study()
    study.image = np.rint(study.image * 3)  # integers up to 1500: a scanner's int16
    small = Study("p", compact_image(study.image), study.spacing, meta=study.meta)
    assert small.image.dtype == np.int16 and small.image.nbytes == study.image.nbytes // 2
    assert fit_normalisation(small.image, 99.5) == fit_normalisation(study.image, 99.5)
    assert np.array_equal(predict_study(model, small, 4, batch_size=2, progress=False).sr,
                          predict_study(model, study, 4, batch_size=2, progress=False).sr)
    assert compact_image(study.image + 40000).dtype == np.uint16
    assert compact_image(study.image - 40000).dtype == np.float32  # fits neither
    fractional = study.image.copy()
    fractional[2, 4, 23, 19] += 0.5  # one value in the last block
    assert compact_image(fractional) is fractional
    view = np.transpose(study.image, (1, 0, 3, 2))  # a NIfTI study is a transposed view
    assert np.array_equal(compact_image(view), view)
    assert np.array_equal(compact_image(view, block=1000), view)  # blocks of a few rows: every row copied once
    parts = list(blocks(view, 1000))
    assert len(parts) > 3 and np.array_equal(np.concatenate(parts), view)
    assert all(np.shares_memory(part, view) for part in parts)  # views, no copies


def test_streamed_nifti_and_npy_files_hold_what_nibabel_and_numpy_write(net, tmp_path, monkeypatch):
    """Written in chunks of 3 images, in (slice, phase) order; compared with the whole volume written by
    nibabel (same header) and numpy."""
    data = (np.random.default_rng(3).random((20, 16, 3, 4)) * 900).astype(np.int16)  # (x, y, slice, phase)
    affine = np.array([[0, -1.2, 0, 10], [1.1, 0, 0, -5], [0, 0, 8, 3], [0, 0, 0, 1.0]])
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "in.nii.gz")
    np.save(tmp_path / "in.npy", np.transpose(data, (2, 3, 0, 1)).astype(np.float32))
    model = load_model(net)[0]  # as predict loads it
    expected = predict_study(model, _study_of(tmp_path / "in.nii.gz"), 4, progress=False).sr  # (S, T, H, W)
    _images_per_chunk(monkeypatch, 20, 16, 3)
    predict(tmp_path / "in.nii.gz", tmp_path / "out.nii", net, progress=False)
    predict(tmp_path / "in.npy", tmp_path / "out.npy", net, progress=False)
    out = nib.load(tmp_path / "out.nii")
    assert out.get_data_dtype() == np.int16  # the input's storage
    stored = np.rint(np.transpose(expected, (2, 3, 0, 1))).astype(np.int16)
    assert np.array_equal(np.asarray(out.dataobj.get_unscaled()), stored)
    nib.save(nib.Nifti1Image(stored, out.affine, out.header), tmp_path / "ref.nii")
    assert (tmp_path / "out.nii").read_bytes() == (tmp_path / "ref.nii").read_bytes()
    assert np.array_equal(np.load(tmp_path / "out.npy"), expected)


def _study_of(path):
    from cardiac_sr.nifti import read_nifti_file

    return read_nifti_file(path)


def test_an_output_missing_images_is_never_kept(tmp_path):
    study = _study(1, 2, 8, 8)
    for name, fmt in (("a.nii.gz", "nifti"), ("a.npy", "npy")):
        with pytest.raises(CardiacSRError, match="1 of 2 images were written"):
            with open_writer(study, (1, 2, 32, 32), tmp_path / name, fmt, 4, "m", "super-resolved") as out:
                out.write(0, np.zeros((1, 32, 32), np.float32))
    assert list(tmp_path.iterdir()) == []


def _peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("name, ensemble", [("out.npy", False), ("out.nii.gz", False), ("out.nii.gz", True)])
def test_memory_does_not_grow_with_the_number_of_phases(net, tmp_path, monkeypatch, name, ensemble):
    """A 40-phase study is twice a 20-phase one; what predict allocates (numpy, traced) grows only by the
    input's copies, not by the 20 more output volumes (2 slices x 20 phases x 384 x 384 float32: 24 MB).
    (20 phases, not 2: the fixed buffers, e.g. the gzip's 16 MB chunk, are then full in both runs.)"""
    _images_per_chunk(monkeypatch, 96, 96, 4)
    peaks = {}
    for phases in (20, 40):
        np.save(tmp_path / f"in{phases}.npy", _study(2, phases, 96, 96).image)
        peaks[phases] = _peak_bytes(lambda: predict(tmp_path / f"in{phases}.npy", tmp_path / f"{phases}{name}", net,
                                                    progress=False, ensemble=ensemble))
    input_growth = 2 * 20 * 96 * 96 * 4  # bytes of float32 input the 40-phase study adds (1.5 MB)
    output_growth = 2 * 20 * 384 * 384 * 4
    assert peaks[40] - peaks[20] < 2 * input_growth < output_growth / 4, peaks  # measured: 1.1-1.5 MB


def test_predict_says_what_a_study_needs_before_the_work(net, tmp_path, caplog):
    """Memory and time, from the study's size, before the first image (the time at the reference speed)."""
    np.save(tmp_path / "x.npy", _study(2, 3, 32, 32).image)
    with caplog.at_level("INFO", logger="cardiac_sr.predict"):
        predict(tmp_path / "x.npy", tmp_path / "y.npy", net, progress=False)
    line = next(r.getMessage() for r in caplog.records if "GiB of memory" in r.getMessage())
    assert "6 images of 32 x 32 -> 128 x 128; about 0.8 GiB of memory and 0 s on" in line, line
