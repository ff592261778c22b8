"""Evaluation: metric conventions, ROI, checkerboard score, the stage outputs, table, select, compare."""

import json

import numpy as np
import pytest
from scipy import ndimage
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from cardiac_sr.cli import main
from cardiac_sr.errors import CardiacSRError
from cardiac_sr.evaluate import evaluate_method
from cardiac_sr.scoring import bootstrap_ci
from cardiac_sr.metrics import centre_box, checkerboard_score, detail_agreement, detail_sums, psnr, roi_box, ssim
from cardiac_sr.models import build_generator
from cardiac_sr.params import Params
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
    # two patients with means 1 and 3: a resample of patients averages 1, 2 or 3 (1/4, 1/2, 1/4), so the
    # 2.5th and 97.5th percentiles are the extremes; resampling slices instead would give about 1.3 and 2.7
    assert bootstrap_ci(v, np.array(["a", "a", "b", "b"])) == (1.0, 3.0)
    # four patients 0, 1, 2, 3: the interval is the percentiles of means of 4 draws with replacement
    lo, hi = bootstrap_ci(np.arange(4.0), np.array(list("abcd")))
    assert lo == pytest.approx(0.5, abs=0.26) and hi == pytest.approx(2.5, abs=0.26)
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
    results = {m: evaluate_method(m, prepared, degraded, models, out, scale=4)
               for m in ("bicubic", "nearest", "zerofill", "perceptual-TS", "perceptual-NN", "mse-TS", "mse-NN")}
    return root, results


def test_evaluate_outputs(evaluated):
    root, results = evaluated
    bic = results["bicubic"]
    # an untrained model (zero residual) scores exactly the bicubic baseline
    assert results["mse-TS"]["psnr"]["mean"] == pytest.approx(bic["psnr"]["mean"], abs=1e-3)
    assert results["nearest"]["psnr"]["mean"] < bic["psnr"]["mean"]
    # the summary is the per-slice CSV's: mean over slices, bootstrap interval over its patients
    import csv

    with open(root / "metrics" / "per_slice" / "bicubic.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "test"]
    for key in ("psnr", "ssim", "roi_psnr", "roi_ssim", "perceptual", "checkerboard", "tpsnr", "roi_tpsnr"):
        values = np.array([float(r[key]) for r in rows])
        finite = np.isfinite(values)
        assert bic[key]["mean"] == pytest.approx(values[finite].mean(), rel=1e-6)
        groups = np.array([r["patient"] for r in rows])[finite]
        assert bic[key]["ci95"] == pytest.approx(list(bootstrap_ci(values[finite], groups)), rel=1e-6)
    saved = json.loads((root / "metrics" / "models" / "bicubic.json").read_text())
    assert saved["slices"] == 4 and saved["roi_fallback_slices"] < 4
    lines = (root / "metrics" / "per_slice" / "mse-NN.csv").read_text().splitlines()
    assert lines[0].startswith("split,index,patient,slice,phase,psnr,ssim,roi_psnr") and len(lines) == 5
    assert results["mse-NN"]["inference_ms_per_slice"] > 0
    # timings sit beside the metrics, never in a file DVC compares as metrics
    assert "inference_ms_per_slice" not in saved and "inference_ms_per_slice" not in json.loads(
        (root / "metrics" / "models" / "mse-NN.json").read_text())
    assert json.loads((root / "metrics" / "models" / "mse-NN.timings.json").read_text())["inference_ms_per_slice"] > 0


def test_evaluate_scores_the_self_ensemble_under_its_own_name(evaluated, tiny_data):
    """``ensemble=True`` scores the mean of the model's outputs over the 8 flips/rotations, under ``name``."""
    import csv

    from cardiac_sr.scoring import SplitData
    from cardiac_sr.inference import self_ensemble
    from cardiac_sr.metrics import image_scores
    from cardiac_sr.models import load_generator

    root, results = evaluated
    prepared, degraded = tiny_data
    models, out = root / "ensemble-models", root / "ensemble-metrics"
    models.mkdir()
    model = build_generator("NN", filters=8, res_blocks=1)  # random weights: not flip/rotation-equivariant
    rng = np.random.default_rng(3)
    model.set_weights([rng.normal(0, 0.1, w.shape).astype(np.float32) for w in model.get_weights()])
    model.save(models / "m.keras")
    plain = evaluate_method("m", prepared, degraded, models, out, scale=4)
    ens = evaluate_method("m", prepared, degraded, models, out, scale=4, ensemble=True, name="m-self-ensemble")
    assert ens["method"] == "m-self-ensemble" and (out / "models" / "m-self-ensemble.json").is_file()
    assert json.loads((out / "models" / "m.json").read_text())["psnr"] == plain["psnr"]  # not overwritten
    assert ens["psnr"]["mean"] != pytest.approx(plain["psnr"]["mean"], abs=1e-3)
    data = SplitData.load(prepared, degraded, "test")
    mean = self_ensemble(load_generator(models / "m.keras"), np.asarray(data.lr[:]), 4)[1]
    with open(out / "per_slice" / "m-self-ensemble.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "test"]
    for k, r in enumerate(rows):
        assert float(r["psnr"]) == pytest.approx(image_scores(data.hr[k], mean[k])["psnr"], abs=1e-4)


def test_the_evaluate_stage_scores_models_as_their_self_ensemble_when_asked(evaluated, tiny_data, tmp_path,
                                                                             monkeypatch):
    """``evaluate.self_ensemble: true`` (the stage script, as `dvc repro` runs it): the models' JSON holds the
    8-fold self-ensemble's scores and says so, the baselines are scored in one pass, the table says which."""
    import argparse
    import runpy
    import sys

    from conftest import ROOT, TINY_DEGRADE, TINY_PREPARE, TINY_TRAIN

    root, results = evaluated
    prepared, degraded = tiny_data
    monkeypatch.syspath_prepend(str(ROOT / "stages"))
    stage = runpy.run_path(str(ROOT / "stages" / "evaluate.py"))
    out = tmp_path / "metrics"
    params = {"degrade": dict(TINY_DEGRADE), "train": dict(TINY_TRAIN), "prepare": dict(TINY_PREPARE),
              "evaluate": {"self_ensemble": True}}
    args = argparse.Namespace(method=["bicubic", "nearest", "mse-NN"], prepared=prepared, degraded=degraded,
                              external=tmp_path / "none", models=root / "models", metrics=out)
    stage["main"](Params.of(params), args)
    ens = evaluate_method("mse-NN", prepared, degraded, root / "models", tmp_path / "direct", scale=4, ensemble=True)
    got = json.loads((out / "models" / "mse-NN.json").read_text())
    assert got["self_ensemble"] is True and got["psnr"] == ens["psnr"]
    bic = json.loads((out / "models" / "bicubic.json").read_text())
    assert "self_ensemble" not in bic and bic["psnr"] == results["bicubic"]["psnr"]
    assert "self_ensemble" not in results["mse-NN"]  # off by default
    for name in ("perceptual-TS", "perceptual-NN", "mse-TS"):
        (out / "models" / f"{name}.json").write_text((out / "models" / "mse-NN.json").read_text())
    write_table(Params.of(params), out)
    assert "scored as their 8-fold self-ensemble" in (out / "table.md").read_text()
    write_table(Params.of({k: v for k, v in params.items() if k != "evaluate"}), out)
    assert "self-ensemble" not in (out / "table.md").read_text()
    sys.modules.pop("_common", None)


def test_table_select_compare(evaluated, capsys):
    root, _ = evaluated
    metrics, models = root / "metrics", root / "models"
    from conftest import TINY_DEGRADE, TINY_PREPARE, TINY_TRAIN

    params = {"degrade": dict(TINY_DEGRADE), "train": dict(TINY_TRAIN), "prepare": dict(TINY_PREPARE)}
    rows = write_table(Params.of(params), metrics)
    assert [r["method"] for r in rows] == ["bicubic", "nearest", "perceptual-TS", "perceptual-NN", "mse-TS", "mse-NN"]
    md = (metrics / "table.md").read_text()
    assert "| bicubic | baseline |" in md and "Model 3" in md
    assert len((metrics / "table.csv").read_text().splitlines()) == 7
    params["degrade"]["method"] = "kspace"
    assert "zerofill" in [r["method"] for r in table_rows(["bicubic", "zerofill"], metrics)]

    sel = select_model("mse", "NN", models, metrics)
    assert sel["model"] == "mse-NN" and (models / "selected.keras").is_file()
    assert json.loads((metrics / "selected.json").read_text())["model"] == "mse-NN"
    with pytest.raises(CardiacSRError, match="valid values: perceptual, mse.*dvc checkout"):
        select_model("bogus", "NN", models, metrics)

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


def _cine(t=8, n=48, seed=0):
    """A beating disc: T frames of an n x n slice, radius changing smoothly over the cycle."""
    yy, xx = np.mgrid[:n, :n] - n / 2
    radii = 10 + 4 * np.sin(2 * np.pi * np.arange(t) / t)
    return np.stack([ndimage.gaussian_filter((np.hypot(yy, xx) < r).astype(float), 1.0) * 0.8 + 0.1 for r in radii])


def test_temporal_psnr_ranks_a_flickering_method_below_a_steady_one():
    from cardiac_sr.metrics import temporal_psnr

    hr = _cine()
    rng = np.random.default_rng(1)
    steady = hr + 0.06 * ndimage.gaussian_filter(rng.standard_normal(hr.shape[1:]), 1)[None]  # same error each phase
    flicker = hr + 0.03 * ndimage.gaussian_filter(rng.standard_normal(hr.shape), (0, 1, 1))   # new detail each phase

    def mean_psnr(sr):
        return np.mean([psnr(h, s) for h, s in zip(hr, sr)])

    def mean_tpsnr(sr):
        return np.mean([temporal_psnr(hr[k], hr[k + 1], sr[k], sr[k + 1]) for k in range(len(hr) - 1)])

    assert mean_psnr(flicker) > mean_psnr(steady)  # per-frame PSNR prefers the flickering method ...
    assert mean_tpsnr(steady) > mean_tpsnr(flicker) + 6  # ... the temporal score sees the flicker
    assert temporal_psnr(hr[0], hr[1], hr[0] + 0.01, hr[1] + 0.01) > 200  # a constant offset cancels (round-off)


def test_temporal_scores_pair_each_phase_with_the_next_of_the_same_slice():
    from cardiac_sr.scoring import next_phase, temporal_scores

    manifest = [{"patient": p, "slice": s, "phase": t} for p in ("a", "b") for s in (0, 1) for t in (0, 1, 2)]
    manifest = manifest[::-1]  # the order of the rows does not matter
    following = next_phase(manifest)
    for i, j in enumerate(following):
        r = manifest[i]
        if r["phase"] == 2:
            assert j == -1
        else:
            assert (manifest[j]["patient"], manifest[j]["slice"], manifest[j]["phase"]) == \
                   (r["patient"], r["slice"], r["phase"] + 1)
    hr = _cine(t=3)
    roi = np.zeros(hr.shape, bool)
    roi[:, 20:28, 20:28] = True
    full, box = temporal_scores(hr, hr + 0.02 * np.arange(3)[:, None, None] ** 2, roi, 0, 1)
    assert full == pytest.approx(10 * np.log10(1 / 0.02**2)) and box == pytest.approx(full)
    assert all(np.isnan(temporal_scores(hr, hr, roi, 2, -1)))


def test_scoring_in_chunks_equals_scoring_the_whole_split(tiny_data):
    """evaluate reads a split a chunk at a time; a slice whose next phase lies in the next chunk still gets
    its temporal PSNR, and every score equals the one-chunk result."""
    from cardiac_sr.scoring import SplitData, score_split, super_resolve_baseline

    data = SplitData.load(*tiny_data, "test")
    assert len(data) == 4  # one test patient: 2 slices x 2 phases

    def run(lr):
        return super_resolve_baseline("bicubic", lr, 4)

    whole, _ = score_split("bicubic", data, run, 4, "hed", chunk=256)
    assert sum(np.isfinite(r["tpsnr"]) for r in whole) == 2  # phase 0 -> 1 of each slice
    for chunk in (1, 3):
        rows, ms = score_split("bicubic", data, run, 4, "hed", chunk=chunk)
        assert ms >= 0
        for a, b in zip(rows, whole, strict=True):
            assert a.keys() == b.keys()
            np.testing.assert_array_equal([a[k] for k in a if k not in ("split", "patient")],
                                          [b[k] for k in b if k not in ("split", "patient")])


def test_cine_gif_has_one_frame_per_phase_and_the_layout_size():
    import tempfile
    from pathlib import Path

    from PIL import Image

    from cardiac_sr.figures import write_cine_gif

    hr = _cine(t=7, n=40)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_cine_gif([("HR", hr), ("model", np.clip(hr + 0.05, 0, 1))], Path(tmp) / "loop.gif", zoom=2)
        with Image.open(path) as gif:
            assert gif.n_frames == 7 and gif.is_animated
            assert gif.size == (2 * 80 + 4, 14 + 80)  # two columns of 40 px x2 with a 4 px gap, a 14 px title
            gif.seek(3)
            frame = np.asarray(gif.convert("L"), float)
        expected = np.kron(hr[3], np.ones((2, 2))) * 255
        assert np.abs(frame[14:, :80] - expected).max() <= 1.0  # frame 4 shows phase 4, grey levels exact
        with pytest.raises(ValueError, match="one shape"):
            write_cine_gif([("HR", hr), ("short", hr[:3])], Path(tmp) / "bad.gif")
