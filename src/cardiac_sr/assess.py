"""``cardiac-sr assess``: score a model against bicubic on a user's own high-resolution studies.

Each study is normalised per volume as in ``prepare``, degraded as the
``degrade`` stage does, and viewed as a split (:func:`study_split`: HR, LR,
bicubic, ROI, manifest rows), which the ``evaluate`` stage's scorer
(:func:`cardiac_sr.evaluate.score_split`) scores for the model and for bicubic:
PSNR/SSIM, ROI scores where there are contours or labels, temporal PSNR of
consecutive phases (the same pairing rule), and the detail agreement
(``detail r``, ``scale*``), per patient and overall.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from .dataset import fit_normalisation
from .degradation import degrade_image
from .errors import CardiacSRError
from .scoring import SplitData, score_split, super_resolve_baseline
from .inference import load_model, self_ensemble, super_resolve
from .metrics import detail_agreement
from .names import PREDICT_MODEL
from .params import Degrade
from .precision import with_precision
from .readers import scan_input
from .study import Study

log = logging.getLogger(__name__)


def assess(input_path, model_path=PREDICT_MODEL, method: str | None = None, scale: int | None = None,
           blur_sigma: float | None = None, percentile: float | None = None, batch_size: int = 8,
           progress: bool = True, ensemble: bool = False, precision: str = "fp32") -> dict:
    """Degrade a user's HR studies, super-resolve, and score model vs bicubic per patient and overall
    (ROI scores only on images with contours).

    The degradation and normalisation are the model's own (its card, see
    :func:`cardiac_sr.inference.model_preprocessing`); ``method``, ``blur_sigma`` and ``percentile``
    override them, with a warning when they differ.  ``ensemble``: score the mean of the 8-fold
    self-ensemble (:func:`cardiac_sr.inference.self_ensemble`) instead of the plain prediction.
    ``precision``: run the model in ``fp32`` or ``bf16`` (:mod:`cardiac_sr.precision`), to measure what
    ``predict --precision bf16`` costs.
    """
    model, card = load_model(model_path)
    model = with_precision(model, precision)
    if scale is not None and scale != card.scale:
        raise CardiacSRError(f"{model_path}: up-scales x{card.scale}, not x{scale}")
    scale = card.scale
    params = card.degradation
    if params.noise_sigma > 0:
        log.warning("assess: the model was trained with LR noise; assess degrades without noise")
        params = dataclasses.replace(params, noise_sigma=0.0)
    for key, value in (("method", method), ("blur_sigma", blur_sigma)):
        if value is not None and value != getattr(params, key):
            log.warning("assess: degradation %s %r overrides the model's own %r", key, value, getattr(params, key))
            params = Degrade.of({**dataclasses.asdict(params), key: value}, "degradation", source="assess")
    if percentile is not None and percentile != card.percentile:
        log.warning("assess: percentile %r overrides the model's own %r", percentile, card.percentile)
    percentile = card.percentile if percentile is None else percentile
    in_fmt, scanned = scan_input(input_path, strict=False)  # one study in memory at a time

    def run(lr):
        if ensemble:
            return self_ensemble(model, lr, scale, batch_size=batch_size, progress=False)[1]
        return super_resolve(model, lr, scale, batch_size=batch_size, progress=False)

    rows = []
    for st in (load() for _, load in scanned):
        if st is None:
            continue
        data = study_split(st, params, percentile)
        detail = np.zeros(3)
        scored = {"model": score_split("model", data, run, scale, None, detail=detail, progress=progress,
                                       desc=f"assess {st.patient_id}")[0],
                  "bicubic": score_split("bicubic", data, lambda lr: super_resolve_baseline("bicubic", lr, scale),
                                         scale, None, progress=False)[0]}
        per = {f"{who}_{key}": _values(scored[who], key) for who in scored for key in SCORES}
        roi_images = sum(not r["roi_fallback"] for r in scored["model"])
        row = {"patient": st.patient_id, "images": len(data), "roi_images": roi_images}
        row.update({k: float(np.mean(v)) if v else None for k, v in per.items()})
        row["detail_corr"], row["detail_scale"] = detail_agreement(detail)
        row["_per_image"], row["_detail"] = per, detail
        rows.append(row)
    if not rows:
        raise CardiacSRError(f"{input_path}: no readable study")
    overall = {"patient": "overall", "images": sum(r["images"] for r in rows),
               "roi_images": sum(r["roi_images"] for r in rows)}
    for k in rows[0]["_per_image"]:
        vals = [v for r in rows for v in r["_per_image"][k]]
        overall[k] = float(np.mean(vals)) if vals else None
    overall["detail_corr"], overall["detail_scale"] = detail_agreement(sum(r["_detail"] for r in rows))
    for r in rows:
        del r["_per_image"], r["_detail"]
    return {"model": str(model_path), "self_ensemble": ensemble, "precision": precision, "degradation": {k: getattr(params, k) for k in ("method", "blur_sigma", "window", "scale")},
            "percentile": percentile, "input_format": in_fmt,
            "patients": rows, "overall": overall}


SCORES = ("psnr", "ssim", "roi_psnr", "roi_ssim", "tpsnr")  # the columns of the assess table, model and bicubic


def _values(rows: list[dict], key: str) -> list[float]:
    """One score over a study's images: ROI scores only where the study has contours or labels (not the
    central-box fallback), temporal PSNR only where a next phase exists."""
    if key.startswith("roi_"):
        rows = [r for r in rows if not r["roi_fallback"]]
    return [r[key] for r in rows if np.isfinite(r[key])]


def study_split(st: Study, params: Degrade, percentile: float) -> SplitData:
    """A user's study as a split the scorer reads (:class:`cardiac_sr.evaluate.SplitData`): normalised per
    volume, cropped (never padded) to a multiple of the scale so every score is on real pixels, degraded
    with ``params`` (noise excluded), its bicubic baseline, its ROI masks (empty on images without
    contours) and one manifest row per image (slice-major: slice, then phase)."""
    s, t, h, w = st.image.shape
    scale = params.scale
    hc, wc = h - h % scale, w - w % scale
    r0, c0 = (h - hc) // 2, (w - wc) // 2
    norm = fit_normalisation(st.image, percentile, name=f"patient {st.patient_id}")
    hr = norm.apply(st.image[..., r0:r0 + hc, c0:c0 + wc]).reshape(s * t, hc, wc)
    lr = np.stack([np.clip(degrade_image(x, params), 0, 1) for x in hr]).astype(np.float32)
    roi = np.zeros(hr.shape, bool)
    if st.roi is not None:
        has_roi = st.has_roi.reshape(-1) if st.has_roi is not None else np.ones(s * t, bool)
        roi = st.roi[..., r0:r0 + hc, c0:c0 + wc].reshape(s * t, hc, wc).astype(bool) & has_roi[:, None, None]
    manifest = [{"patient": st.patient_id, "slice": i // t, "phase": i % t} for i in range(s * t)]
    return SplitData(st.patient_id, hr, roi, lr, super_resolve_baseline("bicubic", lr, scale), manifest)


def format_assessment(result: dict) -> str:
    """The ``assess`` table: model next to bicubic, per patient and overall."""
    head = (f"{'patient':<14} {'images':>6} {'PSNR model':>10} {'bicubic':>8} {'gain':>6} "
            f"{'SSIM model':>10} {'bicubic':>8} {'ROI PSNR model':>14} {'bicubic':>8} {'ROI SSIM model':>14} {'bicubic':>8} "
            f"{'detail r':>8} {'scale*':>6} {'tPSNR model':>11} {'bicubic':>8}")
    how = ", 8-fold self-ensemble" if result.get("self_ensemble") else ""
    lines = [f"model {result['model']}{how}, degradation {result['degradation']}, normalisation: "
             f"{result['percentile']}th percentile -> 1", head, "-" * len(head)]

    def f(v, fmt):
        return format(v, fmt) if v is not None else "-"

    for r in result["patients"] + [result["overall"]]:
        gain = r["model_psnr"] - r["bicubic_psnr"]
        lines.append(f"{r['patient']:<14} {r['images']:>6} {f(r['model_psnr'], '10.2f')} {f(r['bicubic_psnr'], '8.2f')} "
                     f"{gain:+6.2f} {f(r['model_ssim'], '10.4f')} {f(r['bicubic_ssim'], '8.4f')} "
                     f"{f(r['model_roi_psnr'], '14.2f')} {f(r['bicubic_roi_psnr'], '8.2f')} "
                     f"{f(r['model_roi_ssim'], '14.4f')} {f(r['bicubic_roi_ssim'], '8.4f')} "
                     f"{f(r['detail_corr'], '8.2f')} {f(r['detail_scale'], '6.2f')} "
                     f"{f(r['model_tpsnr'], '11.2f')} {f(r['bicubic_tpsnr'], '8.2f')}")
    lines.append("detail r: correlation of the detail the model adds to bicubic (SR - bicubic) with the true "
                 "detail (HR - bicubic); scale*: the factor on the added detail that would fit best "
                 "(< 1: the model adds more detail than these images have); tPSNR: temporal PSNR, the change "
                 "from one cardiac phase to the next against the true change (lower: more flicker).")
    return "\n".join(lines) + "\n"
