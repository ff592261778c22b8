"""The trained default models reach a fresh clone without training: the DVC remote stored in the repository
(`shipped/`) holds exactly the bytes whose md5 `dvc.lock` records, and `dvc pull` restores them."""

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
MODELS = ["perceptual-TS", "perceptual-NN", "mse-TS", "mse-NN"]


def _locked_models() -> dict[str, tuple[str, int]]:
    lock = yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"]
    found = {}
    for stage in [f"train@{m}" for m in MODELS] + ["select"]:
        for out in lock[stage]["outs"]:
            if out["path"].endswith(".keras"):
                found[out["path"]] = (out["md5"], out["size"])
    return found


def test_the_shipped_models_are_the_bytes_dvc_lock_names():
    locked = _locked_models()
    assert sorted(locked) == sorted([f"models/{m}.keras" for m in MODELS] + ["models/selected.keras"])
    for path, (md5, size) in locked.items():
        shipped = ROOT / "shipped" / "files" / "md5" / md5[:2] / md5[2:]
        assert shipped.is_file(), f"{path}: {shipped} missing (dvc push --remote shipped after dvc repro)"
        data = shipped.read_bytes()
        assert len(data) == size and hashlib.md5(data).hexdigest() == md5, path


def test_dvc_pull_on_a_fresh_clone_restores_the_models(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    # the committed shipped/ of this checkout (a clone of an uncommitted tree would lack new files)
    shutil.rmtree(clone / "shipped", ignore_errors=True)
    shutil.copytree(ROOT / "shipped", clone / "shipped")
    shutil.copy(ROOT / "dvc.lock", clone / "dvc.lock")
    dvc = str(Path(sys.executable).with_name("dvc"))
    subprocess.run([dvc, "pull", "-q"] + [f"train@{m}" for m in MODELS], cwd=clone, check=True,
                   capture_output=True)
    for path, (md5, _) in _locked_models().items():
        if path != "models/selected.keras":
            assert hashlib.md5((clone / path).read_bytes()).hexdigest() == md5, path
