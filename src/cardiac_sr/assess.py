"""``cardiac-sr assess``: score a model against bicubic on a user's own high-resolution studies.

Each study is normalised per volume as in ``prepare``, degraded as the
``degrade`` stage does, super-resolved, and scored per image with the same
function as ``evaluate`` (:func:`cardiac_sr.metrics.image_scores`), plus the
temporal PSNR of consecutive phases and the detail agreement (``detail r``,
``scale*``), per patient and overall.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from .dataset import fit_normalisation
from .degradation import degrade_image, upsample_bicubic
from .errors import CardiacSRError
from .inference import load_model, self_ensemble, super_resolve
from .metrics import detail_agreement, detail_sums, image_scores, roi_box, temporal_psnr
from .names import PREDICT_MODEL
from .params import Degrade
from .readers import scan_input

log = logging.getLogger(__name__)


def assess(input_path, model_path=PREDICT_MODEL, method: str | None = None, scale: int | None = None,
           blur_sigma: float | None = None, percentile: float | None = None, batch_size: int = 8,
           progress: bool = True, ensemble: bool = False) -> dict:
    """Degrade a user's HR studies, super-resolve, and score model vs bicubic per patient and overall
    (ROI scores only on images with contours).

    The degradation and normalisation are the model's own (its card, see
    :func:`cardiac_sr.inference.model_preprocessing`); ``method``, ``blur_sigma`` and ``percentile``
    override them, with a warning when they differ.  ``ensemble``: score the mean of the 8-fold
    self-ensemble (:func:`cardiac_sr.inference.self_ensemble`) instead of the plain prediction.
    """
    model, card = load_model(model_path)
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
    rows = []
    for st in (load() for _, load in scanned):
        if st is None:
            continue
        s, t, h, w = st.image.shape
        hc, wc = h - h % scale, w - w % scale  # crop (never pad) so every score is on real pixels
        r0, c0 = (h - hc) // 2, (w - wc) // 2
        norm = fit_normalisation(st.image, percentile, name=f"patient {st.patient_id}")
        hr = norm.apply(st.image[..., r0:r0 + hc, c0:c0 + wc]).reshape(s * t, hc, wc)
        lr = np.stack([np.clip(degrade_image(x, params), 0, 1) for x in hr]).astype(np.float32)
        if ensemble:
            sr = self_ensemble(model, lr, scale, batch_size=batch_size, progress=progress)[1]
        else:
            sr = super_resolve(model, lr, scale, batch_size=batch_size, progress=progress, desc=f"assess {st.patient_id}")
        has_roi = st.has_roi.reshape(-1) if st.has_roi is not None else np.zeros(s * t, bool)
        roi = st.roi[..., r0:r0 + hc, c0:c0 + wc].reshape(s * t, hc, wc) if st.roi is not None else None
        per = {k: [] for k in ("model_psnr", "bicubic_psnr", "model_ssim", "bicubic_ssim",
                               "model_roi_psnr", "bicubic_roi_psnr", "model_roi_ssim", "bicubic_roi_ssim",
                               "model_tpsnr", "bicubic_tpsnr")}
        detail = np.zeros(3)
        bics = np.stack([upsample_bicubic(x, scale) for x in lr])
        for i in range(len(hr)):
            bic = bics[i]
            detail += detail_sums(hr[i], bic, sr[i])
            if i % t < t - 1:  # images are slice-major: i + 1 is the next phase of the same slice
                per["model_tpsnr"].append(temporal_psnr(hr[i], hr[i + 1], sr[i], sr[i + 1]))
                per["bicubic_tpsnr"].append(temporal_psnr(hr[i], hr[i + 1], bic, bics[i + 1]))
            box = roi_box(roi[i]) if has_roi[i] else None
            for who, out in (("model", sr[i]), ("bicubic", bic)):
                for key, value in image_scores(hr[i], out, box).items():
                    per[f"{who}_{key}"].append(value)
        row = {"patient": st.patient_id, "images": len(hr), "roi_images": int(has_roi.sum())}
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
    return {"model": str(model_path), "self_ensemble": ensemble, "degradation": {k: getattr(params, k) for k in ("method", "blur_sigma", "window", "scale")},
            "percentile": percentile, "input_format": in_fmt,
            "patients": rows, "overall": overall}


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
