"""End to end: the DVC pipeline on a temporary copy of the repo with tiny params.

dvc repro from scratch; a second dvc repro changes nothing; dvc exp run
--set-param loss=mse re-runs only `select` and changes metrics/selected.json;
dvc metrics diff shows it; dvc plots show renders; a bad value fails clearly;
dvc push / pull through a local-directory remote. The tiny run also scores an
external test set (evaluate.external: two NIfTI studies of other patients).
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, TINY_DEGRADE, TINY_PREPARE, TINY_TRAIN

COPY = ["dvc.yaml", "params.yaml", "pyproject.toml", "stages", "src", "init", ".dvc/config", ".dvc/plots", ".dvc/.gitignore",
        ".dvcignore", ".gitignore"]


def run(cmd, cwd, check=True):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(Path(cwd) / "src"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, shell=isinstance(cmd, str))
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    for item in COPY:
        src = ROOT / item
        if src.is_dir():
            shutil.copytree(src, root / item, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        elif src.exists():
            (root / item).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, root / item)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["prepare"].update(TINY_PREPARE)
    params["degrade"].update(TINY_DEGRADE)
    params["train"].update(TINY_TRAIN)
    params["train"]["epochs"] = 1
    for m in params["models"].values():
        m["epochs"] = 1
    params["evaluate"]["external"] = {"source": "nifti", "path": "external"}
    _write_external_nifti(root / "external")
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run("git init -q && git add -A && git commit -qm init", root)
    run([sys.executable, "-m", "dvc", "repro"], root)
    run("git add -A && git commit -qm 'tiny run'", root)
    return root


def _write_external_nifti(folder: Path) -> None:
    """Two small studies of other patients as NIfTI (x, y, slices, phases): the external test set."""
    import nibabel as nib
    import numpy as np

    from cardiac_sr.params import Phantom
    from cardiac_sr.phantom import PhantomGenerator

    folder.mkdir()
    gen = PhantomGenerator(Phantom(slices=1, phases=2, size=128, spacing_mm=2.8), seed=77)
    for i in range(2):
        vol = np.transpose(gen.study(i).image, (2, 3, 0, 1)).astype(np.float32)
        nib.save(nib.Nifti1Image(vol, np.diag([2.8, 2.8, 10.0, 1.0])), folder / f"other{i}_sa.nii.gz")


def dvc(root, *args, check=True):
    return run([sys.executable, "-m", "dvc", *args], root, check)


def test_repro_from_scratch_writes_everything(repo):
    for m in ("perceptual-TS", "perceptual-NN", "mse-TS", "mse-NN"):
        assert (repo / "models" / f"{m}.keras").is_file()
        assert (repo / "dvclive" / m / "metrics.json").is_file()
        res = json.loads((repo / "metrics" / "models" / f"{m}.json").read_text())
        assert res["slices"] == 4 and res["external"]["slices"] == 4 and res["external"]["patients"] == 2
    table = (repo / "metrics" / "table.md").read_text()
    assert "| bicubic |" in table and "| mse-NN | Model 4 |" in table
    assert "ext. PSNR gain vs bicubic (dB)" in table and "External test set (ext.): 4 slices of 2 patients" in table
    assert json.loads((repo / "metrics" / "selected.json").read_text())["model"] == "perceptual-NN"
    for fig in ("training_curves", "psnr_distribution", "comparison"):
        assert (repo / "metrics" / "plots" / f"{fig}.png").stat().st_size > 10_000
    from PIL import Image

    with Image.open(repo / "metrics" / "plots" / "cine_loop.gif") as gif:  # HR | bicubic | 4 models, heart zoom x2
        phases = yaml.safe_load((repo / "params.yaml").read_text())["prepare"]["phantom"]["phases"]
        assert gif.n_frames == phases and gif.size[0] == 6 * 2 * 96 + 5 * 4
    assert "temporal PSNR (dB)" in table
    shown = dvc(repo, "metrics", "show").stdout
    assert "metrics/table" not in shown and "metrics/selected.json" in shown


def test_second_repro_changes_nothing(repo):
    out = dvc(repo, "repro").stdout
    assert "didn't change" in out or "up to date" in out
    assert "Running stage" not in out
    assert run("git status --porcelain", repo).stdout.strip() == ""


def test_exp_run_set_param_loss_mse(repo):
    out = dvc(repo, "exp", "run", "--set-param", "loss=mse").stdout
    assert "Running stage 'select'" in out
    assert "Running stage 'train" not in out and "Running stage 'evaluate" not in out
    assert json.loads((repo / "metrics" / "selected.json").read_text())["model"] == "mse-NN"
    diff = dvc(repo, "metrics", "diff", "--md").stdout
    assert "metrics/selected.json" in diff
    assert "loss" in dvc(repo, "params", "diff").stdout


def test_bad_param_value_fails_clearly(repo):
    proc = dvc(repo, "exp", "run", "--set-param", "upsampling=bogus", check=False)
    assert proc.returncode != 0
    assert "valid values: TS, NN" in proc.stdout + proc.stderr
    run("git checkout -- . && " + f"{sys.executable} -m dvc checkout -q", repo, check=False)


def test_plots_show_renders(repo, tmp_path):
    dvc(repo, "plots", "show", "-o", str(tmp_path / "plots"))
    html = (tmp_path / "plots" / "index.html").read_text()
    assert "Validation PSNR" in html and "MSE models, training" in html and "Perceptual models, training" in html
    # offline: the Vega libraries are inlined (.dvc/plots/offline.html), no <script src> to a CDN
    assert "<script src=" not in html and "vega-embed" in html and "cdn.jsdelivr" not in html
    # the combined plots and the figures only, not 20 per-model copies of dvclive's files
    assert "perceptual-TS/plots/metrics/train/loss.tsv" in html and html.count("<div id=") <= 8


def test_push_and_pull_with_a_local_remote(repo, tmp_path):
    remote = tmp_path / "remote"
    dvc(repo, "remote", "add", "-f", "-d", "team", str(remote))
    dvc(repo, "push")
    assert any(remote.rglob("*"))
    shutil.rmtree(repo / ".dvc" / "cache")
    (repo / "models" / "mse-TS.keras").unlink()
    shutil.rmtree(repo / "data" / "degraded")
    dvc(repo, "pull")
    assert (repo / "models" / "mse-TS.keras").is_file() and (repo / "data" / "degraded" / "test_lr" / "00000.npy").is_file()
    assert "up to date" in dvc(repo, "status").stdout.lower() or "unchanged" in dvc(repo, "status").stdout.lower()
