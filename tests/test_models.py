"""The generator: shapes, the exact bicubic skip, architecture switches, safe loading."""

import keras
import numpy as np
import pytest

from cardiac_sr.degradation import upsample_bicubic
from cardiac_sr.models import CubicUpsample, build_generator, load_generator


@pytest.mark.parametrize("shape", [(64, 64), (23, 37), (2, 5)])
def test_cubic_upsample_layer_equals_the_bicubic_baseline(shape):
    x = np.random.default_rng(0).random(shape).astype("float32")
    y = np.asarray(CubicUpsample(4)(x[None, ..., None]))[0, ..., 0]
    np.testing.assert_allclose(y, upsample_bicubic(x, 4), atol=2e-6)


@pytest.mark.parametrize("upsampling", ["TS", "NN"])
def test_untrained_model_is_exactly_the_baseline(upsampling):
    model = build_generator(upsampling)
    x = np.random.default_rng(1).random((2, 40, 28, 1)).astype("float32")
    y = model.predict_on_batch(x)
    assert y.shape == (2, 160, 112, 1)
    for i in range(2):
        np.testing.assert_allclose(y[i, ..., 0], upsample_bicubic(x[i, ..., 0], 4), atol=2e-6)


def test_seed_network_has_batch_norm_and_no_skip():
    seed = build_generator("TS", batch_norm=True, global_skip=False)
    names = [layer.name for layer in seed.layers]
    assert any(n.endswith("_bn") for n in names) and "global_skip" not in names
    ours = build_generator("TS")
    names = [layer.name for layer in ours.layers]
    assert not any(n.endswith("_bn") for n in names) and "global_skip" in names
    # TS and NN have the same number of weights (3x3 kernels, 64 filters), BN adds its own
    assert build_generator("NN").count_params() == ours.count_params() == 379_713
    assert seed.count_params() > ours.count_params()


def test_upsampling_blocks_differ():
    ts = [type(layer).__name__ for layer in build_generator("TS").layers]
    nn = [type(layer).__name__ for layer in build_generator("NN").layers]
    assert ts.count("Conv2DTranspose") == 2 and "UpSampling2D" not in ts
    assert nn.count("UpSampling2D") == 2 and "Conv2DTranspose" not in nn


def test_ts_starts_as_bilinear_interpolation_without_checkerboard(tmp_path):
    model = build_generator("TS", filters=8, res_blocks=1)
    tconv = model.get_layer("up1_tconv")
    kernel = tconv.get_weights()[0]
    np.testing.assert_allclose(kernel[:, :, 2, 2], np.outer([0.5, 1, 0.5], [0.5, 1, 0.5]))
    assert kernel[:, :, 2, 3].max() == 0  # channel c only feeds channel c
    # a smooth (here: linear) feature map is up-sampled smoothly: no period-2 pattern inside
    ramp = np.tile(np.arange(6, dtype="float32")[None, :, None], (6, 1, 8))[None]
    up = np.asarray(tconv(ramp))[0, 2:-2, 2:-2, 0]
    np.testing.assert_allclose(np.diff(up, axis=1), 0.5, atol=1e-6)
    np.testing.assert_allclose(np.diff(up, axis=0), 0.0, atol=1e-6)
    # it survives saving (safe mode) and the seed's random start stays one param away
    model.save(tmp_path / "ts.keras")
    np.testing.assert_array_equal(load_generator(tmp_path / "ts.keras").get_layer("up1_tconv").get_weights()[0], kernel)
    seed = build_generator("TS", filters=8, res_blocks=1, up_init="glorot_uniform")
    assert np.count_nonzero(seed.get_layer("up1_tconv").get_weights()[0][:, :, 2, 3])
    # NN has no transposed convolution: up_init does not change it
    keras.utils.set_random_seed(3)
    a = build_generator("NN", filters=8, res_blocks=1).get_weights()
    keras.utils.set_random_seed(3)
    b = build_generator("NN", filters=8, res_blocks=1, up_init="glorot_uniform").get_weights()
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_architecture_params_are_used():
    m = build_generator("NN", filters=16, res_blocks=2, head_kernel=5, output_kernel=3, scale=2)
    assert m.get_layer("head_conv").kernel.shape == (5, 5, 1, 16)
    assert m.get_layer("output_conv").kernel.shape == (3, 3, 16, 1)
    assert sum(1 for layer in m.layers if layer.name.endswith("_add")) == 2
    assert m.predict_on_batch(np.zeros((1, 8, 8, 1), "float32")).shape == (1, 16, 16, 1)


def test_bad_arguments():
    with pytest.raises(ValueError, match="upsampling"):
        build_generator("XX")
    with pytest.raises(ValueError, match="power of two"):
        build_generator("TS", scale=3)
    with pytest.raises(ValueError, match="up_init"):
        build_generator("TS", up_init="orthogonal")


def test_save_and_safe_load_round_trip(tmp_path):
    model = build_generator("TS", filters=8, res_blocks=1)
    model.get_layer("output_conv").kernel.assign(
        np.random.default_rng(2).normal(0, 0.01, model.get_layer("output_conv").kernel.shape))
    model.save(tmp_path / "m.keras")
    loaded = load_generator(tmp_path / "m.keras")
    x = np.random.default_rng(3).random((1, 16, 16, 1)).astype("float32")
    np.testing.assert_array_equal(loaded.predict_on_batch(x), model.predict_on_batch(x))


def test_two_saves_of_the_same_weights_are_byte_identical(tmp_path):
    import time

    from cardiac_sr.card import Card, read_card, read_raw_card
    from cardiac_sr.models import load_generator, save_generator
    from cardiac_sr.params import Degrade

    model = build_generator("NN", filters=8, res_blocks=1)
    twin = build_generator("NN", filters=8, res_blocks=1)  # the same weights in other Python objects
    twin.set_weights(model.get_weights())
    card = Card("mse-NN", 4, 99.5, Degrade.of({"method": "blur_bicubic", "scale": 4}, "degrade"), None)
    save_generator(model, tmp_path / "a.keras", card)
    time.sleep(2.1)  # a zip entry's date has two-second steps: a clock in the bytes would show
    save_generator(twin, tmp_path / "b.keras", card)
    assert (tmp_path / "a.keras").read_bytes() == (tmp_path / "b.keras").read_bytes()
    again = load_generator(tmp_path / "b.keras")
    assert read_raw_card(tmp_path / "b.keras") == card.to_json() and read_card(tmp_path / "b.keras", 4) == card
    x = np.random.default_rng(0).random((1, 12, 12, 1)).astype(np.float32)
    np.testing.assert_array_equal(again.predict_on_batch(x), model.predict_on_batch(x))
