import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]

def _find_sunnybrook() -> Path:
    """The real test studies: $CARDIAC_SR_SUNNYBROOK, else ../shared next to the repo, else /work/shared."""
    candidates = [os.environ.get("CARDIAC_SR_SUNNYBROOK", ""), ROOT.parent / "shared" / "data" / "sunnybrook",
                  Path("/work/shared/data/sunnybrook")]
    for c in candidates:
        if c and Path(c).is_dir():
            return Path(c)
    return Path(candidates[1])


SUNNYBROOK = _find_sunnybrook()


@pytest.fixture(scope="session")
def sunnybrook() -> Path:
    """The real studies; a test that needs them skips (with the reason) where they are absent, except
    under CI=true, where their absence is an error: CI must run every test."""
    if not SUNNYBROOK.is_dir():
        message = f"real test data missing: {SUNNYBROOK} (the project's ../shared, or $CARDIAC_SR_SUNNYBROOK)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return SUNNYBROOK


@pytest.fixture(scope="session")
def sunnybrook_studies(sunnybrook):
    from cardiac_sr.dicom import read_dicom

    return {s.patient_id: s for s in read_dicom(sunnybrook)}


@pytest.fixture(scope="session")
def small_phantom():
    from cardiac_sr.params import Phantom
    from cardiac_sr.phantom import PhantomGenerator

    cfg = Phantom(slices=3, phases=6)
    return PhantomGenerator(cfg, seed=11).study(0, labels=True)


TINY_PREPARE = {
    "source": "phantom",
    "phantom": {"patients": 5, "slices": 2, "phases": 2, "size": 128, "spacing_mm": 2.8,
                "slice_thickness_mm": 10.0, "snr": 40.0},
    "seed": 3,
    "split": {"train": 0.6, "val": 0.2, "test": 0.2},
    "hr_size": 128,
    "percentile": 99.5,
    "workers": 1,
}
TINY_DEGRADE = {"method": "blur_bicubic", "scale": 4, "blur_sigma": 1.0, "window": "none",
                "noise_sigma": 0.0, "seed": 1}
TINY_TRAIN = {
    "optimizer": "adam", "learning_rate": 0.001, "batch_size": 4, "patch_size": 32, "epochs": 2,
    "steps_per_epoch": 3, "val_slices": 2, "val_batches": 1, "seed": 5, "strategy": "default",
    "mixed_precision": False, "jit_compile": False, "filters": 8, "res_blocks": 1, "head_kernel": 9,
    "kernel": 3, "up_kernel": 3, "output_kernel": 9, "batch_norm": False, "global_skip": True,
    "perceptual": {"layer": "block2_conv2", "weights": "hed", "pixel_weight": 0.0},
}


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A tiny prepared + degraded phantom dataset: (prepared_dir, degraded_dir)."""
    from cardiac_sr.degrade import degrade
    from cardiac_sr.params import Degrade, Prepare
    from cardiac_sr.prepare import prepare

    root = tmp_path_factory.mktemp("tiny")
    prepare(Prepare.of(TINY_PREPARE, "prepare"), 4, root / "prepared")
    degrade(Degrade.of(TINY_DEGRADE, "degrade"), root / "prepared", root / "degraded")
    return root / "prepared", root / "degraded"


def tiny_run(out, name: str):
    """A training run's outputs laid out flat under ``out`` (the tests' layout): out/<name>.keras,
    out/dvclive/<name>/, out/summary.json, out/scratch/<name>/; a train.init model lives in out/init/."""
    from cardiac_sr.train import RunDir

    out = Path(out)
    return RunDir(out, out / f"{name}.keras", out / "dvclive" / name, out / "summary.json", out / "scratch" / name)


def train_tiny(name: str, params: dict, prepared, degraded, out, model=None) -> dict:
    """``train_model`` as the train stage calls it, from a params mapping typed once; outputs in
    :func:`tiny_run` ``(out, name)``, the model at ``model`` if given."""
    import dataclasses

    from cardiac_sr.card import Card
    from cardiac_sr.params import Params
    from cardiac_sr.train import train_model

    p = Params.of(params)
    run = tiny_run(out, name)
    if model is not None:
        run = dataclasses.replace(run, model=Path(model))
    return train_model(name, p.train_for(name), Card.for_training(name, p.degrade, p.prepare), prepared, degraded,
                       run)


@pytest.fixture
def tiny_params():
    import copy

    return {"degrade": dict(TINY_DEGRADE), "train": copy.deepcopy(TINY_TRAIN), "models": {}}
