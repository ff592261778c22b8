"""The model contract checked once at load: every wrong model is one line naming the file."""

import keras
import numpy as np
import pytest

from cardiac_sr.cli import main


def _save(path, inputs, outputs):
    keras.Model(inputs, outputs).save(path)
    return path


@pytest.fixture(scope="module")
def wrong_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("wrong")
    x = keras.Input((None, None, 1))
    fixed = keras.Input((64, 64, 1))
    nan = keras.layers.Conv2D(1, 3, padding="same")
    out = {
        "down": _save(root / "down.keras", x, keras.layers.AveragePooling2D(2)(x)),
        "fixed": _save(root / "fixed.keras", fixed, keras.layers.UpSampling2D(4)(fixed)),
        "two": _save(root / "two.keras", x, [keras.layers.UpSampling2D(4)(x), keras.layers.UpSampling2D(2)(x)]),
        "same": _save(root / "same.keras", x, keras.layers.Conv2D(1, 3, padding="same")(x)),
    }
    up = keras.layers.UpSampling2D(4)(nan(x))
    model = keras.Model(x, up)
    model.set_weights([np.full(w.shape, np.nan, np.float32) for w in model.get_weights()])
    model.save(root / "nan.keras")
    out["nan"] = root / "nan.keras"
    model.export(str(root / "exported"), format="tf_saved_model", verbose=False)
    out["savedmodel"] = root / "exported"
    return out


@pytest.mark.parametrize("kind, message", [
    ("down", "is not an up-scaling model (8 x 8 -> 4 x 4"),
    ("same", "is not an up-scaling model (8 x 8 -> 8 x 8"),
    ("fixed", "takes only 64 x 64 images"),
    ("two", "has 1 input(s) and 2 output(s)"),
    ("nan", "gives NaN or infinite values on a test image"),
    ("savedmodel", "is a TensorFlow SavedModel folder"),
])
def test_a_wrong_model_is_one_line_before_any_work(wrong_models, kind, message, tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((2, 16, 16)).astype(np.float32))
    out = tmp_path / "y.npy"
    assert main(["predict", str(tmp_path / "x.npy"), "-o", str(out), "--model", str(wrong_models[kind])]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and str(wrong_models[kind]) in err
    assert not out.exists()


def test_a_model_whose_output_turns_infinite_on_real_images_stops_before_writing(tmp_path, capsys):
    """Finite on the load-time test image (0.5 everywhere), infinite where the image reaches 1 (its
    99.5th percentile): y = 3e38 x + 5e37 overflows float32 only there."""
    x = keras.Input((None, None, 1))
    conv = keras.layers.Conv2D(1, 1)
    model = keras.Model(x, keras.layers.UpSampling2D(4)(conv(x)))
    conv.set_weights([np.full((1, 1, 1, 1), 3e38, np.float32), np.full((1,), 5e37, np.float32)])
    model.save(tmp_path / "overflow.keras")
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((2, 16, 16)).astype(np.float32))
    assert main(["predict", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy"),
                 "--model", str(tmp_path / "overflow.keras")]) == 2
    err = capsys.readouterr().err
    assert "its output holds NaN or infinite values" in err and err.count("\n") == 1
    assert not (tmp_path / "y.npy").exists()
