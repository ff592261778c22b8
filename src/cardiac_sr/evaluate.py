"""The ``evaluate`` stage: score a model or a baseline on the whole test split.

Every method goes through the same code (:func:`evaluate_method`): the
models (``perceptual-TS`` ...) and the baselines ``bicubic`` (the project's
cubic spline), ``nearest`` and ``zerofill`` (Fourier zero-padding, the MR
reference; in the table when ``degrade.method`` is ``kspace``).

Per slice, the scores of :mod:`cardiac_sr.scoring` (PSNR, SSIM, ROI, VGG distance, checkerboard,
temporal PSNR).

Outputs: ``metrics/models/<method>.json`` (mean, std and a 95 % bootstrap
interval over patients for each metric, plus inference ms per slice) and
``metrics/per_slice/<method>.csv``.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

from .dataset import has_external
from .errors import CardiacSRError
from .fileio import atomic_file, write_json
from .inference import load_model, self_ensemble, super_resolve
from .names import BASELINES, DEGRADED_DIR, EXTERNAL, EXTERNAL_DIR, METRICS_DIR, MODELS_DIR, PREPARED_DIR, timings_file
from .scoring import SplitData, score_split, summarise, super_resolve_baseline

log = logging.getLogger(__name__)


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
        path = Path(models_dir) / f"{method}.keras"
        if not path.is_file():
            raise CardiacSRError(f"{path}: not found; train it first (dvc repro train@{method})")
        model, card = load_model(path)  # as predict and assess load it: checked, with its card
        if card.scale != scale:
            raise CardiacSRError(f"{path}: up-scales x{card.scale}, but the data were degraded x{scale} "
                                 f"(degrade.scale); re-train it (dvc repro train@{method})")

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
        data = SplitData.load(*folders[split], split)
        if not len(data):
            per_split[split] = []
            continue
        run(data.lr[:8])  # trace and warm up before timing
        per_split[split], ms = score_split(name, data, run, scale, perceptual_weights)
        times.append(ms)
    summary = {"method": name, **({"self_ensemble": True} if ensemble else {}), **_split_summary(per_split["test"])}
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
