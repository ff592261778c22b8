"""Benchmark: a dataset larger than memory, through prepare, degrade, one epoch of mse-NN and evaluate.

Writes a synthetic cine collection of ``--slices`` 256 x 256 float32 slices
(default 40,000, about 10 GB, as ACDC: 160 patients x 10 slices x 25 phases
of smooth random anatomy as NIfTI volumes) into FOLDER, then runs each step in
a fresh process and prints its wall time and peak resident memory (the step's
own process, and the largest of its worker processes):

    prepare    the NIfTI collection -> FOLDER/prepared (sharded arrays)
    degrade    -> FOLDER/degraded
    train      one epoch of mse-NN with the default train params (params.yaml)
    evaluate   mse-NN on the test split

and, on the default data (data/prepared and data/degraded of `dvc repro`),
training patches/s with the patches read from the memory-mapped shards against
the same arrays loaded into memory first (``--skip-default`` leaves it out).

Targets (issue 15): peak RSS <= 4 GiB in every step on a 2-core 24 GiB
machine; streamed training within 10 % of the in-memory patches/s.  Needs
about 3.5x ``--slices`` x 256 KiB of free disk (35 GB for the default).

    python benchmarks/scale.py FOLDER [--slices 40000] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

SIZE, SLICES, PHASES = 256, 10, 25
GIB = 1 << 30


def write_collection(folder: Path, n_slices: int, seed: int = 0) -> int:
    """NIfTI volumes (256, 256, 10, 25) of smooth random fields with a beating disc; returns the patients."""
    import nibabel as nib

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    per_patient = SLICES * PHASES
    patients = max(1, n_slices // per_patient)
    fy = np.fft.fftfreq(SIZE)[:, None]
    fx = np.fft.rfftfreq(SIZE)[None, :]
    lowpass = np.exp(-(fy**2 + fx**2) / (2 * 0.04**2))
    yy, xx = np.mgrid[:SIZE, :SIZE] - SIZE / 2
    radius = np.hypot(yy, xx)
    affine = np.diag([1.4, 1.4, 8.0, 1.0])
    for p in range(patients):
        vol = np.empty((SIZE, SIZE, SLICES, PHASES), np.float32)
        for s in range(SLICES):
            field = np.fft.irfft2(np.fft.rfft2(rng.standard_normal((SIZE, SIZE))) * lowpass, s=(SIZE, SIZE))
            body = np.clip(300 + 2000 * field, 0, None) * (radius < 110)
            for t in range(PHASES):
                r = 25 + 8 * np.cos(2 * np.pi * t / PHASES)
                vol[:, :, s, t] = body + 600 * (radius < r) + 20 * rng.standard_normal((SIZE, SIZE))
        nib.save(nib.Nifti1Image(vol, affine), folder / f"scale{p:04d}_4d.nii")
        print(f"\rwrote {p + 1}/{patients} volumes", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return patients


def _params(folder: Path):
    import yaml

    from cardiac_sr.params import Params

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["prepare"].update({"source": "nifti", "path": str(folder / "nifti"), "hr_size": SIZE,
                              "split": {"train": 0.9, "val": 0.05, "test": 0.05}})
    params["train"]["epochs"] = 1
    params["models"]["mse-NN"]["epochs"] = 1
    return Params.of(params)


def run_step(step: str, folder: Path) -> dict:
    """One step, in this process (called in a child by :func:`main`)."""
    import logging

    logging.basicConfig(level=logging.WARNING)
    if step not in ("write", "prepare", "degrade"):
        from cardiac_sr.runtime import start_tensorflow

        start_tensorflow()  # quiet TensorFlow start-up, as the stages
    params = _params(folder)
    prepared, degraded = folder / "prepared", folder / "degraded"
    out: dict = {}
    if step == "write":
        out["patients"] = write_collection(folder / "nifti", int(os.environ["SCALE_SLICES"]))
    elif step == "prepare":
        from cardiac_sr.prepare import prepare

        out["splits"] = prepare(params.prepare, params.degrade.scale, prepared)["splits"]
    elif step == "degrade":
        from cardiac_sr.degrade import degrade

        degrade(params.degrade, prepared, degraded)
    elif step == "train":
        from cardiac_sr.card import Card
        from cardiac_sr.train import RunDir, train_model

        run = RunDir(folder, folder / "mse-NN.keras", folder / "dvclive", folder / "train.json", folder / "scratch" / "mse-NN")
        s = train_model("mse-NN", params.train_for("mse-NN"), Card.for_training("mse-NN", params.degrade, params.prepare),
                        prepared, degraded, run)
        steps = s["epochs"] * s["steps_per_epoch"]
        out["patches_per_s"] = round(steps * s["batch_size"] / s["train_seconds_this_run"], 1)
    elif step == "evaluate":
        from cardiac_sr.evaluate import evaluate_method

        res = evaluate_method("mse-NN", prepared, degraded, models_dir=folder, out_dir=folder / "metrics",
                              scale=4, external_dir=None)
        out.update(slices=res["slices"], psnr=round(res["psnr"]["mean"], 2))
    elif step == "default-streamed" or step == "default-in-memory":
        out["patches_per_s"] = default_throughput(in_memory=step.endswith("in-memory"))
    else:
        raise SystemExit(f"unknown step {step}")
    return out


def default_throughput(in_memory: bool, steps: int = 60) -> float:
    """mse-NN training patches/s on the default data, patches read from the shards or from RAM."""
    import keras

    from cardiac_sr.dataset import load_pairs
    from cardiac_sr.losses import make_loss
    from cardiac_sr.models import build_generator, generator_kwargs
    from cardiac_sr.params import load_params
    from cardiac_sr.train import configure_runtime, patch_dataset

    params = load_params(ROOT / "params.yaml")
    cfg, scale = params.train_for("mse-NN"), params.degrade.scale
    configure_runtime(cfg)
    hr, lr = load_pairs(ROOT / "data" / "prepared", ROOT / "data" / "degraded", "train")
    if in_memory:
        hr, lr = np.asarray(hr), np.asarray(lr)
    model = build_generator(**generator_kwargs(cfg, "NN", scale), name="mse-NN")
    model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate), loss=make_loss("mse", cfg.perceptual))
    ds = patch_dataset(hr, lr, scale, cfg.patch_size, cfg.batch_size, cfg.seed)
    model.fit(ds, epochs=1, steps_per_epoch=5, verbose=0)  # trace and warm up
    t0 = time.perf_counter()
    model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0)
    return round(steps * cfg.batch_size / (time.perf_counter() - t0), 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path, help="where the synthetic collection and its datasets are written")
    ap.add_argument("--slices", type=int, default=40_000, help="slices in the collection (default 40000)")
    ap.add_argument("--keep", action="store_true", help="keep the collection and datasets afterwards")
    ap.add_argument("--skip-default", action="store_true", help="leave out the default-data throughput check")
    ap.add_argument("--step", help=argparse.SUPPRESS)  # internal: run one step in this process
    args = ap.parse_args()
    folder = args.folder.resolve()
    if args.step:
        t0 = time.perf_counter()
        out = run_step(args.step, folder)
        out["seconds"] = round(time.perf_counter() - t0, 1)
        out["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20), 2)
        out["peak_rss_workers_gib"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / (1 << 20), 2)
        print("RESULT " + json.dumps(out))
        return 0
    if folder.exists() and any(folder.iterdir()):
        print(f"scale.py: {folder} is not empty; give a new folder", file=sys.stderr)
        return 2
    steps = ["write", "prepare", "degrade", "train", "evaluate"]
    if not args.skip_default:
        steps += ["default-in-memory", "default-streamed"]
    results = {}
    env = dict(os.environ, SCALE_SLICES=str(args.slices))
    try:
        for step in steps:
            proc = subprocess.run([sys.executable, __file__, str(folder), "--step", step], env=env,
                                  stdout=subprocess.PIPE, text=True)
            if proc.returncode:
                print(f"scale.py: step {step} failed (exit {proc.returncode})", file=sys.stderr)
                return 1
            results[step] = json.loads(proc.stdout.split("RESULT ", 1)[1])
            r = results[step]
            print(f"{step:<18} {r['seconds']:>8.1f} s   peak RSS {r['peak_rss_gib']:>5.2f} GiB "
                  f"(workers {r['peak_rss_workers_gib']:.2f})   "
                  + " ".join(f"{k} {v}" for k, v in r.items() if k not in ("seconds", "peak_rss_gib",
                                                                         "peak_rss_workers_gib")), flush=True)
    finally:
        if results:
            (folder / "scale.json").parent.mkdir(parents=True, exist_ok=True)
            (folder / "scale.json").write_text(json.dumps(results, indent=2) + "\n")
        if not args.keep:
            for sub in ("nifti", "prepared", "degraded", "scratch"):
                shutil.rmtree(folder / sub, ignore_errors=True)
    worst = max(max(r["peak_rss_gib"], r["peak_rss_workers_gib"]) for r in results.values())
    print(f"largest peak RSS of any process: {worst:.2f} GiB (target <= 4)")
    if not args.skip_default:
        ratio = results["default-streamed"]["patches_per_s"] / results["default-in-memory"]["patches_per_s"]
        print(f"streamed / in-memory training patches/s on the default data: {ratio:.2f} (target >= 0.90)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
