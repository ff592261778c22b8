"""Evaluation: metric conventions, ROI, checkerboard score, the stage outputs, table, select, compare."""

import json

import numpy as np
import pytest
from scipy import ndimage
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from cardiac_sr.cli import main
from cardiac_sr.errors import CardiacSRError
from cardiac_sr.evaluate import bootstrap_ci, centre_box, checkerboard_score, evaluate_method, roi_box
from cardiac_sr.metrics import psnr, ssim
from cardiac_sr.predict import detail_agreement, detail_sums
from cardiac_sr.models import build_generator
from cardiac_sr.report import compare, select_model, table_rows, write_table


@pytest.fixture(scope="module")
def pair():
    rng = np.random.default_rng(0)
    a = ndimage.gaussian_filter(rng.random((64, 64)), 2)
    a = (a - a.min()) / np.ptp(a)
    b = np.clip(a + rng.normal(0, 0.05, a.shape), 0, 1)
    return a, b


def test_psnr_ssim_equal_scikit_image(pair):
    a, b = pair
    assert psnr(a, b) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=1.0))
    assert ssim(a, b) == pytest.approx(structural_similarity(
        a, b, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False))
    assert psnr(a, a) == float("inf") and ssim(a, a) == pytest.approx(1.0)
    # predictions are clipped to [0, 1] before scoring
    assert psnr(a, b + 5 * (b > 0.99)) == pytest.approx(psnr(a, np.clip(b + 5 * (b > 0.99), 0, 1)))


def test_checkerboard_score_sees_a_period_2_pattern(pair):
    a, _ = pair
    smooth = ndimage.gaussian_filter(a, 0.7)
    pattern = 0.03 * ((np.indices(a.shape).sum(0) % 2) * 2 - 1)
    assert checkerboard_score(smooth + pattern, a) > checkerboard_score(smooth, a) + 10
    period4 = 0.03 * np.cos(np.pi / 2 * np.arange(64))[None, :]
    assert checkerboard_score(smooth + period4, a) > checkerboard_score(smooth, a) + 10
    assert checkerboard_score(a, a) == pytest.approx(-120, abs=1)


def test_roi_boxes():
    m = np.zeros((100, 100), bool)
    m[40:50, 45:60] = True
    r, c = roi_box(m, margin=8, min_size=10)
    assert (r.start, r.stop, c.start, c.stop) == (32, 58, 37, 68)
    r, c = roi_box(np.zeros((100, 100)))
    assert (r, c) == centre_box((100, 100)) == (slice(25, 75), slice(25, 75))


def test_bootstrap_over_patients():
    v = np.array([1.0, 1.0, 3.0, 3.0])
    lo, hi = bootstrap_ci(v, np.array(["a", "a", "b", "b"]))
    assert 1.0 <= lo <= 2.0 <= hi <= 3.0
    assert bootstrap_ci(v, np.array(["a"] * 4)) == (2.0, 2.0)


@pytest.fixture(scope="module")
def evaluated(tiny_data, tmp_path_factory):
    prepared, degraded = tiny_data
    root = tmp_path_factory.mktemp("eval")
    models = root / "models"
    models.mkdir()
    for name in ("perceptual-TS", "perceptual-NN", "mse-TS", "mse-NN"):
        build_generator(name.split("-")[1], filters=8, res_blocks=1).save(models / f"{name}.keras")
    out = root / "metrics"
    results = {m: evaluate_method(m, prepared, degraded, models, out)
               for m in ("bicubic", "nearest", "zerofill", "perceptual-TS", "perceptual-NN", "mse-TS", "mse-NN")}
    return root, results


def test_evaluate_outputs(evaluated):
    root, results = evaluated
    bic = results["bicubic"]
    # an untrained model (zero residual) scores exactly the bicubic baseline
    assert results["mse-TS"]["psnr"]["mean"] == pytest.approx(bic["psnr"]["mean"], abs=1e-3)
    assert results["nearest"]["psnr"]["mean"] < bic["psnr"]["mean"]
    for key in ("psnr", "ssim", "roi_psnr", "roi_ssim", "perceptual", "checkerboard"):
        lo, hi = bic[key]["ci95"]
        assert lo <= bic[key]["mean"] <= hi
    saved = json.loads((root / "metrics" / "models" / "bicubic.json").read_text())
    assert saved["slices"] == 4 and saved["roi_fallback_slices"] < 4
    lines = (root / "metrics" / "per_slice" / "mse-NN.csv").read_text().splitlines()
    assert lines[0].startswith("split,index,patient,slice,phase,psnr,ssim,roi_psnr") and len(lines) == 5
    assert results["mse-NN"]["inference_ms_per_slice"] > 0


def test_table_select_compare(evaluated, capsys):
    root, _ = evaluated
    metrics, models = root / "metrics", root / "models"
    params = {"degrade": {"method": "blur_bicubic", "scale": 4}, "train": {}, "prepare": {"source": "phantom"}}
    rows = write_table(params, metrics)
    assert [r["method"] for r in rows] == ["bicubic", "nearest", "perceptual-TS", "perceptual-NN", "mse-TS", "mse-NN"]
    md = (metrics / "table.md").read_text()
    assert "| bicubic | baseline |" in md and "Model 3" in md
    assert len((metrics / "table.csv").read_text().splitlines()) == 7
    params["degrade"]["method"] = "kspace"
    assert "zerofill" in [r["method"] for r in table_rows(["bicubic", "zerofill"], metrics)]

    sel = select_model({"loss": "mse", "upsampling": "NN"}, models, metrics)
    assert sel["model"] == "mse-NN" and (models / "selected.keras").is_file()
    assert json.loads((metrics / "selected.json").read_text())["model"] == "mse-NN"
    with pytest.raises(CardiacSRError, match="valid values: perceptual, mse.*dvc checkout"):
        select_model({"loss": "bogus", "upsampling": "NN"}, models, metrics)

    text = compare("bicubic", "nearest", metrics)
    assert text.splitlines()[0] == "| Path | Metric | bicubic | nearest | Change |"
    assert main(["compare", "bicubic", "mse-TS", "--metrics", str(metrics)]) == 0
    assert "| metrics/models | psnr |" in capsys.readouterr().out
    assert main(["compare", "bicubic", "nope", "--metrics", str(metrics)]) == 2
    assert "no metrics for 'nope'" in capsys.readouterr().err


def test_detail_agreement_measures_added_detail():
    rng = np.random.default_rng(0)
    hr = rng.random((32, 32))
    bic = np.clip(hr + 0.1 * rng.standard_normal((32, 32)), 0, 1)
    half = bic + 0.5 * (hr - bic)  # adds half the missing detail, all of it right
    corr, scale = detail_agreement(detail_sums(hr, bic, half))
    assert corr == pytest.approx(1.0) and scale == pytest.approx(2.0)
    corr, scale = detail_agreement(detail_sums(hr, bic, bic + 1.0 * (bic - hr)))  # the wrong way
    assert corr < -0.9 and scale < 0
    assert detail_agreement(detail_sums(hr, bic, bic)) == (None, None)  # adds nothing
    total = detail_sums(hr, bic, half) + detail_sums(hr[::-1], bic[::-1], half[::-1])
    assert detail_agreement(total)[1] == pytest.approx(2.0)  # sums add up over images
