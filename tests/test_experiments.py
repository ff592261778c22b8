"""The experiment recipes (scripts/acdc_experiments.sh, scripts/real_experiments.sh) and their formatter
(scripts/exp_results.py): the -S overrides each `dvc exp run` gets, applied by DVC's own code, and the
table and figure made from `dvc exp show --json`."""

import json
import os
import runpy
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT

FAKE_DVC = """#!/usr/bin/env bash
printf '%s\\n' "$@" > "$DVC_CALLS/$(ls "$DVC_CALLS" | wc -l).args"
"""


def _run_recipe(tmp_path, script: str, *args: str, env: dict | None = None) -> list[list[str]]:
    """Run a recipe with a `dvc` that records its arguments; returns one argument list per call."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    calls.mkdir()
    (bin_dir / "dvc").write_text(FAKE_DVC)
    (bin_dir / "dvc").chmod(0o755)
    python_dir = os.path.dirname(sys.executable)  # the project's environment, as `dvc exp run` would have it
    environment = {**os.environ, "PATH": f"{bin_dir}:{python_dir}:{os.environ['PATH']}", "DVC_CALLS": str(calls), **(env or {})}
    proc = subprocess.run(["bash", str(ROOT / "scripts" / script), *args], cwd=tmp_path / "repo", env=environment,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [(calls / f"{i}.args").read_text().splitlines() for i in range(len(list(calls.iterdir())))]


def _params_after(tmp_path, call: list[str], previous: list[str] | None = None) -> dict:
    """params.yaml after DVC applies this call's -S overrides (Hydra's grammar, last one wins), on top of
    the committed params.yaml or, as `dvc exp run` in a workspace does, of the ``previous`` call's."""
    from dvc.utils.hydra import apply_overrides

    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text())
    for c in ([previous] if previous else []) + [call]:
        apply_overrides(path, [c[i + 1] for i, a in enumerate(c) if a == "-S"])
    return yaml.safe_load(path.read_text())


@pytest.fixture
def repo(tmp_path):
    """A checkout with the profiles and scripts, its init/ holding the model to fine-tune from."""
    repo = tmp_path / "repo"
    (repo / "init").mkdir(parents=True)
    (repo / "init" / "mse-NN.keras").write_bytes(b"a model")
    for folder in ("profiles", "scripts", "src"):
        (repo / folder).symlink_to(ROOT / folder)
    return repo


@pytest.fixture
def acdc_root(tmp_path):
    """An ACDC-train-shaped root: the 100 patient folders the recipe splits (no images needed)."""
    root = tmp_path / "acdc"
    for i in range(1, 101):
        (root / f"patient{i:03d}").mkdir(parents=True)
    return root


def test_acdc_recipe_trains_on_nested_subsets_with_the_same_val_and_test_patients(tmp_path, repo, acdc_root):
    calls = _run_recipe(tmp_path, "acdc_experiments.sh", "n1", "ft3", "n80", "kspace-ft80", "ft80-cos-e45",
                        "n80-cos-e45", env={"ACDC_ROOT": str(acdc_root)})
    names = ("n1", "ft3", "n80", "kspace-ft80", "ft80-cos-e45", "n80-cos-e45")
    assert [c[:4] for c in calls] == [["exp", "run", "-n", f"acdc-{n}"] for n in names]  # the run cache for prepare/degrade; FORCE=1 for -f
    splits = [_params_after(tmp_path, c)["prepare"]["split"] for c in calls]
    assert [len(s["train"]) for s in splits] == [1, 3, 80, 80, 80, 80]
    assert splits[0]["train"] == splits[1]["train"][:1] and splits[1]["train"] == splits[2]["train"][:3]  # nested
    for s in splits:
        assert s["val"] == splits[0]["val"] and s["test"] == splits[0]["test"] and len(s["test"]) == 10
        assert not set(s["train"]) & set(s["val"]) and not set(s["train"]) & set(s["test"]) | set(s["val"]) & set(s["test"])
    # each run's params do not depend on the run before it (dvc exp run keeps the last experiment's params.yaml)
    for previous in (None, calls[-1]):
        params = [_params_after(tmp_path, c, previous) for c in calls]
        assert [p["train"]["init"] for p in params] == [None, "init/{model}.keras", None, "init/{model}.keras",
                                                        "init/{model}.keras", None]
        assert [p["degrade"]["method"] for p in params] == ["blur_bicubic"] * 3 + ["kspace"] + ["blur_bicubic"] * 2
        assert [p["train"]["schedule"] for p in params] == ["constant"] * 4 + ["cosine"] * 2
        assert [p["models"]["mse-NN"]["epochs"] for p in params] == [15] * 4 + [45] * 2
        assert [p["train"]["learning_rate"] for p in params] == [0.001] * 6
    assert all(p["prepare"]["source"] == "nifti" and p["evaluate"]["external"]["path"] == "../shared/data/sunnybrook"
               for p in params)
    assert all(c[-2:] == ["evaluate@mse-NN", "baselines"] for c in calls)


def test_an_experiment_prefix_names_a_second_series(tmp_path, repo, acdc_root):
    """EXP_PREFIX: the same recipes under other names, beside the acdc- series (e.g. from another start model)."""
    calls = _run_recipe(tmp_path, "acdc_experiments.sh", "ft3", "n1", env={"ACDC_ROOT": str(acdc_root), "EXP_PREFIX": "acdc30-"})
    assert [c[:4] for c in calls] == [["exp", "run", "-n", "acdc30-ft3"], ["exp", "run", "-n", "acdc30-n1"]]


def test_forced_runs_pass_dvc_force(tmp_path, repo):
    """FORCE=1: every stage re-run and a same-named experiment replaced (dvc exp run -f); otherwise the run cache."""
    calls = _run_recipe(tmp_path, "real_experiments.sh", env={"FORCE": "1", "STUDIES": "a b"})
    assert len(calls) == 4 and all(c[:3] == ["exp", "run", "-f"] for c in calls)


def test_real_recipe_runs_every_ordered_pair_from_scratch_and_fine_tuned(tmp_path, repo):
    calls = _run_recipe(tmp_path, "real_experiments.sh")
    names = [c[3] for c in calls]
    assert names == ["real-SCD0000101-SCD0000201", "real-SCD0000101-SCD0000201-ft",
                     "real-SCD0000201-SCD0000101", "real-SCD0000201-SCD0000101-ft"]
    acdc_kspace = ["-S", "degrade.method=kspace", "-S", "train.learning_rate=0.0001", "-S", 'train.init="init/x.keras"',
                   "-S", "evaluate.external={source:dicom,path:../shared/data/sunnybrook}", "-S", "train.keep_init=0.5",
                   "-S", "train.schedule=cosine", "-S", "models.mse-NN.epochs=90",
                   "-S", "evaluate.self_ensemble=true"]  # an ACDC run's leftovers
    for previous in (calls[1], acdc_kspace):  # after a fine-tuned run, after an ACDC k-space run
        for name, call in zip(names, calls, strict=True):
            p = _params_after(tmp_path, call, previous=previous)
            a, b = name.split("-")[1:3]
            assert p["prepare"]["split"] == {"train": [a], "val": [], "test": [b]}
            assert p["train"]["init"] == ("init/{model}.keras" if name.endswith("-ft") else None)
            assert p["degrade"]["method"] == "blur_bicubic" and p["train"]["learning_rate"] == 0.001
            assert p["evaluate"]["external"] is None and p["evaluate"]["self_ensemble"] is False
            assert (p["train"]["keep_init"], p["train"]["schedule"], p["models"]["mse-NN"]["epochs"]) == (0.0, "constant", 15)


def _exp(name: str, train, init, model_psnr: float, ext: bool = True, epochs: int = 15, schedule: str | None = None,
         keep_init: float | None = None) -> dict:
    """One experiment as `dvc exp show --json` reports it (DVC 3)."""
    def scores(psnr):
        s = {"psnr": {"mean": psnr}, "ssim": {"mean": 0.8}, "roi_psnr": {"mean": psnr - 2}}
        return {**s, "external": dict(s, psnr={"mean": psnr + 4}, roi_psnr={"mean": psnr + 1})} if ext else s

    params = {"prepare": {"source": "nifti", "split": {"train": train, "val": [], "test": ["x"]}},
              "train": {"init": init, "epochs": 15, "learning_rate": 0.001}, "degrade": {"method": "blur_bicubic"},
              "models": {"mse-NN": {"epochs": epochs}}}
    if schedule:  # absent in experiments run before train.schedule existed
        params["train"]["schedule"] = schedule
    if keep_init is not None:  # absent before train.keep_init existed
        params["train"]["keep_init"] = keep_init
    return {"rev": "abc", "name": name, "data": {
        "params": {"params.yaml": {"data": params}},
        "metrics": {"metrics/models/mse-NN.json": {"data": scores(model_psnr)},
                    "metrics/models/bicubic.json": {"data": scores(26.0)}}}}


def test_acdc_recipe_names_say_the_recipe_and_a_bad_name_runs_nothing(tmp_path, repo, acdc_root):
    calls = _run_recipe(tmp_path, "acdc_experiments.sh", "ft1-lr4", "kspace-n3-cos-e30", "ft80-cos-e90-se", "ft1-wise",
                        env={"ACDC_ROOT": str(acdc_root)})
    first, second, third, fourth = (_params_after(tmp_path, c) for c in calls)
    assert (fourth["train"]["keep_init"], fourth["train"]["init"], fourth["evaluate"]["self_ensemble"]) == (
        0.5, "init/{model}.keras", False)
    assert [_params_after(tmp_path, c, previous=calls[3])["train"]["keep_init"] for c in calls[:3]] == [0.0] * 3
    assert (third["evaluate"]["self_ensemble"], third["train"]["schedule"], third["models"]["mse-NN"]["epochs"]) == (
        True, "cosine", 90)
    assert first["evaluate"]["self_ensemble"] is False  # set in every run, also after a -se run:
    assert _params_after(tmp_path, calls[0], previous=calls[2])["evaluate"]["self_ensemble"] is False
    assert first["train"]["learning_rate"] == 0.0001 and first["train"]["init"] == "init/{model}.keras"
    assert (first["train"]["schedule"], first["models"]["mse-NN"]["epochs"]) == ("constant", 15)
    assert second["degrade"]["method"] == "kspace" and second["train"]["init"] is None
    assert (second["train"]["schedule"], second["models"]["mse-NN"]["epochs"]) == ("cosine", 30)
    assert len(second["prepare"]["split"]["train"]) == 3
    for bad in ("x80", "ft", "ft80-e", "n3-fast", "ft80-se-cos", "n1-wise", "ft1-se-wise"):
        proc = subprocess.run(["bash", str(ROOT / "scripts" / "acdc_experiments.sh"), bad], cwd=tmp_path / "repo",
                              capture_output=True, text=True, timeout=120, env={**os.environ, "ACDC_ROOT": str(acdc_root), "PATH": (
                                  f"{tmp_path / 'bin'}:{os.path.dirname(sys.executable)}:{os.environ['PATH']}")})
        assert proc.returncode == 2 and proc.stderr.strip().startswith(f"unknown run {bad}:"), (bad, proc.stderr)
    assert len(list((tmp_path / "calls").iterdir())) == 4  # the bad names called no dvc


def test_results_table_and_curve_come_from_the_experiments(tmp_path, capsys):
    show = [{"rev": "workspace", "experiments": None},
            {"rev": "main", "experiments": [{"revs": [_exp("acdc-n1", ["a"], None, 26.5)]},
                                            {"revs": [_exp("acdc-ft1", ["a"], "init/{model}.keras", 27.0)]},
                                            {"revs": [_exp("acdc-n3", ["a", "b", "c"], None, 27.2)]},
                                            {"revs": [_exp("acdc-ft1-cos-e45", ["a"], "init/{model}.keras", 27.3,
                                                           epochs=45, schedule="cosine")]},
                                            {"revs": [_exp("acdc-ft1-wise", ["a"], "init/{model}.keras", 27.4,
                                                           keep_init=0.5)]},
                                            {"revs": [_exp("acdc-ft3", ["a", "b", "c"], "init/{model}.keras", 27.5,
                                                           keep_init=0.0)]}]}]
    saved = tmp_path / "show.json"
    saved.write_text(json.dumps(show))
    results = runpy.run_path(str(ROOT / "scripts" / "exp_results.py"))
    assert results["main"](["table", "acdc-ft1", "acdc-n3", "--json", str(saved)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].startswith("| acdc-ft1 | 1 | fine-tuned (init/{model}.keras) | blur_bicubic | "
                               "15 epochs, lr 0.001 constant | 27.00 | **+1.00** |")
    assert "| 31.20 | **+1.20** |" in lines[3]  # the external set: its own bicubic
    assert results["main"](["table", "acdc-ft1-cos-e45", "--json", str(saved)]) == 0
    assert "| 45 epochs, lr 0.001 cosine | 27.30 |" in capsys.readouterr().out  # models.mse-NN.epochs counts
    rows = [results["row"](e["name"], {"params": e["data"]["params"]["params.yaml"]["data"],
                                       "metrics": {f: m["data"] for f, m in e["data"]["metrics"].items()}}, "mse-NN")
            for group in show[1]["experiments"] for e in group["revs"]]
    # the curve: the default training only, so the 45-epoch run is not a second point at one patient
    assert results["curve_points"](rows, "test", True) == [(1, pytest.approx(1.0)), (3, pytest.approx(1.5))]
    # a keep_init run is its own series (keep_init 0, as params.yaml now spells the default, is the default)
    assert results["curve_points"](rows, "test", True, training="15 epochs, lr 0.001 constant, keep_init 0.5") == [
        (1, pytest.approx(1.4))]
    assert results["main"](["table", "acdc-ft1-wise", "--json", str(saved)]) == 0
    assert "| 15 epochs, lr 0.001 constant, keep_init 0.5 | 27.40 |" in capsys.readouterr().out
    assert results["curve_points"](rows, "test", False) == [(1, pytest.approx(0.5)), (3, pytest.approx(1.2))]
    assert results["main"](["table", "acdc-n9", "--json", str(saved)]) == 2
    out = tmp_path / "curve.png"
    assert results["main"](["curve", "acdc-", "--json", str(saved), "--out", str(out), "--baseline", "1.1", "1.1"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
