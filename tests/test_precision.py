"""``--precision bf16``: the generator's convolutions in bfloat16, its image path in float32."""

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
    for precision in ("fp32", "bf16"):
        out = tmp_path / f"{precision}.npy"
        assert main(["-q", "predict", str(tmp_path / "x.npy"), "-o", str(out), "--model", str(path),
                     "--precision", precision]) == 0
        outs[precision] = np.load(out)
    assert outs["fp32"].shape == outs["bf16"].shape == (2, 2, 128, 128)
    diff = np.abs(outs["bf16"] - outs["fp32"])
    assert 0 < diff.max() < 0.01 * np.abs(outs["fp32"]).max()
    from cardiac_sr.assess import assess

    scored = {p: assess(tmp_path / "x.npy", path, progress=False, precision=p) for p in ("fp32", "bf16")}
    assert scored["bf16"]["precision"] == "bf16"
    one, other = scored["fp32"]["overall"], scored["bf16"]["overall"]
    assert one["bicubic_psnr"] == other["bicubic_psnr"]
    assert 0 < abs(one["model_psnr"] - other["model_psnr"]) < 0.05
    with pytest.raises(SystemExit):
        main(["predict", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy"), "--precision", "fp8"])
