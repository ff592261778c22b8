"""Real studies as a first-class source: explicit splits, an external test set, fine-tuning (train.init)."""

import json

import nibabel as nib
import numpy as np
import pytest

from cardiac_sr.degrade import degrade
from cardiac_sr.errors import CardiacSRError
from cardiac_sr.evaluate import evaluate_method
from cardiac_sr.external import build_external
from cardiac_sr.models import build_generator, generator_kwargs, load_generator
from cardiac_sr.params import Degrade, External, Phantom, Prepare, Train
from cardiac_sr.phantom import PhantomGenerator
from cardiac_sr.dataset import load_split, read_manifest, write_array
from cardiac_sr.prepare import prepare, split_patients
from cardiac_sr.report import format_markdown, table_rows

from conftest import TINY_DEGRADE, TINY_PREPARE, TINY_TRAIN

IDS = ["A", "B", "C", "D"]


# ----------------------------------------------------------------------------- explicit splits

def test_explicit_split_lists_patients_and_leaves_out_the_rest():
    out = split_patients(IDS, {"train": ["A", "C"], "val": ["B"], "test": ["D"]}, seed=0)
    assert out == {"A": "train", "C": "train", "B": "val", "D": "test"}
    out = split_patients(IDS, {"train": ["A"], "test": ["D"]}, seed=0)  # val optional, B and C left out
    assert out == {"A": "train", "D": "test"}


def test_explicit_split_errors():
    with pytest.raises(CardiacSRError, match="'B' is in both 'train' and 'test'"):
        split_patients(IDS, {"train": ["A", "B"], "test": ["B"]}, 0)
    with pytest.raises(CardiacSRError, match="prepare.split.test: patient 'Z' is not in the data"):
        split_patients(IDS, {"train": ["A"], "test": ["Z"]}, 0)
    with pytest.raises(CardiacSRError, match="must be a list"):
        split_patients(IDS, {"train": ["A"], "val": 0.2, "test": ["B"]}, 0)
    with pytest.raises(CardiacSRError, match="unknown key 'prepare.split.tset'"):
        split_patients(IDS, {"train": ["A"], "tset": ["B"]}, 0)
    with pytest.raises(CardiacSRError, match="the train split is empty"):
        split_patients(IDS, {"train": [], "test": ["B"]}, 0)


def test_one_and_two_patient_datasets():
    # two patients: one trains, one tests, no val (training then reports no validation metrics)
    assert split_patients(["A", "B"], {"train": ["A"], "test": ["B"]}, 0) == {"A": "train", "B": "test"}
    # fractions cannot give two patients a test split: a clear message instead of a crash in training
    with pytest.raises(CardiacSRError, match="the test split is empty.*name patients"):
        split_patients(["A", "B"], {"train": 0.6, "val": 0.2, "test": 0.2}, 0)
    # one patient: trains, and is tested on an external set only
    with pytest.raises(CardiacSRError, match="the test split is empty"):
        split_patients(["A"], {"train": ["A"]}, 0)
    assert split_patients(["A"], {"train": ["A"]}, 0, allow_empty_test=True) == {"A": "train"}


# ----------------------------------------------------------------------------- external test set

@pytest.fixture(scope="module")
def external_nifti(tmp_path_factory):
    """Two small 'real' studies as NIfTI files (x, y, slices, phases), other patients than the phantom's."""
    root = tmp_path_factory.mktemp("external")
    gen = PhantomGenerator(Phantom(slices=1, phases=2, size=128, spacing_mm=2.8), seed=99)
    for i in range(2):
        vol = np.transpose(gen.study(i).image, (2, 3, 0, 1)) * 1000.0
        nib.save(nib.Nifti1Image(vol.astype(np.float32), np.diag([2.8, 2.8, 10.0, 1.0])), root / f"ext{i}_sa.nii.gz")
    return root


@pytest.fixture(scope="module")
def with_external(tmp_path_factory, external_nifti):
    root = tmp_path_factory.mktemp("withext")
    prep = dict(TINY_PREPARE, split={"train": ["phantom000", "phantom001", "phantom002"], "val": ["phantom003"],
                                     "test": ["phantom004"]})
    prepare(Prepare.of(prep, "prepare"), 4, root / "prepared")
    degrade(Degrade.of(TINY_DEGRADE, "degrade"), root / "prepared", root / "degraded")
    info = build_external(External.of({"source": "nifti", "path": str(external_nifti)}, "evaluate.external"), Prepare.of(prep, "prepare"), Degrade.of(TINY_DEGRADE, "degrade"), root / "prepared",
                          root / "external")
    return root, info


def test_external_set_is_prepared_and_degraded_like_the_test_split(with_external):
    root, info = with_external
    assert info["splits"] == {"external": 4} and info["patients"]["external"] == ["ext0", "ext1"]
    ext = np.asarray(load_split(root / "external", "external", "hr"))
    assert ext.shape == (4, 128, 128) and ext.dtype == np.float32 and 0 <= ext.min() and ext.max() <= 1
    rows = read_manifest(root / "external")
    assert len(rows) == 4 and {r["split"] for r in rows} == {"external"}
    assert float(rows[0]["intensity_scale"]) > 100  # per-volume normalisation of the raw units
    lr = np.asarray(load_split(root / "external", "external", "lr"))
    assert lr.shape == (4, 32, 32)
    # the same functions as the test split: degrading the external HR again gives the same LR
    from cardiac_sr.degradation import degrade_image
    np.testing.assert_allclose(np.clip(degrade_image(ext[1], Degrade.of(TINY_DEGRADE, "degrade")), 0, 1), lr[1], atol=1e-6)
    # the prepared internal data are untouched by the external set (no re-training when it is switched on)
    assert sorted(p.name for p in (root / "prepared").glob("*_*")) == sorted(
        f"{s}_{k}" for s in ("train", "val", "test") for k in ("hr", "roi"))


def test_external_off_writes_an_empty_set(with_external, tmp_path):
    root, _ = with_external
    info = build_external(None, Prepare.of(TINY_PREPARE, "prepare"), Degrade.of(TINY_DEGRADE, "degrade"), root / "prepared", tmp_path / "ext")
    assert info["external"] is None and info["splits"] == {"external": 0}
    assert load_split(tmp_path / "ext", "external", "lr").shape == (0, 32, 32)
    res = evaluate_method("bicubic", root / "prepared", root / "degraded", out_dir=tmp_path / "m", scale=4,
                          external_dir=tmp_path / "ext")
    assert "external" not in res


def test_external_errors(tmp_path, with_external, external_nifti):
    root, _ = with_external
    with pytest.raises(CardiacSRError, match="evaluate.external.source"):
        build_external(External.of({"source": "phantom", "path": "x"}, "evaluate.external"), Prepare.of(TINY_PREPARE, "prepare"), Degrade.of(TINY_DEGRADE, "degrade"), root / "prepared", tmp_path / "e")
    with pytest.raises(CardiacSRError, match="evaluate.external.path"):
        build_external(External.of({"source": "nifti"}, "evaluate.external"), Prepare.of(TINY_PREPARE, "prepare"), Degrade.of(TINY_DEGRADE, "degrade"), root / "prepared", tmp_path / "e")
    # the same study as training data and as external test set is refused
    prep = dict(TINY_PREPARE, source="nifti", path=str(external_nifti), split={"train": ["ext0"], "test": ["ext1"]})
    prepare(Prepare.of(prep, "prepare"), 4, tmp_path / "p")
    with pytest.raises(CardiacSRError, match="'ext0' is also in the prepared data"):
        build_external(External.of({"source": "nifti", "path": str(external_nifti)}, "evaluate.external"), Prepare.of(prep, "prepare"), Degrade.of(TINY_DEGRADE, "degrade"), tmp_path / "p",
                       tmp_path / "e")
    assert not (tmp_path / "e").exists()


def test_every_method_is_scored_on_both_and_the_table_shows_them_side_by_side(with_external, tmp_path):
    root, _ = with_external
    out = tmp_path / "metrics"
    kw = {"out_dir": out, "external_dir": root / "external", "scale": 4}
    res = evaluate_method("bicubic", root / "prepared", root / "degraded", **kw)
    evaluate_method("nearest", root / "prepared", root / "degraded", **kw)
    assert res["slices"] == 4 and res["external"]["slices"] == 4 and res["external"]["patients"] == 2
    assert res["psnr"]["mean"] != res["external"]["psnr"]["mean"]
    csv_rows = (out / "per_slice" / "bicubic.csv").read_text().splitlines()
    assert csv_rows[0].startswith("split,") and sum(r.startswith("external,") for r in csv_rows) == 4
    rows = table_rows(["bicubic", "nearest"], out)
    assert rows[1]["ext_psnr_gain_db"] == pytest.approx(
        json.loads((out / "models" / "nearest.json").read_text())["external"]["psnr"]["mean"] - res["external"]["psnr"]["mean"])
    md = format_markdown(rows)
    assert "ext. PSNR (dB)" in md and "ext. PSNR gain vs bicubic (dB)" in md


def test_one_patient_trains_and_is_scored_on_the_external_set_only(tmp_path, external_nifti):
    prep = dict(TINY_PREPARE, phantom=dict(TINY_PREPARE["phantom"], patients=1), split={"train": ["phantom000"]})
    with pytest.raises(CardiacSRError, match="the test split is empty"):
        prepare(Prepare.of(prep, "prepare"), 4, tmp_path / "prepared")
    info = prepare(Prepare.of(prep, "prepare"), 4, tmp_path / "prepared", allow_empty_test=True)
    assert info["splits"] == {"train": 4, "val": 0, "test": 0}
    degrade(Degrade.of(TINY_DEGRADE, "degrade"), tmp_path / "prepared", tmp_path / "degraded")
    build_external(External.of({"source": "nifti", "path": str(external_nifti)}, "evaluate.external"), Prepare.of(prep, "prepare"), Degrade.of(TINY_DEGRADE, "degrade"), tmp_path / "prepared",
                   tmp_path / "external")
    res = evaluate_method("bicubic", tmp_path / "prepared", tmp_path / "degraded", out_dir=tmp_path / "m", scale=4,
                          external_dir=tmp_path / "external")
    assert res["slices"] == 0 and res["psnr"]["mean"] is None and res["external"]["slices"] == 4
    row = table_rows(["bicubic"], tmp_path / "m")[0]
    assert row["psnr_gain_db"] is None and "| - |" in format_markdown([row])


# ----------------------------------------------------------------------------- train.init

def _params(**train):
    return {"degrade": dict(TINY_DEGRADE), "train": {**TINY_TRAIN, "epochs": 1, "steps_per_epoch": 2, **train},
            "models": {}}


def _train(tmp_path, data, params, name="mse-NN", tag="run"):
    """Train with tmp_path as the run root (its init/ holds the train.init models) and outputs in tmp_path/tag."""
    import dataclasses

    from cardiac_sr.card import Card
    from cardiac_sr.params import Params
    from cardiac_sr.train import train_model

    from conftest import tiny_run

    p = Params.of(params)
    run = dataclasses.replace(tiny_run(tmp_path / tag, name), root=tmp_path)
    summary = train_model(name, p.train_for(name), Card.for_training(name, p.degrade, p.prepare), *data, run)
    return run.model, summary


def test_train_init_starts_from_the_given_model(tmp_path, tiny_data):
    (tmp_path / "init").mkdir()  # init/ is in the run root (the repository, for the stage), wherever the cwd is
    # an init model with non-trivial weights (the output conv is zero-initialised in a fresh model)
    cfg = dict(TINY_TRAIN)
    src = build_generator(**generator_kwargs(Train.of(cfg, "train"), "NN", 4), name="mse-NN")
    rng = np.random.default_rng(0)
    src.set_weights([rng.normal(0, 0.05, w.shape).astype(np.float32) for w in src.get_weights()])
    src.save(tmp_path / "init" / "mse-NN.keras")
    # learning rate 0: the published model is the init model's weights exactly (no step changed them)
    path, summary = _train(tmp_path, tiny_data, _params(init="init/{model}.keras", learning_rate=0.0))
    for a, b in zip(load_generator(path).get_weights(), src.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert summary["init"] == "init/mse-NN.keras"
    # and a real fine-tuning run moves away from it
    path, _ = _train(tmp_path, tiny_data, _params(init="init/{model}.keras"), tag="tuned")
    assert any(not np.array_equal(a, b) for a, b in zip(load_generator(path).get_weights(), src.get_weights(), strict=True))


def test_train_keep_init_publishes_the_weight_space_average_of_start_and_fine_tuned(tmp_path, tiny_data):
    (tmp_path / "init").mkdir()
    src = build_generator(**generator_kwargs(Train.of(TINY_TRAIN, "train"), "NN", 4), name="mse-NN")
    rng = np.random.default_rng(1)
    src.set_weights([rng.normal(0, 0.05, w.shape).astype(np.float32) for w in src.get_weights()])
    src.save(tmp_path / "init" / "mse-NN.keras")
    start = src.get_weights()
    tuned, summary = _train(tmp_path, tiny_data, _params(init="init/{model}.keras"), tag="tuned")
    assert summary["keep_init"] == 0.0
    tuned = load_generator(tuned).get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(tuned, start, strict=True))
    # the same training (same seed, deterministic) published with half the start's weights kept
    half, summary = _train(tmp_path, tiny_data, _params(init="init/{model}.keras", keep_init=0.5), tag="half")
    assert summary["keep_init"] == 0.5
    for h, a, b in zip(load_generator(half).get_weights(), start, tuned, strict=True):
        np.testing.assert_allclose(h, 0.5 * a + 0.5 * b, rtol=1e-6, atol=1e-7)
    # keep_init 1: the start itself, whatever the training did
    whole, _ = _train(tmp_path, tiny_data, _params(init="init/{model}.keras", keep_init=1.0), tag="whole")
    for a, b in zip(load_generator(whole).get_weights(), start, strict=True):
        np.testing.assert_array_equal(a, b)


def test_train_keep_init_needs_an_init_and_a_share_in_0_1(tmp_path, tiny_data):
    with pytest.raises(CardiacSRError, match="train.keep_init 0.5 needs train.init"):
        _train(tmp_path, tiny_data, _params(keep_init=0.5))
    with pytest.raises(CardiacSRError, match="keep_init"):
        Train.of({**TINY_TRAIN, "keep_init": 1.5}, "train")


def test_train_init_is_part_of_the_resume_fingerprint(tmp_path, tiny_data):
    from cardiac_sr.train import fingerprint, init_path

    (tmp_path / "init").mkdir()
    f = tmp_path / "init" / "m.keras"
    f.write_bytes(b"one")
    cfg = Train.of({**TINY_TRAIN, "init": "init/m.keras"}, "train")
    a = fingerprint(cfg.as_dict(), [init_path(cfg, "mse-NN", tmp_path)])
    f.write_bytes(b"two")
    assert fingerprint(cfg.as_dict(), [init_path(cfg, "mse-NN", tmp_path)]) != a


def test_train_init_errors(tmp_path, tiny_data):
    (tmp_path / "init").mkdir()
    build_generator(**generator_kwargs(Train.of(TINY_TRAIN, "train"), "TS", 4), name="mse-TS").save(tmp_path / "init" / "ts.keras")
    with pytest.raises(CardiacSRError, match="architecture does not match mse-NN"):
        _train(tmp_path, tiny_data, _params(init="init/ts.keras"))
    with pytest.raises(CardiacSRError, match="must be a file in init/"):
        _train(tmp_path, tiny_data, _params(init=str(tmp_path / "elsewhere.keras")))
    with pytest.raises(CardiacSRError, match="file not found"):
        _train(tmp_path, tiny_data, _params(init="init/missing.keras"))
    (tmp_path / "init" / "bad.keras").write_text("not a model")
    with pytest.raises(CardiacSRError, match="not a readable .keras model"):
        _train(tmp_path, tiny_data, _params(init="init/bad.keras"))


def test_training_without_val_data(tmp_path, tiny_data):
    import shutil

    prepared, degraded = tiny_data
    p2, d2 = tmp_path / "prepared", tmp_path / "degraded"
    shutil.copytree(prepared, p2)
    shutil.copytree(degraded, d2)
    for folder in (p2 / "val_hr", d2 / "val_lr"):
        shutil.rmtree(folder)
    write_array(p2 / "val_hr", np.zeros((0, 128, 128), np.float32))
    write_array(d2 / "val_lr", np.zeros((0, 32, 32), np.float32))
    path, summary = _train(tmp_path, (p2, d2), _params())
    assert path.is_file() and summary["val_bicubic_psnr"] is None
    assert "val_psnr" not in summary["final"] and "loss" in summary["final"]
