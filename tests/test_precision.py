"""``--precision``: bf16 (the generator's convolutions in bfloat16, its image path in float32) and the fast
graph (the same function with fewer operations, equal up to float32 rounding)."""

import numpy as np
import pytest

from cardiac_sr.cli import main
from cardiac_sr.models import build_generator
from cardiac_sr.precision import FLOAT32_LAYERS, with_precision


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    m = build_generator("NN", filters=16, res_blocks=2, name="mse-NN")
    rng = np.random.default_rng(4)
    m.set_weights([rng.normal(0, 0.05, w.shape).astype(np.float32) for w in m.get_weights()])
    path = tmp_path_factory.mktemp("bf16") / "m.keras"
    m.save(path)
    return m, path


def test_fp32_is_the_model_itself_and_bf16_rounds_only_the_learnt_detail(model):
    m, _ = model
    assert with_precision(m, "fp32") is m
    reduced = with_precision(m, "bf16")
    policies = {layer.name: layer.dtype_policy.name for layer in reduced.layers}
    assert all(policies[name] == "float32" for name in FLOAT32_LAYERS)
    assert policies["head_conv"] == policies["output_conv"] == "mixed_bfloat16"
    x = np.random.default_rng(0).random((2, 24, 24, 1)).astype(np.float32)
    exact, fast = m.predict_on_batch(x), reduced.predict_on_batch(x)
    assert fast.dtype == np.float32 and fast.shape == exact.shape
    detail = exact - reduced.get_layer("baseline")(x).numpy()  # what the network adds to bicubic
    error = fast - exact
    assert 0 < np.abs(error).max() < 0.02 * np.abs(detail).max() + 1e-3  # rounded, but only at detail scale
    with pytest.raises(ValueError, match="unknown precision"):
        with_precision(m, "int8")


def test_predict_and_assess_take_the_precision(model, tmp_path):
    _, path = model
    image = (np.random.default_rng(1).random((2, 2, 32, 32)) * 1000).astype(np.float32)
    np.save(tmp_path / "x.npy", image)
    outs = {}
    for precision in ("fp32", "fp32-fast", "bf16"):
        out = tmp_path / f"{precision}.npy"
        assert main(["-q", "predict", str(tmp_path / "x.npy"), "-o", str(out), "--model", str(path),
                     "--precision", precision]) == 0
        outs[precision] = np.load(out)
    assert outs["fp32"].shape == outs["bf16"].shape == outs["fp32-fast"].shape == (2, 2, 128, 128)
    diff = np.abs(outs["bf16"] - outs["fp32"])
    assert 0 < diff.max() < 0.01 * np.abs(outs["fp32"]).max()
    assert np.abs(outs["fp32-fast"] - outs["fp32"]).max() < 1e-5 * np.abs(outs["fp32"]).max()  # rounding only
    from cardiac_sr.assess import assess

    scored = {p: assess(tmp_path / "x.npy", path, progress=False, precision=p) for p in ("fp32", "bf16")}
    assert scored["bf16"]["precision"] == "bf16"
    one, other = scored["fp32"]["overall"], scored["bf16"]["overall"]
    assert one["bicubic_psnr"] == other["bicubic_psnr"]
    assert 0 < abs(one["model_psnr"] - other["model_psnr"]) < 0.05
    with pytest.raises(SystemExit):
        main(["predict", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy"), "--precision", "fp8"])


def _random_weights(m, seed):
    rng = np.random.default_rng(seed)
    m.set_weights([rng.normal(0, 0.05, w.shape).astype(np.float32) for w in m.get_weights()])
    return m


@pytest.mark.parametrize("kwargs", [dict(upsampling="NN"), dict(upsampling="TS"),
                                    dict(upsampling="NN", up_kernel=5, output_kernel=5, batch_norm=True),
                                    dict(upsampling="NN", scale=2, global_skip=False)])
def test_the_fast_graph_is_the_same_function_up_to_rounding(kwargs):
    """fp32-fast: sub-pixel up-sampling and the output convolution as a 1x1 convolution and a shifted sum give
    the model's images to float32 rounding, for odd sizes, a batch, other kernels, batch norm, scale 2, TS."""
    import keras

    m = _random_weights(build_generator(filters=8, res_blocks=1, **kwargs), 5)
    if kwargs.get("batch_norm"):  # non-trivial running statistics
        for layer in m.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                gamma, beta, mean, var = layer.get_weights()
                layer.set_weights([gamma + 1, beta, mean, np.abs(var) + 0.5])
    fast = with_precision(m, "fp32-fast")
    kinds = {type(layer).__name__ for layer in fast.layers}
    assert "ShiftSumConv" in kinds and ("SubpixelConv" in kinds) == (kwargs["upsampling"] == "NN")
    assert "UpSampling2D" not in kinds
    x = np.random.default_rng(0).random((3, 13, 22, 1)).astype(np.float32)
    exact, got = m.predict_on_batch(x), fast.predict_on_batch(x)
    assert got.shape == exact.shape and got.dtype == np.float32
    assert np.abs(got - exact).max() < 1e-5 * max(1.0, np.abs(exact).max())


def test_the_subpixel_kernel_reproduces_nearest_then_conv_exactly_in_float64():
    """The kernel algebra alone, in float64 with NumPy: each output phase is a (k+1)/2-tap convolution."""
    from scipy.signal import correlate2d

    from cardiac_sr.precision import _phase_window, subpixel_kernel

    rng = np.random.default_rng(2)
    for k in (3, 5, 7):
        x, kernel = rng.normal(size=(9, 11)), rng.normal(size=(k, k, 1, 1))
        want = correlate2d(np.repeat(np.repeat(x, 2, 0), 2, 1), kernel[:, :, 0, 0], mode="same")
        sub = subpixel_kernel(kernel)
        r = k // 2
        lo, hi = -min(_phase_window(a, r)[0] for a in range(2)), max(_phase_window(a, r)[1] for a in range(2))
        padded = np.pad(x, ((lo, hi), (lo, hi)))
        for a in range(2):
            for b in range(2):
                phase = correlate2d(padded, sub[:, :, 0, 2 * a + b], mode="valid")
                sa, sb = _phase_window(a, r)[0] + lo, _phase_window(b, r)[0] + lo
                np.testing.assert_allclose(phase[sa:sa + 9, sb:sb + 11], want[a::2, b::2], atol=1e-12)


def test_bf16_fast_rounds_like_bf16(model):
    m, _ = model
    x = np.random.default_rng(3).random((1, 24, 20, 1)).astype(np.float32)
    exact, reduced, both = (with_precision(m, p).predict_on_batch(x) for p in ("fp32", "bf16", "bf16-fast"))
    assert np.abs(both - exact).max() < 2 * np.abs(reduced - exact).max() + 1e-6
    assert {layer.dtype_policy.name for layer in with_precision(m, "bf16-fast").layers
            if type(layer).__name__ == "SubpixelConv"} == {"mixed_bfloat16"}
