"""The ``evaluate`` stage: score a model or a baseline on the whole test split.

Every method goes through the same code (:func:`evaluate_method`): the
models (``perceptual-TS`` ...) and the baselines ``bicubic`` (the project's
cubic spline), ``nearest`` and ``zerofill`` (Fourier zero-padding, the MR
reference; in the table when ``degrade.method`` is ``kspace``).

Per slice, on [0, 1] intensities with the prediction clipped to [0, 1]:

* ``psnr``, ``ssim`` (data_range 1, Gaussian SSIM sigma 1.5) on the full slice;
* ``roi_psnr``, ``roi_ssim`` on the cardiac ROI: the bounding box (+8 px) of
  the slice's heart mask (phantom mask, or contours when the real data had
  them); slices without a mask use the central half of the image (documented
  fallback, counted in ``roi_fallback_slices``);
* ``perceptual``: MSE of VGG16 ``block2_conv2`` features (the loss's backbone
  and weights) on a 128 x 128 crop centred on the ROI;
* ``checkerboard``: :func:`checkerboard_score` of the (unclipped) output against bicubic;
* ``tpsnr``, ``roi_tpsnr``: temporal PSNR (:func:`cardiac_sr.metrics.temporal_psnr`) of the
  slice and the next cardiac phase of the same slice location: whether the change from one
  phase to the next matches the true change (flicker lowers it), on the full slice and on the
  ROI box of the two phases together; empty (NaN) for the last phase of a cine.

Outputs: ``metrics/models/<method>.json`` (mean, std and a 95 % bootstrap
interval over patients for each metric, plus inference ms per slice) and
``metrics/per_slice/<method>.csv``.
"""

from __future__ import annotations

import csv
import logging
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .dataset import has_external, load_split, read_manifest
from .degradation import upsample_bicubic, upsample_nearest, zerofill
from .errors import CardiacSRError
from .fileio import atomic_file, write_json
from .inference import self_ensemble, super_resolve
from .metrics import centred_crop, checkerboard_score, image_scores, roi_box, temporal_psnr
from .names import BASELINES, DEGRADED_DIR, EXTERNAL, EXTERNAL_DIR, METRICS_DIR, MODELS_DIR, PREPARED_DIR, timings_file
from .params import choice

log = logging.getLogger(__name__)

METRICS = ("psnr", "ssim", "roi_psnr", "roi_ssim", "perceptual", "checkerboard", "tpsnr", "roi_tpsnr")
PERCEPTUAL_CROP = 128


# ----------------------------------------------------------------------------- metrics


def perceptual_distances(hr: np.ndarray, sr: np.ndarray, crops: list, weights: str = "hed",
                         layer: str = "block2_conv2", batch_size: int = 16) -> np.ndarray:
    """VGG16 feature MSE per slice, on the given crops (all the same size)."""
    from .losses import feature_extractor, vgg_preprocess

    feats = feature_extractor(layer, weights)
    out = []
    for i in range(0, len(hr), batch_size):
        idx = range(i, min(i + batch_size, len(hr)))
        a = np.stack([hr[j][crops[j]] for j in idx])[..., None]
        b = np.stack([np.clip(sr[j][crops[j]], 0, 1) for j in idx])[..., None]
        fa = feats.predict_on_batch(vgg_preprocess(a))
        fb = feats.predict_on_batch(vgg_preprocess(b))
        out.append(np.mean((fa - fb) ** 2, axis=(1, 2, 3)))
    return np.concatenate(out)


def bootstrap_ci(values: np.ndarray, groups: np.ndarray, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95 % bootstrap interval of the mean over groups (patients): resample patients, average their means."""
    keys = np.unique(groups)
    means = np.array([values[groups == k].mean() for k in keys])
    if len(keys) < 2:
        return float(means[0]), float(means[0])
    rng = np.random.default_rng(seed)
    boots = means[rng.integers(0, len(keys), (n_boot, len(keys)))].mean(axis=1)
    return float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def summarise(rows: list[dict], keys=METRICS) -> dict:
    """Mean, std and patient-bootstrap 95 % interval of each metric over the slices (None when there are none)."""
    groups = np.array([r["patient"] for r in rows])
    out = {}
    for k in keys:
        v = np.array([r[k] for r in rows], np.float64)
        finite = np.isfinite(v)
        if not finite.any():
            out[k] = {"mean": None, "std": None, "ci95": [None, None]}
            continue
        lo, hi = bootstrap_ci(v[finite], groups[finite])
        out[k] = {"mean": float(v[finite].mean()), "std": float(v[finite].std()), "ci95": [lo, hi]}
    return out


# ----------------------------------------------------------------------------- methods

def super_resolve_baseline(method: str, lr: np.ndarray, scale: int) -> np.ndarray:
    """A baseline applied to every LR slice: (N, h, w) -> (N, H, W) float32."""
    fn = {"bicubic": upsample_bicubic, "nearest": upsample_nearest, "zerofill": zerofill}.get(method)
    if fn is None:
        choice(method, BASELINES, "baseline", source="evaluate")
    return np.stack([fn(x, scale) for x in lr]).astype(np.float32)


class SplitData:
    """HR, ROI, LR, bicubic (memory-mapped sharded arrays) and manifest rows of one split, checked to agree."""

    def __init__(self, prepared_dir, degraded_dir, split: str):
        self.split = split
        self.hr, self.roi = load_split(prepared_dir, split, "hr"), load_split(prepared_dir, split, "roi")
        self.lr, self.bicubic = load_split(degraded_dir, split, "lr"), load_split(degraded_dir, split, "bicubic")
        self.manifest = [r for r in read_manifest(prepared_dir) if r["split"] == split]
        n = len(self.hr)
        if len(self.manifest) != n or len(self.lr) != n or len(self.bicubic) != n or len(self.roi) != n:
            raise CardiacSRError(f"{prepared_dir}/{degraded_dir}: {split} split sizes disagree (manifest "
                                 f"{len(self.manifest)}, HR {n}, LR {len(self.lr)}); re-run dvc repro")

    def __len__(self) -> int:
        return len(self.hr)


def next_phase(manifest: list[dict]) -> np.ndarray:
    """For each row, the index of the next cardiac phase of the same patient and slice, or -1."""
    where = {(r["patient"], int(r["slice"]), int(r["phase"])): i for i, r in enumerate(manifest)}
    return np.array([where.get((r["patient"], int(r["slice"]), int(r["phase"]) + 1), -1) for r in manifest], int)


def temporal_scores(hr: np.ndarray, sr: np.ndarray, roi: np.ndarray, i: int, j: int) -> tuple[float, float]:
    """(temporal PSNR on the full slice, on the ROI box of both phases) of frames i -> j; NaN when j < 0."""
    if j < 0:
        return float("nan"), float("nan")
    b = roi_box(np.logical_or(roi[i], roi[j]))
    return (temporal_psnr(hr[i], hr[j], sr[i], sr[j]),
            temporal_psnr(hr[i][b], hr[j][b], sr[i][b], sr[j][b]))


SCORE_CHUNK = 256  # slices in memory at a time while scoring (a multiple of every inference batch size)


def score_split(method: str, data: SplitData, run, scale: int, perceptual_weights: str,
                chunk: int = SCORE_CHUNK) -> tuple[list[dict], float]:
    """Per-slice metrics of one method on one split, ``chunk`` slices at a time; ``run(lr) -> sr``.
    Returns the rows and the inference time in ms per slice.

    A slice's temporal PSNR needs the next phase's frame, which may lie in the next chunk: its row is
    completed when that frame arrives (slices are in manifest order, phases consecutive)."""
    following = next_phase(data.manifest)
    rows: list[dict] = []
    waiting: dict[int, tuple] = {}  # next-phase index -> (row, HR, SR, ROI of the slice waiting for it)
    seconds = 0.0
    bar = tqdm(total=len(data), desc=f"evaluate {method} on {data.split}", mininterval=2)
    for start in range(0, len(data), chunk):
        stop = min(len(data), start + chunk)
        hr, roi = data.hr[start:stop], data.roi[start:stop]
        t0 = time.perf_counter()
        sr = run(data.lr[start:stop])
        seconds += time.perf_counter() - t0
        bicubic = data.bicubic[start:stop]
        boxes = [roi_box(m) for m in roi]
        crops = [centred_crop(b, hr.shape[1:], PERCEPTUAL_CROP) for b in boxes]
        perceptual = perceptual_distances(hr, sr, crops, perceptual_weights)
        for k in range(stop - start):
            i, j, m = start + k, int(following[start + k]), data.manifest[start + k]
            row = {"split": data.split, "index": i, "patient": m["patient"], "slice": int(m["slice"]),
                   "phase": int(m["phase"]), **image_scores(hr[k], sr[k], boxes[k]),
                   "perceptual": float(perceptual[k]),
                   "checkerboard": checkerboard_score(sr[k], bicubic[k], scale),  # raw output: bicubic scores the floor
                   "tpsnr": float("nan"), "roi_tpsnr": float("nan"), "roi_fallback": int(not roi[k].any())}
            rows.append(row)
            if i in waiting:  # the previous phase, from the chunk before, waited for this frame
                prev, phr, psr, proi = waiting.pop(i)
                prev["tpsnr"], prev["roi_tpsnr"] = temporal_scores(np.stack([phr, hr[k]]), np.stack([psr, sr[k]]),
                                                                   np.stack([proi, roi[k]]), 0, 1)
            if start <= j < stop:
                row["tpsnr"], row["roi_tpsnr"] = temporal_scores(hr, sr, roi, k, j - start)
            elif j >= stop:
                waiting[j] = (row, hr[k], sr[k], roi[k])
            elif j >= 0:
                raise CardiacSRError(f"{data.split}: slice {i}'s next phase is slice {j}, earlier in the split; "
                                     f"the manifest is not in phase order (re-run dvc repro prepare)")
        bar.update(stop - start)
    bar.close()
    return rows, 1000 * seconds / max(1, len(data))


def _split_summary(rows: list[dict]) -> dict:
    return {"slices": len(rows), "patients": len({r["patient"] for r in rows}),
            "roi_fallback_slices": int(sum(r["roi_fallback"] for r in rows)), **summarise(rows)}


def evaluate_method(method: str, prepared_dir=PREPARED_DIR, degraded_dir=DEGRADED_DIR, models_dir=MODELS_DIR,
                    out_dir=METRICS_DIR, *, scale: int, perceptual_weights: str = "hed", external_dir=EXTERNAL_DIR,
                    ensemble: bool = False, name: str | None = None) -> dict:
    """Score one method on the test split, and on the external test set in ``external_dir`` when
    there is one; write its JSON summary (test metrics at the top, external ones under
    ``external``) and per-slice CSV, named ``name`` (default: the method).

    ``ensemble``: score a model's 8-fold self-ensemble (:func:`cardiac_sr.inference.self_ensemble`, the
    mean over the flips and rotations of the input) instead of its plain prediction; 8x the time."""

    name = name or method
    if method in BASELINES:
        def run(lr):
            return super_resolve_baseline(method, lr, scale)
    else:
        from .models import load_generator

        path = Path(models_dir) / f"{method}.keras"
        if not path.is_file():
            raise CardiacSRError(f"{path}: not found; train it first (dvc repro train@{method})")
        model = load_generator(path)

        def run(lr):
            if ensemble:
                return self_ensemble(model, lr, scale, progress=False)[1]
            return super_resolve(model, lr, scale, progress=False)

    folders = {"test": (prepared_dir, degraded_dir)}
    if external_dir is not None and has_external(external_dir):
        folders[EXTERNAL] = (external_dir, external_dir)
    splits = list(folders)
    per_split, times = {}, []
    for split in splits:
        data = SplitData(*folders[split], split)
        if not len(data):
            per_split[split] = []
            continue
        run(data.lr[:8])  # trace and warm up before timing
        per_split[split], ms = score_split(name, data, run, scale, perceptual_weights)
        times.append(ms)
    summary = {"method": name, **_split_summary(per_split["test"])}
    timings = {"inference_ms_per_slice": round(times[0], 3) if times else None}
    if EXTERNAL in per_split:
        summary[EXTERNAL] = _split_summary(per_split[EXTERNAL])
    rows = [r for split in splits for r in per_split[split]]
    out_dir = Path(out_dir)
    write_json(out_dir / "models" / f"{name}.json", summary)
    write_json(timings_file(out_dir / "models" / f"{name}.json"), timings)  # a plain output, not a metric
    with atomic_file(out_dir / "per_slice" / f"{name}.csv") as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    for split in splits:
        res = summary if split == "test" else summary[split]
        if res["slices"]:
            log.info("%s on %s: PSNR %.2f dB, SSIM %.4f, ROI PSNR %.2f dB (%d slices)", name, split,
                     res["psnr"]["mean"], res["ssim"]["mean"], res["roi_psnr"]["mean"], res["slices"])
    return {**summary, **timings}
