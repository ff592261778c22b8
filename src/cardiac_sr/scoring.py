"""Scoring a method on a split: the one path of the ``evaluate`` stage and of ``cardiac-sr assess``.

A split (:class:`SplitData`: HR, ROI masks, LR, bicubic, manifest rows) is the
pipeline's test split or external set read from disk, or a user's study viewed
in memory by ``assess``; :func:`score_split` super-resolves it chunk by chunk
and scores every image (BasicSR: validation and test share ``test()`` +
``calculate_metric``).

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

"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from .dataset import load_split, read_manifest
from .degradation import upsample_bicubic, upsample_nearest, zerofill
from .errors import CardiacSRError
from .metrics import centred_crop, checkerboard_score, detail_sums, image_scores, roi_box, temporal_psnr
from .names import BASELINES
from .params import choice

METRICS = ("psnr", "ssim", "roi_psnr", "roi_ssim", "perceptual", "checkerboard", "tpsnr", "roi_tpsnr")
PERCEPTUAL_CROP = 128


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


@dataclass
class SplitData:
    """One split as every scorer sees it: HR, ROI masks, LR and its bicubic baseline (arrays or memory-mapped
    sharded arrays, (N, H, W) and (N, h, w)) and the manifest rows (patient, slice, phase per image).

    :meth:`load` reads a split of the pipeline's data; ``assess`` builds one per study in memory
    (:func:`cardiac_sr.assess.study_split`): both are scored by :func:`score_split`."""
    split: str
    hr: Any
    roi: Any
    lr: Any
    bicubic: Any
    manifest: list[dict]

    def __post_init__(self):
        n = len(self.hr)
        if len(self.manifest) != n or len(self.lr) != n or len(self.bicubic) != n or len(self.roi) != n:
            raise CardiacSRError(f"{self.split} split sizes disagree (manifest {len(self.manifest)}, HR {n}, "
                                 f"LR {len(self.lr)}, bicubic {len(self.bicubic)}, ROI {len(self.roi)}); re-run dvc repro")

    @classmethod
    def load(cls, prepared_dir, degraded_dir, split: str) -> "SplitData":
        """A split of the prepared and degraded data (memory-mapped, read chunk by chunk)."""
        return cls(split, load_split(prepared_dir, split, "hr"), load_split(prepared_dir, split, "roi"),
                   load_split(degraded_dir, split, "lr"), load_split(degraded_dir, split, "bicubic"),
                   [r for r in read_manifest(prepared_dir) if r["split"] == split])

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


def score_split(method: str, data: SplitData, run, scale: int, perceptual_weights: str | None,
                chunk: int = SCORE_CHUNK, detail: np.ndarray | None = None, progress: bool = True,
                desc: str | None = None) -> tuple[list[dict], float]:
    """Per-slice metrics of one method on one split, ``chunk`` slices at a time; ``run(lr) -> sr``.
    Returns the rows and the inference time in ms per slice.  The one scoring path of ``evaluate``
    and ``assess``.

    A slice's temporal PSNR needs the next phase's frame, which may lie in the next chunk: its row is
    completed when that frame arrives (slices are in manifest order, phases consecutive).
    ``perceptual_weights`` None: no VGG distance (NaN); ``detail``: a (3,) array that accumulates
    :func:`cardiac_sr.metrics.detail_sums` (for ``detail r`` and ``scale*``)."""
    following = next_phase(data.manifest)
    rows: list[dict] = []
    waiting: dict[int, tuple] = {}  # next-phase index -> (row, HR, SR, ROI of the slice waiting for it)
    seconds = 0.0
    bar = tqdm(total=len(data), desc=desc or f"evaluate {method} on {data.split}", mininterval=2, disable=not progress)
    for start in range(0, len(data), chunk):
        stop = min(len(data), start + chunk)
        hr, roi = data.hr[start:stop], data.roi[start:stop]
        t0 = time.perf_counter()
        sr = run(data.lr[start:stop])
        seconds += time.perf_counter() - t0
        bicubic = data.bicubic[start:stop]
        boxes = [roi_box(m) for m in roi]
        crops = [centred_crop(b, hr.shape[1:], PERCEPTUAL_CROP) for b in boxes]
        perceptual = (perceptual_distances(hr, sr, crops, perceptual_weights) if perceptual_weights
                      else np.full(len(hr), np.nan))
        if detail is not None:
            for k in range(stop - start):
                detail += detail_sums(hr[k], bicubic[k], sr[k])
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
