"""ACDC as a first-class source: the protocol's profile (train ACDC, test held-out ACDC patients and the
Sunnybrook studies) and an ACDC-shaped tree through prepare, degrade, train and evaluate."""

import shlex

import yaml

from cardiac_sr.degrade import degrade
from cardiac_sr.evaluate import evaluate_method
from cardiac_sr.external import build_external
from cardiac_sr.names import MODEL_NAMES
from cardiac_sr.params import Degrade, External, Params, Prepare
from cardiac_sr.prepare import prepare, split_patients

from conftest import ROOT, TINY_DEGRADE, TINY_PREPARE, TINY_TRAIN, train_tiny
from test_nifti import acdc_tree


def profile_params(name: str, tmp_path) -> dict:
    """params.yaml with the ``-S`` overrides of ``profiles/NAME.args`` applied by DVC's own code (Hydra's
    override grammar, as ``dvc exp run -S`` applies them)."""
    from dvc.utils.hydra import apply_overrides

    args = shlex.split((ROOT / "profiles" / f"{name}.args").read_text())
    assert args[::2] == ["-S"] * (len(args) // 2)
    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text())
    apply_overrides(path, args[1::2])
    return yaml.safe_load(path.read_text())


def test_the_acdc_profile_trains_on_80_patients_and_tests_on_10_held_out_and_on_sunnybrook(tmp_path):
    params = profile_params("acdc", tmp_path)
    params = Params.of(params)
    prep = params.prepare
    assert (prep.source, prep.path) == ("nifti", "../shared/data/acdc-train")
    ids = [f"patient{i:03d}" for i in range(1, 101)]  # ACDC-train's patients
    assignment = split_patients(ids, prep.split, prep.seed)
    by_split = {s: sorted(p for p, split in assignment.items() if split == s) for s in ("train", "val", "test")}
    assert [len(by_split[s]) for s in ("train", "val", "test")] == [80, 10, 10]
    assert len(assignment) == 100 and set(assignment) == set(ids)  # every patient once, in one split
    external = params.evaluate.external
    assert external.source == "dicom" and external.path == "../shared/data/sunnybrook"
    # the protocol as measured (docs/real_data_acdc.md): every model 15 epochs, whatever params.yaml's MSE models train
    assert {m: params.train_for(m).epochs for m in MODEL_NAMES} == dict.fromkeys(MODEL_NAMES, 15)


def test_an_acdc_tree_goes_through_the_pipeline_with_an_external_set(tmp_path):
    """Odd matrix sizes (38 x 46) cropped/padded to hr_size, ED/ES frames as phases, labels as the ROI."""
    acdc_tree(tmp_path / "acdc", patients=tuple(f"patient00{i}" for i in range(1, 6)))
    acdc_tree(tmp_path / "other", patients=("patient101",))
    prep = dict(TINY_PREPARE, source="nifti", path=str(tmp_path / "acdc"), hr_size=32,
                split={"train": 0.6, "val": 0.2, "test": 0.2})
    prep.pop("phantom")
    info = prepare(Prepare.of(prep, "prepare"), 4, tmp_path / "prepared")
    assert info["splits"] == {"train": 18, "val": 6, "test": 6}  # 3 / 1 / 1 patients x 3 slices x 2 frames
    degrade(Degrade.of(TINY_DEGRADE, "degrade"), tmp_path / "prepared", tmp_path / "degraded")
    build_external(External.of({"source": "nifti", "path": str(tmp_path / "other")}, "evaluate.external"), Prepare.of(prep, "prepare"), Degrade.of(TINY_DEGRADE, "degrade"), tmp_path / "prepared",
                   tmp_path / "external")
    params = {"prepare": prep, "degrade": dict(TINY_DEGRADE), "train": dict(TINY_TRAIN, epochs=1), "models": {}}
    train_tiny("mse-NN", params, tmp_path / "prepared", tmp_path / "degraded", tmp_path / "m")
    res = evaluate_method("mse-NN", tmp_path / "prepared", tmp_path / "degraded", tmp_path / "m", tmp_path / "metrics",
                          scale=4, external_dir=tmp_path / "external")
    assert res["slices"] == 6 and res["external"]["slices"] == 6
    assert res["roi_psnr"]["mean"] is not None and res["external"]["roi_psnr"]["mean"] is not None  # labels 1-3
