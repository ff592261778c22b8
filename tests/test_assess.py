"""``assess`` and ``evaluate`` are one scoring path: a study scored by ``assess`` gets the numbers the
pipeline's ``evaluate`` gives the same study prepared and degraded as a test split."""

import nibabel as nib
import numpy as np
import pytest

from cardiac_sr.assess import assess
from cardiac_sr.degrade import degrade
from cardiac_sr.evaluate import evaluate_method
from cardiac_sr.models import build_generator
from cardiac_sr.params import Degrade, Phantom, Prepare
from cardiac_sr.phantom import PhantomGenerator
from cardiac_sr.prepare import prepare

from conftest import TINY_DEGRADE, TINY_PREPARE


def test_assess_scores_a_study_as_evaluate_scores_it_in_the_test_split(tmp_path):
    studies = tmp_path / "studies"
    studies.mkdir()
    gen = PhantomGenerator(Phantom(slices=2, phases=3, size=64, spacing_mm=2.8), seed=5)
    for i in range(2):  # (x, y, slices, phases) in arbitrary scanner units
        vol = np.transpose(gen.study(i).image, (2, 3, 0, 1)) * 700.0
        nib.save(nib.Nifti1Image(vol.astype(np.float32), np.diag([2.8, 2.8, 10.0, 1.0])), studies / f"p{i}_sa.nii.gz")
    prep = Prepare.of(dict(TINY_PREPARE, source="nifti", path=str(studies), hr_size=64,
                           split={"train": ["p0"], "test": ["p1"]}), "prepare")
    prepare(prep, 4, tmp_path / "prepared")
    degrade(Degrade.of(TINY_DEGRADE, "degrade"), tmp_path / "prepared", tmp_path / "degraded")
    model = build_generator("NN", filters=8, res_blocks=1)  # no card: the defaults, 99.5th percentile and blur sigma 1
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0, 0.05, w.shape).astype(np.float32) for w in model.get_weights()])
    (tmp_path / "models").mkdir()
    model.save(tmp_path / "models" / "m.keras")

    ours = assess(studies / "p1_sa.nii.gz", tmp_path / "models" / "m.keras", progress=False)["overall"]
    kw = {"scale": 4, "perceptual_weights": "hed", "external_dir": None}
    pipeline = evaluate_method("m", tmp_path / "prepared", tmp_path / "degraded", tmp_path / "models",
                               tmp_path / "metrics", **kw)
    bicubic = evaluate_method("bicubic", tmp_path / "prepared", tmp_path / "degraded", out_dir=tmp_path / "metrics",
                              **kw)
    assert ours["images"] == pipeline["slices"] == 6
    for key in ("psnr", "ssim", "tpsnr"):  # the same images, degradation, scores and phase pairing
        assert ours[f"model_{key}"] == pytest.approx(pipeline[key]["mean"], abs=1e-6)
        assert ours[f"bicubic_{key}"] == pytest.approx(bicubic[key]["mean"], abs=1e-6)
    assert ours["model_psnr"] != pytest.approx(ours["bicubic_psnr"], abs=1e-3)
