"""Super-resolving users' own scans: ``cardiac-sr predict`` and ``export`` (``assess`` is in assess.py).

Inputs: a DICOM series folder (or a root of studies), a 3D/4D NIfTI file, or
a ``.npy`` stack (..., H, W).  Every slice and phase goes through the model x4
in-plane, in batches; slices larger than ``tile`` LR pixels are processed in
overlapping tiles so memory stays bounded.

Intensities: per volume as in ``prepare`` (offset, 99.5th percentile -> 1,
clipped to [0, 1]) before the model; afterwards mapped back to the input's
scale and dtype range.  Highlights above the percentile, which the clipped
input cannot carry, are restored by adding the cubic-spline interpolation of
the clipped-off part, so nothing saturates.

Geometry: the field of view stays at the same physical place (see
:mod:`cardiac_sr.writers`).

Self-ensemble (``--self-ensemble``): the output is the mean of the 8
predictions for the flips/rotations of the input (EDSR+), 8 times the work.
Uncertainty (``--uncertainty``): their standard deviation (in input intensity
units), and a warning mask where it exceeds ``UNCERTAINTY_THRESHOLD`` (2 % of
the volume's 99.5th-percentile intensity).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .dataset import fit_normalisation
from .errors import CardiacSRError
from .figures import write_preview
from .fileio import atomic_dir, atomic_file
from .inference import PIPELINE_SCALE, load_model, model_preprocessing, model_scale, self_ensemble, super_resolve
from .names import PREDICT_MODEL
from .params import choice
from .readers import detect_format, scan_input
from .study import Study
from .writers import check_output, output_format, write_prediction

log = logging.getLogger(__name__)

UNCERTAINTY_THRESHOLD = 0.02  # on the normalised [0, 1] scale


# ----------------------------------------------------------------------------- the model


def _restore_highlights(sr: np.ndarray, x01_unclipped: np.ndarray, scale: int) -> np.ndarray:
    """Add the cubic interpolation of what the [0, 1] clip removed (linear, so exact for the skip)."""
    from .degradation import upsample_bicubic

    over = np.maximum(x01_unclipped - 1.0, 0.0)
    if not over.any():
        return sr
    for i in np.flatnonzero(over.reshape(len(over), -1).any(axis=1)):
        sr[i] += upsample_bicubic(over[i], scale).astype(np.float32)
    return sr


def available_memory() -> int | None:
    """Bytes this process may still use: MemAvailable, or less under a cgroup (container) limit."""
    limits = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                limits.append(int(line.split()[1]) * 1024)
        cap, used = Path("/sys/fs/cgroup/memory.max").read_text().strip(), \
            Path("/sys/fs/cgroup/memory.current").read_text().strip()
        if cap != "max":
            limits.append(int(cap) - int(used))
    except (OSError, ValueError):
        pass
    return min(limits) if limits else None


TF_OVERHEAD = 1.5 * 2**30  # TensorFlow, the model and its feature maps for one batch


def memory_needed(study: Study, scale: int, uncertainty: bool, ensemble: bool) -> int:
    """Peak bytes of :func:`predict_study` and its writer for one study (measured: about 6.6 GB for Sunnybrook's
    12 x 20 x 256 x 256 at x4): the input in a few float32 copies, the output in about five."""
    pixels = study.image.size
    copies = 4 + 5 * scale * scale + (6 * scale * scale if uncertainty or ensemble else 0)
    return int(pixels * 4 * copies + TF_OVERHEAD)


def check_memory(study: Study, scale: int, uncertainty: bool, ensemble: bool, source) -> None:
    """Refuse, before the work, a study whose prediction would not fit in memory (instead of an OOM kill)."""
    need, have = memory_needed(study, scale, uncertainty, ensemble), available_memory()
    if have is not None and need > have:
        s, t, h, w = study.image.shape
        raise CardiacSRError(f"{source}: super-resolving patient {study.patient_id} ({s} slices x {t} phases of "
                             f"{h} x {w}) needs about {need / 2**30:.1f} GiB of memory and {have / 2**30:.1f} GiB "
                             "are available; give it fewer slices or phases at a time (e.g. one NIfTI per phase)")


@dataclass
class Prediction:
    study: Study
    sr: np.ndarray                 # (S, T, H*s, W*s) in the input's intensity units
    uncertainty: np.ndarray | None  # same shape, intensity units
    warning: np.ndarray | None     # uint8 mask
    scale: int


def predict_study(model, study: Study, scale: int, percentile: float = 99.5, uncertainty: bool = False,
                  batch_size: int = 8, tile: int = 256, progress: bool = True, ensemble: bool = False) -> Prediction:
    """Super-resolve every slice and phase of one study, back in the input's intensity units."""
    s, t, h, w = study.image.shape
    norm = fit_normalisation(study.image, percentile, name=f"patient {study.patient_id}")
    x = ((study.image - norm.offset) / norm.scale).reshape(s * t, h, w).astype(np.float32)
    x01 = np.clip(x, 0.0, 1.0)
    kw = {"batch_size": batch_size, "tile": tile, "progress": progress}
    if uncertainty or ensemble:
        plain, mean, std = self_ensemble(model, x01, scale, **kw)
        sr, std = (mean if ensemble else plain), (std if uncertainty else None)
    else:
        sr, std = super_resolve(model, x01, scale, desc=f"super-resolve {study.patient_id}", **kw), None
    sr = _restore_highlights(sr, x, scale)
    shape = (s, t, h * scale, w * scale)
    out = norm.invert(np.maximum(sr, 0.0)).reshape(shape)
    unc = warn = None
    if std is not None:
        unc = (std * norm.scale).reshape(shape).astype(np.float32)
        warn = (std > UNCERTAINTY_THRESHOLD).reshape(shape).astype(np.uint8)
    return Prediction(study, out.astype(np.float32), unc, warn, scale)


# ----------------------------------------------------------------------------- outputs

def _sibling(output: Path, tag: str) -> Path:
    name = output.name
    for suf in (".nii.gz", ".nii", ".npy"):
        if name.lower().endswith(suf):
            return output.with_name(name[: -len(suf)] + f"_{tag}" + name[-len(suf):])
    return output.with_name(f"{name}_{tag}")


def predict(input_path, output, model_path=PREDICT_MODEL, fmt: str | None = None, overwrite: bool = False,
            uncertainty: bool = False, batch_size: int = 8, tile: int = 256, percentile: float | None = None,
            progress: bool = True, preview: str | os.PathLike | None = None, ensemble: bool = False) -> list[Path]:
    """The ``cardiac-sr predict`` command; returns the paths written.

    ``ensemble``: write the mean of the 8-fold self-ensemble instead of the plain prediction.
    ``preview``: also write this animated GIF of the first study's middle slice over all phases,
    input next to super-resolved (:func:`write_preview`).
    """
    if Path(input_path).is_dir() and detect_format(input_path) == "nifti":
        return predict_nifti_folder(input_path, output, model_path, fmt, overwrite, uncertainty, batch_size, tile,
                                    percentile, progress, ensemble)
    fmt = output_format(Path(output), fmt)
    inputs = (input_path, model_path)
    output = check_output(output, overwrite, fmt, inputs)
    if preview is not None:
        if Path(preview).suffix.lower() != ".gif":
            raise CardiacSRError(f"{preview}: --preview writes an animated GIF; name it *.gif")
        preview = check_output(preview, overwrite, "gif", inputs)
    in_fmt, scanned = scan_input(input_path)  # headers only: one study in memory at a time
    if fmt == "dicom" and in_fmt != "dicom":
        raise CardiacSRError(f"{output}: DICOM output needs a DICOM input; name the output .nii.gz or .npy")
    model, scale, percentile, name = _model(model_path, percentile)
    multi = len(scanned) > 1
    if multi and fmt != "dicom":
        raise CardiacSRError(f"{input_path}: holds {len(scanned)} studies; write them as DICOM (an output folder)")
    extra = [_sibling(output, "uncertainty"), _sibling(output, "warning")] if uncertainty else []
    for p in extra:
        check_output(p, overwrite, fmt, inputs)
    written = []
    dtype = None
    studies = _predictions(scanned, model, scale, percentile, uncertainty, batch_size, tile, progress, ensemble,
                           input_path)
    for number, (study, pred) in enumerate(studies):
        if in_fmt == "npy":
            dtype = np.dtype(study.meta["dtype"])
        target = output / study.patient_id if multi else output
        if multi:
            output.mkdir(exist_ok=True)
        write_prediction(pred.sr, study, target, fmt, scale, name, "super-resolved", dtype, progress, overwrite)
        written.append(target)
        if preview is not None and number == 0:
            written.append(write_preview(study, pred.sr, scale, preview, percentile))
        if uncertainty:
            for base, vol, desc in ((extra[0], pred.uncertainty, "SR uncertainty"),
                                    (extra[1], pred.warning.astype(np.float32), "SR uncertainty warning")):
                tgt = base / study.patient_id if multi else base
                if multi:
                    base.mkdir(exist_ok=True)
                write_prediction(vol, study, tgt, fmt, scale, name, desc,
                                 np.float32 if fmt != "dicom" else None, progress, overwrite)
                written.append(tgt)
    if not written:
        raise CardiacSRError(f"{input_path}: no readable study")
    return written


def model_name(model_path) -> str:
    """The name on the model's card (e.g. ``perceptual-NN`` for ``models/selected.keras``), else the file's."""
    from .models import read_model_card

    return str((read_model_card(model_path) or {}).get("model") or Path(model_path).stem)


def _model(model_path, percentile: float | None):
    """The model, its scale, the normalisation percentile it was trained with (unless given) and its name."""
    model = load_model(model_path)
    scale = model_scale(model, expected=PIPELINE_SCALE)
    if percentile is None:
        percentile = model_preprocessing(model_path, scale)["percentile"]
    name = model_name(model_path)
    log.info("using model %s (%s, x%d, %g percentile normalisation)", model_path, name, scale, percentile)
    return model, scale, percentile, name


def _predictions(scanned, model, scale, percentile, uncertainty, batch_size, tile, progress, ensemble, source):
    """``(study, prediction)`` for each readable study of ``scanned``, one study in memory at a time; a study
    that cannot fit in memory is refused before its work (:func:`check_memory`)."""
    for _, load in scanned:
        study = load()
        if study is None:  # an unreadable study among others (a warning was logged)
            continue
        check_memory(study, scale, uncertainty, ensemble, source)
        yield study, predict_study(model, study, scale, percentile, uncertainty, batch_size, tile, progress, ensemble)


def predict_nifti_folder(input_path, output, model_path=PREDICT_MODEL, fmt: str | None = None, overwrite: bool = False,
                         uncertainty: bool = False, batch_size: int = 8, tile: int = 256,
                         percentile: float | None = None, progress: bool = True, ensemble: bool = False) -> list[Path]:
    """A folder of NIfTI volumes (ACDC ``patientNNN/patientNNN_frameXX.nii.gz``, M&Ms ``*_sa.nii.gz``) into an
    output folder: one volume per input volume, same relative path and name (label maps are not images and
    are not copied); the folder appears whole when every volume is written."""
    input_path = Path(input_path)
    if fmt not in (None, "nifti") or Path(output).name.lower().endswith((".nii", ".nii.gz", ".npy")):
        raise CardiacSRError(f"{output}: {input_path} is a folder of NIfTI volumes; name an output folder (it gets "
                             "one .nii.gz per input volume, same names)")
    output = check_output(output, overwrite, "nifti-folder", (input_path, model_path))
    in_fmt, scanned = scan_input(input_path)
    model, scale, percentile, name_on_card = _model(model_path, percentile)
    written = []
    with atomic_dir(output, replace=overwrite) as tmp:
        for study, pred in _predictions(scanned, model, scale, percentile, uncertainty, batch_size, tile, progress,
                                        ensemble, input_path):
            rel = Path(study.sources[0, 0]).relative_to(input_path)
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            outputs = [(rel, pred.sr, None, "super-resolved")]
            if uncertainty:
                outputs += [(_sibling(rel, "uncertainty"), pred.uncertainty, np.float32, "SR uncertainty"),
                            (_sibling(rel, "warning"), pred.warning.astype(np.float32), np.float32,
                             "SR uncertainty warning")]
            for name, volume, dtype, desc in outputs:
                write_prediction(volume, study, tmp / name, "nifti", scale, name_on_card, desc, dtype, progress)
                written.append(output / name)
        if not written:
            raise CardiacSRError(f"{input_path}: no readable study")
    return written


# ----------------------------------------------------------------------------- export

def export(model_path, output, fmt: str = "savedmodel", overwrite: bool = False) -> Path:
    """Export a trained generator for serving: TensorFlow SavedModel or ONNX (atomically)."""
    output = check_output(output, overwrite, fmt, (model_path,))
    model = load_model(model_path)
    if fmt == "savedmodel":
        with atomic_dir(output) as tmp:
            shutil.rmtree(tmp)
            model.export(str(tmp), format="tf_saved_model", verbose=False)
    elif fmt == "onnx":
        import tensorflow as tf
        import tf2onnx

        import onnx

        spec = (tf.TensorSpec((None, None, None, 1), tf.float32, name="lr"),)
        scale = model_scale(model)
        prep = model_preprocessing(model_path, scale)
        with atomic_file(output, suffix=".onnx") as tmp:
            tf2onnx.convert.from_keras(model, input_signature=spec, opset=17, output_path=str(tmp))
            onnx_model = onnx.load(str(tmp))
            onnx.helper.set_model_props(onnx_model, {  # what an ONNX Runtime user needs to feed it right
                "cardiac_sr.model": model_name(model_path), "cardiac_sr.scale": str(scale),
                "cardiac_sr.normalisation_percentile": str(prep["percentile"]),
                "cardiac_sr.degradation": json.dumps(prep["degradation"], sort_keys=True),
                "cardiac_sr.input": "LR images (batch, h, w, 1) in [0, 1], each volume divided by its percentile"})
            onnx.save(onnx_model, str(tmp))
    else:
        choice(fmt, ("savedmodel", "onnx"), "export format", source="export")
    return output
