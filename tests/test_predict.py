"""predict / assess / export on real Sunnybrook DICOM (a few images of one study) with tiny models."""

import shutil
import types

import nibabel as nib
import numpy as np
import pydicom
import pytest

from cardiac_sr.cli import main
from cardiac_sr.degradation import upsample_bicubic
from cardiac_sr.errors import CardiacSRError
from cardiac_sr.models import build_generator
from cardiac_sr.inference import largest_window, load_model, self_ensemble, super_resolve
from cardiac_sr.assess import assess
from cardiac_sr.predict import UNCERTAINTY_THRESHOLD, export, predict
from cardiac_sr.dicom import read_dicom


@pytest.fixture(scope="module")
def subset(sunnybrook_studies, tmp_path_factory):
    """Real DICOM files of SCD0000101: 2 slice positions x 3 phases, copied to a folder."""
    study = sunnybrook_studies["SCD0000101"]
    folder = tmp_path_factory.mktemp("sb") / "SCD0000101"
    folder.mkdir()
    for s in (4, 5):
        for t in (0, 7, 14):
            shutil.copy(study.sources[s, t], folder)
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_data):
    """An untrained model (exactly bicubic) and a tiny model trained for a few steps on the tiny phantom."""
    from conftest import TINY_DEGRADE, TINY_TRAIN, train_tiny

    root = tmp_path_factory.mktemp("models")
    build_generator("NN", filters=8, res_blocks=1).save(root / "untrained.keras")
    params = {"degrade": dict(TINY_DEGRADE), "train": dict(TINY_TRAIN, epochs=2, steps_per_epoch=5)}
    train_tiny("mse-TS", params, *tiny_data, root / "run", model=root / "tiny.keras")
    assert np.abs(load_model(root / "tiny.keras")[0].get_layer("output_conv").kernel.numpy()).max() > 0
    return root


def _centre(ipp, iop, spacing, rows, cols):
    """Physical position of the image centre."""
    r, c = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
    return np.asarray(ipp, float) + (cols - 1) / 2 * spacing[1] * r + (rows - 1) / 2 * spacing[0] * c


def test_dicom_output_geometry_and_tags(subset, models, tmp_path):
    out = tmp_path / "sr"
    predict(subset, out, models / "tiny.keras", progress=False)
    src = read_dicom(subset)[0]
    res = read_dicom(out)[0]
    assert res.image.shape == (2, 3, 1024, 1024)
    np.testing.assert_allclose(res.spacing[:2], np.asarray(src.spacing[:2]) / 4, rtol=1e-5)
    assert res.spacing[2] == pytest.approx(src.spacing[2])
    series, sops = set(), set()
    for s in range(2):
        for t in range(3):
            a = pydicom.dcmread(src.sources[s, t])
            b = pydicom.dcmread(res.sources[s, t])
            assert (b.Rows, b.Columns) == (4 * a.Rows, 4 * a.Columns)
            np.testing.assert_allclose(_centre(b.ImagePositionPatient, b.ImageOrientationPatient, b.PixelSpacing,
                                               b.Rows, b.Columns),
                                       _centre(a.ImagePositionPatient, a.ImageOrientationPatient, a.PixelSpacing,
                                               a.Rows, a.Columns), atol=1e-3)
            for tag in ("PatientID", "StudyInstanceUID", "TriggerTime", "ImageOrientationPatient", "SliceThickness"):
                assert b.get(tag) == a.get(tag), tag
            assert b.SeriesInstanceUID != a.SeriesInstanceUID and b.SOPInstanceUID != a.SOPInstanceUID
            assert b.file_meta.MediaStorageSOPInstanceUID == b.SOPInstanceUID
            assert "super-resolved x4" in b.SeriesDescription
            series.add(b.SeriesInstanceUID)
            sops.add(b.SOPInstanceUID)
    assert len(series) == 1 and len(sops) == 6


def test_untrained_model_gives_bicubic_in_original_units(subset, models, tmp_path):
    out = tmp_path / "sr"
    predict(subset, out, models / "untrained.keras", progress=False)
    src, res = read_dicom(subset)[0], read_dicom(out)[0]
    for s, t in ((0, 0), (1, 2)):
        expected = np.clip(upsample_bicubic(src.image[s, t], 4), 0, None)  # highlights restored, not clipped
        np.testing.assert_allclose(res.image[s, t], expected, atol=1.0)  # stored as integers
    assert res.image.max() == pytest.approx(src.image.max(), rel=0.1)


def test_nifti_round_trip_and_uncertainty(subset, models, tmp_path):
    study = read_dicom(subset)[0]
    affine = np.array([[0, 1.4, 0, -50], [1.3, 0, 0, 20], [0, 0, 8, 5], [0, 0, 0, 1]], float)
    data = np.transpose(study.image, (2, 3, 0, 1)).astype(np.int16)
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "p_4d.nii.gz")
    out = tmp_path / "sr.nii.gz"
    written = predict(tmp_path / "p_4d.nii.gz", out, models / "tiny.keras", uncertainty=True, progress=False)
    assert [p.name for p in written] == ["sr.nii.gz", "sr_uncertainty.nii.gz", "sr_warning.nii.gz"]
    img = nib.load(out)
    assert img.shape == (1024, 1024, 2, 3) and img.get_data_dtype() == np.int16
    np.testing.assert_allclose(img.header.get_zooms()[:3], (1.3 / 4, 1.4 / 4, 8), rtol=1e-5)
    # the field of view stays put: the centre of the volume maps to the same physical point
    c_in = affine @ np.array([(256 - 1) / 2, (256 - 1) / 2, 0.5, 1])
    c_out = img.affine @ np.array([(1024 - 1) / 2, (1024 - 1) / 2, 0.5, 1])
    np.testing.assert_allclose(c_out, c_in, atol=1e-6)
    values = np.asarray(img.dataobj)
    assert values.min() >= 0 and values.max() <= 1.2 * data.max()
    unc = nib.load(tmp_path / "sr_uncertainty.nii.gz")
    warn = np.asarray(nib.load(tmp_path / "sr_warning.nii.gz").dataobj)
    assert unc.shape == img.shape == warn.shape and set(np.unique(warn)) <= {0, 1}
    assert np.asarray(unc.dataobj).max() > 0


def test_untrained_model_has_no_uncertainty(models, tmp_path):
    x = np.random.default_rng(1).random((2, 40, 24)).astype(np.float32) * 100
    np.save(tmp_path / "x.npy", x)
    predict(tmp_path / "x.npy", tmp_path / "y.npy", models / "untrained.keras", uncertainty=True, progress=False)
    y = np.load(tmp_path / "y.npy")
    assert y.shape == (2, 160, 96) and y.dtype == np.float32
    assert np.load(tmp_path / "y_uncertainty.npy").max() < 1e-3  # bicubic commutes with flips/rotations


def test_tiles_equal_whole_image(models):
    model = load_model(models / "tiny.keras")[0]
    x = np.random.default_rng(2).random((3, 70, 50)).astype(np.float32)
    whole = super_resolve(model, x, 4, progress=False)
    tiled = super_resolve(model, x, 4, tile=40, overlap=16, progress=False)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


def test_largest_window_is_the_largest_input_the_model_gets(models):
    """inference.largest_window (used by images_per_call and predict's memory estimate) is the largest
    window super_resolve really gives the model, tiled or whole: never more than tile x tile."""
    model = load_model(models / "tiny.keras")[0]
    seen = []

    def predict_on_batch(x):
        seen.append(x.shape[1] * x.shape[2])
        return model.predict_on_batch(x)

    spy = types.SimpleNamespace(name=model.name, predict_on_batch=predict_on_batch)
    for h, w, tile in ((70, 50, 40), (70, 50, 256), (100, 41, 48), (33, 90, 64)):
        seen.clear()
        super_resolve(spy, np.zeros((2, h, w), np.float32), 4, tile=tile, progress=False)
        assert max(seen) == largest_window(h, w, tile) <= tile * tile, (h, w, tile, max(seen))


def test_self_ensemble_is_the_mean_of_the_eight_turned_back_outputs(models):
    model = load_model(models / "tiny.keras")[0]
    x = np.random.default_rng(3).random((2, 20, 12)).astype(np.float32)
    plain, mean, std = self_ensemble(model, x, 4, progress=False)
    outs = []
    for k in range(4):
        for flip in (False, True):
            xt = np.rot90(x, k, axes=(1, 2))
            xt = xt[..., ::-1] if flip else xt
            y = super_resolve(model, np.ascontiguousarray(xt), 4, progress=False)
            y = y[..., ::-1] if flip else y
            outs.append(np.rot90(y, -k, axes=(1, 2)))
    outs = np.stack(outs)
    np.testing.assert_allclose(plain, outs[0], atol=1e-6)
    np.testing.assert_allclose(mean, outs.mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(std, outs.std(axis=0), atol=1e-4)
    assert std.max() > 1e-3  # a trained model is not exactly equivariant: the ensemble differs from one pass


def test_predict_and_assess_with_self_ensemble(subset, models, tmp_path, capsys):
    x = np.random.default_rng(4).random((2, 24, 16)).astype(np.float32) * 50
    np.save(tmp_path / "x.npy", x)
    predict(tmp_path / "x.npy", tmp_path / "plain.npy", models / "tiny.keras", progress=False)
    assert main(["predict", str(tmp_path / "x.npy"), "-o", str(tmp_path / "ens.npy"), "--model",
                 str(models / "tiny.keras"), "--self-ensemble"]) == 0
    plain, ens = np.load(tmp_path / "plain.npy"), np.load(tmp_path / "ens.npy")
    assert ens.shape == plain.shape and 0 < np.abs(ens - plain).max() < 0.2 * np.abs(plain).max()
    one = assess(subset, models / "tiny.keras", progress=False)
    eight = assess(subset, models / "tiny.keras", progress=False, ensemble=True)
    assert eight["self_ensemble"] and not one["self_ensemble"]
    assert eight["overall"]["bicubic_psnr"] == one["overall"]["bicubic_psnr"]
    assert eight["overall"]["model_psnr"] != pytest.approx(one["overall"]["model_psnr"], abs=1e-4)
    capsys.readouterr()
    assert main(["assess", str(subset), "--model", str(models / "tiny.keras"), "--self-ensemble"]) == 0
    assert "8-fold self-ensemble" in capsys.readouterr().out


def test_assess_on_real_data(subset, models, capsys):
    res = assess(subset, models / "untrained.keras", progress=False)
    o = res["overall"]
    assert o["images"] == 6 and o["model_psnr"] == pytest.approx(o["bicubic_psnr"], abs=0.01)
    assert o["detail_corr"] is None  # the untrained model adds no detail to bicubic
    trained = assess(subset, models / "tiny.keras", progress=False)["overall"]
    # a trained model changes the image, so there is added detail to correlate
    assert trained["model_psnr"] != pytest.approx(trained["bicubic_psnr"], abs=1e-3)
    assert trained["detail_corr"] is not None and trained["detail_scale"] is not None
    assert main(["assess", str(subset), "--model", str(models / "untrained.keras")]) == 0
    text = capsys.readouterr().out
    assert "SCD0000101" in text and "overall" in text and "bicubic" in text and "scale*" in text
    assert main(["assess", str(subset), "--model", str(models / "untrained.keras"), "--json",
                 "--degrade", "kspace"]) == 0
    assert '"method": "kspace"' in capsys.readouterr().out


@pytest.mark.parametrize("fmt", ["savedmodel", "onnx"])
def test_export_matches_keras(models, tmp_path, fmt):
    model = load_model(models / "tiny.keras")[0]
    x = np.random.default_rng(3).random((2, 24, 20, 1)).astype(np.float32)
    ref = model.predict_on_batch(x)
    out = export(models / "tiny.keras", tmp_path / ("m.onnx" if fmt == "onnx" else "m_savedmodel"), fmt)
    if fmt == "onnx":
        import onnxruntime as ort

        sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        props = sess.get_modelmeta().custom_metadata_map  # what a user of ONNX Runtime needs to feed it right
        assert (props["cardiac_sr.model"], props["cardiac_sr.scale"]) == ("mse-TS", "4")
        assert props["cardiac_sr.normalisation_percentile"] == "99.5" and "blur_bicubic" in props["cardiac_sr.degradation"]
    else:
        import tensorflow as tf

        loaded = tf.saved_model.load(str(out))  # keep a reference: its variables live in this object
        got = loaded.serve(x).numpy()
    # float32 convolutions in another runtime (ONNX Runtime's MLAS kernels, other summation orders) differ
    # from Keras by round-off: a few 1e-6 usually, once in ~10 full runs above 1e-5 under load. A wrong
    # export (a missing layer, wrong weights or layout) is off by 1e-2 or more.
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_errors_leave_no_output(subset, models, tmp_path, capsys):
    model = models / "tiny.keras"

    def fails(args, message):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert message in err, err
        assert err.count("\n") == 1

    fails(["predict", str(tmp_path / "nope"), "-o", str(tmp_path / "o.nii.gz"), "--model", str(model)], "no such file")
    (tmp_path / "empty").mkdir()
    fails(["predict", str(tmp_path / "empty"), "-o", str(tmp_path / "o"), "--model", str(model)], "folder is empty")
    bad = tmp_path / "bad"
    shutil.copytree(subset, bad)
    (bad / "corrupt.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"garbage")
    fails(["predict", str(bad), "-o", str(tmp_path / "o"), "--model", str(model)], "corrupt.dcm")
    np.save(tmp_path / "rgb.npy", np.zeros((64, 64, 3), np.uint8))
    fails(["predict", str(tmp_path / "rgb.npy"), "-o", str(tmp_path / "o.npy"), "--model", str(model)], "RGB")
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 2, 2, 2), np.float32), np.eye(4)), tmp_path / "5d.nii.gz")
    fails(["predict", str(tmp_path / "5d.nii.gz"), "-o", str(tmp_path / "o.nii.gz"), "--model", str(model)],
          "5 dimensions")
    (tmp_path / "fake.keras").write_text("not a model")
    fails(["predict", str(subset), "-o", str(tmp_path / "o"), "--model", str(tmp_path / "fake.keras")],
          "not a Keras model")
    fails(["predict", str(subset), "-o", str(tmp_path / "missing" / "o"), "--model", str(model)], "does not exist")
    (tmp_path / "exists.nii.gz").write_text("keep me")
    fails(["predict", str(subset), "-o", str(tmp_path / "exists.nii.gz"), "--model", str(model)], "--overwrite")
    assert (tmp_path / "exists.nii.gz").read_text() == "keep me"
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.nii.gz").exists() and not (tmp_path / "o.npy").exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
    np.save(tmp_path / "grey.npy", np.ones((2, 16, 16), np.float32))
    with pytest.raises(CardiacSRError, match="DICOM output needs a DICOM input"):
        predict(tmp_path / "grey.npy", tmp_path / "dcm_out", model)


def test_3d_nifti_stays_3d(models, tmp_path):
    vol = (np.random.default_rng(4).random((20, 24, 3)) * 100).astype(np.float32)
    nib.save(nib.Nifti1Image(vol, np.diag([1.5, 1.5, 8, 1])), tmp_path / "v.nii.gz")
    predict(tmp_path / "v.nii.gz", tmp_path / "o.nii.gz", models / "untrained.keras", progress=False)
    out = nib.load(tmp_path / "o.nii.gz")
    assert out.shape == (80, 96, 3) and out.get_data_dtype() == np.float32
    np.testing.assert_allclose(out.header.get_zooms(), (0.375, 0.375, 8.0))
    np.testing.assert_allclose(np.asarray(out.dataobj)[..., 1], np.clip(upsample_bicubic(vol[..., 1], 4), 0, None),
                               atol=1e-3)


def test_tile_and_batch_size_are_checked_before_any_work(subset, models, tmp_path, capsys):
    """A tile no larger than twice its overlap used to loop forever, growing memory without bound."""
    model = models / "tiny.keras"
    for flag, value, message in (("--tile", "32", "--tile: 32 is too small (at least 40)"),
                                 ("--tile", "-5", "--tile: -5 is too small"),
                                 ("--tile", "big", "--tile: 'big' is not a whole number"),
                                 ("--batch-size", "0", "--batch-size: 0 is too small (at least 1)")):
        with pytest.raises(SystemExit) as exc:
            main(["predict", str(subset), "-o", str(tmp_path / "o.nii.gz"), "--model", str(model), flag, value])
        assert exc.value.code == 2
        assert message in capsys.readouterr().err
    with pytest.raises(CardiacSRError, match="tile 32 must be larger than twice the overlap"):
        super_resolve(load_model(model)[0], np.zeros((1, 64, 64), np.float32), 4, tile=32, overlap=16, progress=False)
    assert not (tmp_path / "o.nii.gz").exists()


def test_overwrite_never_deletes_foreign_files(subset, models, tmp_path, capsys):
    model = str(models / "tiny.keras")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    (mine / "results").mkdir()
    assert main(["predict", str(subset), "-o", str(mine), "--model", model, "--overwrite"]) == 2
    assert "holds files cardiac-sr did not write" in capsys.readouterr().err
    assert (mine / "notes.txt").read_text() == "keep me" and (mine / "results").is_dir()
    # a file format into an existing folder: a clear error, no temp file left behind
    assert main(["predict", str(subset), "-o", str(mine), "--format", "npy", "--model", model, "--overwrite"]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt", "results"]
    # a previous DICOM output of ours is replaced; so is a file of ours, never a file of someone else's
    out = tmp_path / "sr"
    assert main(["predict", str(subset), "-o", str(out), "--model", model]) == 0
    first = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert main(["predict", str(subset), "-o", str(out), "--model", model, "--overwrite"]) == 0
    assert set(first) == {p.name for p in out.iterdir()} and len(first) == 6
    (tmp_path / "old.npy").write_text("an older result")
    np.save(tmp_path / "grey.npy", np.ones((2, 16, 16), np.float32))
    again = ["predict", str(tmp_path / "grey.npy"), "-o", str(tmp_path / "old.npy"), "--model", model, "--overwrite"]
    assert main(again) == 2 and "did not write" in capsys.readouterr().err
    assert (tmp_path / "old.npy").read_text() == "an older result"
    (tmp_path / "old.npy").unlink()
    assert main(again) == 0 and main(again) == 0
    assert np.load(tmp_path / "old.npy").shape == (2, 64, 64)
    assert not [p for p in tmp_path.rglob("*") if ".tmp-" in p.name]


def test_empty_npy_and_ctrl_c_give_one_line(tmp_path, models, capsys, monkeypatch):
    np.save(tmp_path / "empty.npy", np.zeros((0, 16, 16), np.float32))
    assert main(["predict", str(tmp_path / "empty.npy"), "-o", str(tmp_path / "o.npy"),
                 "--model", str(models / "tiny.keras")]) == 2
    err = capsys.readouterr().err
    assert "empty.npy: the array is empty (0, 16, 16)" in err and err.count("\n") == 1

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("cardiac_sr.predict.predict", interrupted)
    np.save(tmp_path / "grey.npy", np.ones((2, 16, 16), np.float32))
    assert main(["predict", str(tmp_path / "grey.npy"), "-o", str(tmp_path / "o.npy"),
                 "--model", str(models / "tiny.keras")]) == 130
    err = capsys.readouterr().err
    assert err.startswith("cardiac-sr: interrupted;") and err.count("\n") == 1
    assert not (tmp_path / "o.npy").exists()


def test_pickled_npy_and_lambda_model_are_refused_without_running_code(tmp_path, models, capsys):
    """Neither a pickled .npy nor a .keras file with a Python lambda is ever executed (safe loading)."""
    import keras

    np.save(tmp_path / "pickled.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert main(["predict", str(tmp_path / "pickled.npy"), "-o", str(tmp_path / "o.npy"),
                 "--model", str(models / "tiny.keras")]) == 2
    err = capsys.readouterr().err
    assert "pickled.npy: not a readable .npy array" in err and err.count("\n") == 1
    inp = keras.Input((None, None, 1))
    lam = keras.Model(inp, keras.layers.Lambda(lambda t: t * 2)(keras.layers.UpSampling2D(4)(inp)))
    lam.save(tmp_path / "lambda.keras")
    np.save(tmp_path / "grey.npy", np.ones((2, 16, 16), np.float32))
    assert main(["predict", str(tmp_path / "grey.npy"), "-o", str(tmp_path / "o.npy"),
                 "--model", str(tmp_path / "lambda.keras")]) == 2
    err = capsys.readouterr().err
    assert "lambda.keras: cannot be loaded as a Keras model in safe mode" in err and err.count("\n") == 1
    assert not (tmp_path / "o.npy").exists()


def test_preview_gif_shows_the_middle_slice_over_all_phases(subset, models, tmp_path, capsys):
    from PIL import Image

    out, gif = tmp_path / "sr.nii.gz", tmp_path / "loop.gif"
    args = ["predict", str(subset), "-o", str(out), "--model", str(models / "untrained.keras"), "--preview", str(gif)]
    assert main(args) == 0
    assert f"wrote {gif}" in capsys.readouterr().out
    with Image.open(gif) as im:
        assert im.n_frames == 3  # the subset: 2 slice positions x 3 phases
        assert im.size == (2 * 256 + 4, 14 + 256)  # input | super-resolved, the central 256 output pixels
        im.seek(1)
        frame = np.asarray(im.convert("L"), float)[14:]
    assert frame[:, :256].std() > 5 and frame[:, 260:].std() > 5  # images, not blank frames
    # refused before any work: an existing preview without --overwrite, or another format
    out.unlink()
    assert main(args) == 2 and "loop.gif: already exists" in capsys.readouterr().err
    assert main(args[:-1] + [str(tmp_path / "loop.png")]) == 2
    assert "name it *.gif" in capsys.readouterr().err
    assert not out.exists()


def test_assess_uses_the_preprocessing_the_model_was_trained_with(subset, tiny_data, tmp_path, caplog):
    """A model trained with prepare.percentile 99 and degrade.method kspace is assessed that way, no flags."""
    from conftest import TINY_DEGRADE, TINY_PREPARE, TINY_TRAIN, train_tiny
    from cardiac_sr.card import read_raw_card

    params = {"prepare": dict(TINY_PREPARE, percentile=99.0),
              "degrade": dict(TINY_DEGRADE, method="kspace", window="hann"), "train": dict(TINY_TRAIN, epochs=1)}
    model = tmp_path / "k.keras"
    train_tiny("mse-NN", params, *tiny_data, tmp_path / "run", model=model)
    card = read_raw_card(model)
    assert card["normalisation"]["percentile"] == 99.0 and card["degradation"]["method"] == "kspace"
    assert card["scale"] == 4 and card["training_data"]["source"] == "phantom"
    result = assess(subset, model, progress=False)
    assert result["degradation"] == {"method": "kspace", "window": "hann", "blur_sigma": 1.0, "scale": 4}
    assert result["percentile"] == 99.0
    # a flag overrides the card, with a warning
    caplog.set_level("WARNING")
    result = assess(subset, model, method="blur_bicubic", progress=False)
    assert result["degradation"]["method"] == "blur_bicubic"
    assert any("overrides the model's own 'kspace'" in r.message for r in caplog.records)


def test_a_model_without_a_card_gets_the_defaults_and_a_warning(subset, models, caplog):
    caplog.set_level("WARNING")
    result = assess(subset, models / "untrained.keras", progress=False)
    assert result["percentile"] == 99.5 and result["degradation"]["method"] == "blur_bicubic"
    assert any("carries no preprocessing card" in r.message for r in caplog.records)


def test_dicom_writer_keeps_rescale_and_signed_pixels(subset, models, tmp_path):
    """Signed stored pixels with RescaleSlope 2 / Intercept -100 come back in the same real units."""
    signed = tmp_path / "signed"
    signed.mkdir()
    for f in sorted(subset.iterdir()):
        ds = pydicom.dcmread(f)
        stored = ds.pixel_array.astype(np.int32) // 2 - 300  # negative values too
        ds.set_pixel_data(stored.astype(np.int16), photometric_interpretation="MONOCHROME2", bits_stored=16)
        ds.RescaleSlope, ds.RescaleIntercept = 2, -100
        ds.save_as(signed / f.name)
    out = tmp_path / "sr"
    predict(signed, out, models / "untrained.keras", progress=False)
    src, res = read_dicom(signed)[0], read_dicom(out)[0]
    b = pydicom.dcmread(res.sources[0, 0])
    assert b.PixelRepresentation == 1 and b.pixel_array.dtype == np.int16 and b.pixel_array.min() < 0
    assert (float(b.RescaleSlope), float(b.RescaleIntercept)) == (2.0, -100.0)
    assert src.image.min() < 0
    # real units, negative ones included; as for unsigned data, nothing goes below the volume's minimum
    expected = np.clip(upsample_bicubic(src.image[1, 2], 4), src.image.min(), None)
    np.testing.assert_allclose(res.image[1, 2], expected, atol=1.01)  # stored integers x slope 2: within 1


def test_multi_study_root_writes_one_series_per_patient(sunnybrook_studies, models, tmp_path):
    root = tmp_path / "root"
    for pid in ("SCD0000101", "SCD0000201"):
        (root / pid).mkdir(parents=True)
        for t in (0, 1):
            shutil.copy(sunnybrook_studies[pid].sources[5, t], root / pid)
    out = tmp_path / "sr"
    written = predict(root, out, models / "untrained.keras", progress=False)
    assert sorted(p.name for p in written) == ["SCD0000101", "SCD0000201"]
    for pid in ("SCD0000101", "SCD0000201"):
        (res,) = read_dicom(out / pid)
        assert res.patient_id == pid and res.image.shape == (1, 2, 1024, 1024)
    with pytest.raises(CardiacSRError, match="holds 2 studies"):
        predict(root, tmp_path / "sr.nii.gz", models / "untrained.keras", progress=False)


def test_2d_npy_in_2d_npy_out(models, tmp_path):
    image = (np.random.default_rng(3).random((24, 20)) * 500).astype(np.int16)
    np.save(tmp_path / "one.npy", image)
    predict(tmp_path / "one.npy", tmp_path / "sr.npy", models / "untrained.keras", progress=False)
    out = np.load(tmp_path / "sr.npy")
    assert out.shape == (96, 80) and out.dtype == np.int16
    np.testing.assert_allclose(out, np.clip(upsample_bicubic(image.astype(np.float32), 4), 0, None), atol=1.0)

def test_a_model_of_another_scale_is_said_in_the_log(tmp_path, caplog):
    caplog.set_level("INFO")
    build_generator("NN", filters=8, res_blocks=1, scale=2).save(tmp_path / "x2.keras")
    np.save(tmp_path / "grey.npy", np.ones((2, 16, 16), np.float32))
    assert main(["predict", str(tmp_path / "grey.npy"), "-o", str(tmp_path / "o.npy"),
                 "--model", str(tmp_path / "x2.keras")]) == 0
    assert np.load(tmp_path / "o.npy").shape == (2, 32, 32)
    assert any("up-scales x2" in r.getMessage() for r in caplog.records)


def test_super_resolve_keeps_one_copy_of_a_replicated_batch():
    """Under a MirroredStrategy Keras 3's predict_on_batch returns each replica's copy of the batch; the
    validation PSNR used to be computed on those copies (slices paired with the wrong predictions)."""
    class Replicated:  # what a 2-replica mirrored model returns: the batch's result, twice
        def predict_on_batch(self, x):
            y = np.repeat(np.repeat(x, 2, axis=1), 2, axis=2)
            return np.concatenate([y, y])

    images = np.random.default_rng(0).random((5, 8, 6)).astype(np.float32)
    out = super_resolve(Replicated(), images, 2, batch_size=2, progress=False)
    np.testing.assert_array_equal(out, np.repeat(np.repeat(images, 2, axis=1), 2, axis=2))


def test_a_study_too_large_for_the_memory_is_refused_with_the_estimate(models, tmp_path, capsys, monkeypatch):
    """Refused before any work, in one line, with the flags that make it fit where smaller model calls do."""
    import cardiac_sr.predict

    np.save(tmp_path / "x.npy", np.ones((3, 4, 32, 32), np.float32))
    monkeypatch.setattr(cardiac_sr.predict, "predict_chunks", lambda *a, **k: pytest.fail("work started"))
    args = ["predict", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy"), "--model", str(models / "untrained.keras")]
    for available, fix in ((0.5, "give it fewer slices or phases at a time"),
                           (0.7, "--batch-size 1 --tile 128 makes it fit (about 0.7 GiB)")):
        monkeypatch.setattr(cardiac_sr.predict, "available_memory", lambda: available * 2**30)
        assert main(args) == 2
        err = capsys.readouterr().err
        assert f"(3 slices x 4 phases of 32 x 32) needs about 0.8 GiB of memory and {available} GiB are available; " \
            f"{fix}" in err, err
        assert err.count("\n") == 1 and not (tmp_path / "y.npy").exists()
    # the fast graph's feature maps take more (precision.fast_graph): its estimate says so, and predict asks for it
    study = types.SimpleNamespace(image=np.zeros((12, 20, 256, 256), np.int16))
    exact, fast = (cardiac_sr.predict.memory_needed(study, 4, False, False, precision=p) for p in ("fp32", "fp32-fast"))
    assert fast - exact >= 1024 * 1024 * (cardiac_sr.predict.FAST_ACTIVATION_BYTES - cardiac_sr.predict.ACTIVATION_BYTES)
    asked = []

    def needed(*args, **kwargs):
        asked.append(args[6:] + tuple(kwargs.values()))
        raise CardiacSRError("asked")

    monkeypatch.setattr(cardiac_sr.predict, "memory_needed", needed)
    assert main(args + ["--precision", "fp32-fast"]) == 2
    assert asked and asked[0][-1] == "fp32-fast"


def test_a_folder_of_nifti_volumes_gives_a_folder_of_the_same_names(models, tmp_path, capsys):
    from test_nifti import acdc_tree

    acdc_tree(tmp_path / "acdc")
    out = tmp_path / "sr"
    model = str(models / "untrained.keras")
    assert main(["predict", str(tmp_path / "acdc"), "-o", str(tmp_path / "sr.nii.gz"), "--model", model]) == 2
    assert "name an output folder" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "acdc"), "-o", str(out), "--model", model]) == 0
    names = sorted(str(p.relative_to(out)) for p in out.rglob("*.nii.gz"))
    assert names == [f"patient00{p}/patient00{p}_frame0{f}.nii.gz" for p in (1, 2) for f in (1, 9)]
    src = nib.load(tmp_path / "acdc" / "patient001" / "patient001_frame09.nii.gz")
    res = nib.load(out / "patient001" / "patient001_frame09.nii.gz")
    assert res.shape == (38 * 4, 46 * 4, 3) and src.get_data_dtype() == np.uint8
    # uint8 storage where the values fit, float32 where bicubic overshoot passes 255 (never clipped)
    assert res.get_data_dtype() == np.uint8 or np.asarray(res.dataobj).max() > 255
    assert main(["predict", str(tmp_path / "acdc"), "-o", str(out), "--model", model]) == 2  # no --overwrite
    assert main(["predict", str(tmp_path / "acdc"), "-o", str(out), "--model", model, "--overwrite"]) == 0
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_assess_on_a_folder_of_nifti_volumes_scores_the_labelled_heart(models, tmp_path):
    from test_nifti import acdc_tree

    acdc_tree(tmp_path / "acdc", shape=(64, 72, 3))
    result = assess(tmp_path / "acdc", models / "untrained.keras")
    rows = result["patients"]
    assert [r["patient"] for r in rows] == [f"patient00{p}_frame0{f}" for p in (1, 2) for f in (1, 9)]
    assert all(r["roi_images"] == 2 and r["model_roi_psnr"] is not None for r in rows)


def test_dicom_outputs_trace_to_their_input_and_display_right(subset, models, tmp_path):
    out = tmp_path / "sr"
    predict(subset, out, models / "tiny.keras", uncertainty=True, progress=False)
    src = {pydicom.dcmread(f).SOPInstanceUID: pydicom.dcmread(f) for f in subset.iterdir()}
    numbers = set()
    for folder, kind in ((out, "super-resolved"), (tmp_path / "sr_uncertainty", "SR uncertainty"),
                         (tmp_path / "sr_warning", "SR uncertainty warning")):
        ds = pydicom.dcmread(sorted(folder.iterdir())[0])
        assert f"{kind} x4 (cardiac-sr mse-TS)" in ds.SeriesDescription  # the model's name from its card
        ref = ds.SourceImageSequence[0]
        assert ref.ReferencedSOPInstanceUID in src and ref.ReferencedSOPClassUID == ds.SOPClassUID
        assert ds.ImageType[:3] == ["DERIVED", "SECONDARY", src[ref.ReferencedSOPInstanceUID].ImageType[2]]
        assert ds.SoftwareVersions.startswith("cardiac-sr") and len(ds.ContentDate) == 8
        assert ds.file_meta.ImplementationVersionName.startswith("CARDIACSR")
        numbers.add(int(ds.SeriesNumber))
        if kind != "super-resolved":  # its own window, known before any image is written (not the input's,
            # which showed these small values black): the uncertainty up to twice the warning level, the mask 0/1
            level = UNCERTAINTY_THRESHOLD * np.percentile([d.pixel_array * float(getattr(d, "RescaleSlope", 1) or 1)
                                                           + float(getattr(d, "RescaleIntercept", 0) or 0)
                                                           for d in src.values()], 99.5)
            width = 2 * level if kind == "SR uncertainty" else 1.0
            assert float(ds.WindowWidth) == pytest.approx(width, rel=1e-4) and \
                float(ds.WindowCenter) == pytest.approx(width / 2, rel=1e-4)
    assert len(numbers) == 3


def test_an_unknown_output_suffix_is_refused(subset, models, tmp_path, capsys):
    assert main(["predict", str(subset), "-o", str(tmp_path / "x.png"), "--model", str(models / "tiny.keras")]) == 2
    assert "unknown output type '.png'" in capsys.readouterr().err and not (tmp_path / "x.png").exists()


def test_export_overwrites_only_its_own_onnx_file(models, tmp_path, capsys):
    (tmp_path / "other.onnx").write_bytes(b"someone else's model")
    args = ["export", "--model", str(models / "tiny.keras"), "--format", "onnx", "--overwrite", "-o"]
    assert main(args + [str(tmp_path / "other.onnx")]) == 2
    assert "did not write" in capsys.readouterr().err and (tmp_path / "other.onnx").read_bytes() == b"someone else's model"
    assert main(args + [str(tmp_path / "ours.onnx")]) == 0 and main(args + [str(tmp_path / "ours.onnx")]) == 0
