"""Super-resolving users' own scans: ``cardiac-sr predict`` and ``export`` (``assess`` is in assess.py).

Inputs: a DICOM series folder (or a root of studies), a 3D/4D NIfTI file, or
a ``.npy`` stack (..., H, W).  Every slice and phase goes through the model x4
in-plane, in batches; slices larger than ``tile`` LR pixels are processed in
overlapping tiles.  A study is read whole, then predicted and written a chunk
of images at a time (:func:`predict_chunks`, :func:`cardiac_sr.writers.open_writer`),
so memory is bounded by the input and one chunk, never by the output (x16 the
pixels); before the work, :func:`check_memory` says what the study needs.

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

import dataclasses
import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .dataset import Normalisation, fit_normalisation
from .errors import CardiacSRError
from .figures import write_preview
from .fileio import atomic_dir, atomic_file
from .inference import images_per_call, largest_window, load_model, self_ensemble, super_resolve
from .precision import with_precision
from .names import DEFAULT_PERCENTILE, PREDICT_MODEL
from .params import choice
from .readers import detect_format, scan_input
from .study import Study, compact_image
from .nifti_writer import StorageOverflow
from .writers import check_output, open_writer, output_format

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


TF_BASE = 0.64 * 2**30  # TensorFlow and the loaded model (measured RSS)
ACTIVATION_BYTES = 1000  # feature maps per output pixel of one model call (measured: +0.98 GiB at 1 Mpixel)
FAST_ACTIVATION_BYTES = 1200  # the same for --precision fp32-fast (measured: +1.10 GiB at 1 Mpixel; bf16 needs less)
SECONDS_PER_MPIXEL = 0.72  # mse-NN on the 2-core reference machine, per million output pixels (benchmarks/predict_throughput.py)
CHUNK_OUTPUT_PIXELS = 1 << 22  # output pixels predicted and written at a time: 4 images of 1024 x 1024


def memory_needed(study: Study, scale: int, uncertainty: bool, ensemble: bool, batch_size: int = 8,
                  tile: int = 256, precision: str = "fp32") -> int:
    """Peak bytes of predicting one study (TensorFlow and the model loaded): the larger of reading it (the
    input in float32 and the stored values it came from, int16 for most scans) and predicting it (the input
    as :func:`cardiac_sr.study.compact_image` keeps it, one chunk of output images in a few float32 copies,
    float64 sums for the self-ensemble, and the feature maps of one model call of ``batch_size`` images or
    ``tile`` tiles, more for ``--precision fp32-fast``'s graph).
    Nothing grows with the output: it is streamed."""
    s, t, h, w = study.image.shape
    chunk = min(_chunk_images(h, w, scale, batch_size, tile, uncertainty or ensemble), s * t) * h * w * scale * scale
    per_output_pixel = 24 + (48 if uncertainty or ensemble else 0)
    per_call = images_per_call(h, w, scale, batch_size, tile) * largest_window(h, w, tile) * scale * scale
    read_bytes = study.image.size * 4  # the reader's float32 study and the stored values it came from
    return int(TF_BASE + max(1.5 * read_bytes, study.image.nbytes + chunk * per_output_pixel +
                             per_call * (FAST_ACTIVATION_BYTES if precision == "fp32-fast" else ACTIVATION_BYTES)))


def check_memory(study: Study, scale: int, uncertainty: bool, ensemble: bool, source, batch_size: int = 8,
                 tile: int = 256, precision: str = "fp32") -> None:
    """Say what the study needs (memory, and time at the reference machine's speed) before the work, and refuse
    one whose prediction would not fit in memory (instead of an OOM kill), with the flags that make it fit
    where smaller model calls are enough."""
    need, have = memory_needed(study, scale, uncertainty, ensemble, batch_size, tile, precision), available_memory()
    s, t, h, w = study.image.shape
    if have is not None and need > have:
        lean = memory_needed(study, scale, uncertainty, ensemble, batch_size=1, tile=128, precision=precision)
        fix = (f"--batch-size 1 --tile 128 makes it fit (about {lean / 2**30:.1f} GiB)" if lean <= have else
               "give it fewer slices or phases at a time (e.g. one NIfTI per phase)")
        raise CardiacSRError(f"{source}: super-resolving patient {study.patient_id} ({s} slices x {t} phases of "
                             f"{h} x {w}) needs about {need / 2**30:.1f} GiB of memory and {have / 2**30:.1f} GiB "
                             f"are available; {fix}")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    seconds = s * t * h * w * scale * scale / 1e6 * SECONDS_PER_MPIXEL * (8 if uncertainty or ensemble else 1) * \
        2 / max(1, min(cores, 16))
    log.info("patient %s: %d images of %d x %d -> %d x %d; about %.1f GiB of memory and %s on %d cores (the "
             "reference machine's speed)", study.patient_id, s * t, h, w, h * scale, w * scale, need / 2**30,
             f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s", cores)


def _chunk_images(h: int, w: int, scale: int, batch_size: int = 8, tile: int = 256, ensemble: bool = False) -> int:
    """Images per chunk: about :data:`CHUNK_OUTPUT_PIXELS` of output (a quarter for the self-ensemble, whose
    float64 sums take more per pixel), a whole number of the model calls that :func:`super_resolve` makes,
    so a chunked study runs the same batches (the same numbers) as a whole one."""
    per_call = images_per_call(h, w, scale, batch_size, tile)
    budget = CHUNK_OUTPUT_PIXELS // (4 if ensemble else 1)
    return per_call * max(1, budget // (h * w * scale * scale * per_call))


@dataclass
class Chunk:
    """Consecutive output images ``start, start + 1, ...`` of a study, in (slice, phase) order."""
    start: int
    sr: np.ndarray                  # (k, H*s, W*s) float32 in the input's intensity units
    uncertainty: np.ndarray | None  # same shape, intensity units
    warning: np.ndarray | None      # uint8 mask


def predict_chunks(model, study: Study, scale: int, norm, uncertainty: bool = False, batch_size: int = 8,
                   tile: int = 256, progress: bool = True, ensemble: bool = False) -> Iterator[Chunk]:
    """Super-resolve every slice and phase of one study, a chunk of images at a time (:func:`_chunk_images`),
    back in the input's intensity units; ``norm``: the study's normalisation (``fit_normalisation``)."""
    s, t, h, w = study.image.shape
    step = _chunk_images(h, w, scale, batch_size, tile, uncertainty or ensemble)
    kw = {"batch_size": batch_size, "tile": tile, "progress": False}
    with tqdm(total=s * t, desc=f"super-resolve {study.patient_id}" + (" (8-fold)" if uncertainty or ensemble
              else ""), unit="img", disable=not progress, mininterval=1) as bar:
        for start in range(0, s * t, step):
            # the chunk's images, gathered (a NIfTI study's image is a transposed view: no whole-study copy)
            images = np.stack([study.image[i // t, i % t] for i in range(start, min(start + step, s * t))])
            images = images.astype(np.float32, copy=False)  # a compacted study (int16) -> the values read
            x = ((images - norm.offset) / norm.scale).astype(np.float32)
            x01 = np.clip(x, 0.0, 1.0)
            if uncertainty or ensemble:
                plain, mean, std = self_ensemble(model, x01, scale, **kw)
                sr, std = (mean if ensemble else plain), (std if uncertainty else None)
            else:
                sr, std = super_resolve(model, x01, scale, **kw), None
            sr = _restore_highlights(sr, x, scale)
            out = norm.invert(np.maximum(sr, 0.0)).astype(np.float32)
            unc = warn = None
            if std is not None:
                unc = (std * norm.scale).astype(np.float32)
                warn = (std > UNCERTAINTY_THRESHOLD).astype(np.uint8)
            yield Chunk(start, out, unc, warn)
            bar.update(len(x))


@dataclass
class Prediction:
    study: Study
    sr: np.ndarray                 # (S, T, H*s, W*s) in the input's intensity units
    uncertainty: np.ndarray | None  # same shape, intensity units
    warning: np.ndarray | None     # uint8 mask
    scale: int


def predict_study(model, study: Study, scale: int, percentile: float = DEFAULT_PERCENTILE, uncertainty: bool = False,
                  batch_size: int = 8, tile: int = 256, progress: bool = True, ensemble: bool = False) -> Prediction:
    """The whole super-resolved study in memory (:func:`predict_chunks` put together; ``predict`` streams)."""
    s, t, h, w = study.image.shape
    norm = fit_normalisation(study.image, percentile, name=f"patient {study.patient_id}")
    shape = (s * t, h * scale, w * scale)
    sr = np.empty(shape, np.float32)
    unc = np.empty(shape, np.float32) if uncertainty else None
    warn = np.empty(shape, np.uint8) if uncertainty else None
    for chunk in predict_chunks(model, study, scale, norm, uncertainty, batch_size, tile, progress, ensemble):
        part = np.s_[chunk.start:chunk.start + len(chunk.sr)]
        sr[part] = chunk.sr
        if uncertainty:
            unc[part], warn[part] = chunk.uncertainty, chunk.warning
    shape = (s, t, h * scale, w * scale)
    return Prediction(study, sr.reshape(shape), *(None if v is None else v.reshape(shape) for v in (unc, warn)),
                      scale)


# ----------------------------------------------------------------------------- outputs

def _sibling(output: Path, tag: str) -> Path:
    name = output.name
    for suf in (".nii.gz", ".nii", ".npy"):
        if name.lower().endswith(suf):
            return output.with_name(name[: -len(suf)] + f"_{tag}" + name[-len(suf):])
    return output.with_name(f"{name}_{tag}")


def predict(input_path, output, model_path=PREDICT_MODEL, fmt: str | None = None, overwrite: bool = False,
            uncertainty: bool = False, batch_size: int = 8, tile: int = 256, percentile: float | None = None,
            progress: bool = True, preview: str | os.PathLike | None = None, ensemble: bool = False,
            precision: str = "fp32") -> list[Path]:
    """The ``cardiac-sr predict`` command; returns the paths written.

    ``ensemble``: write the mean of the 8-fold self-ensemble instead of the plain prediction.
    ``precision``: ``fp32`` (exact), ``fp32-fast``, ``bf16`` or ``bf16-fast`` (:mod:`cardiac_sr.precision`).
    ``preview``: also write this animated GIF of the first study's middle slice over all phases,
    input next to super-resolved (:func:`write_preview`).
    """
    if Path(input_path).is_dir() and detect_format(input_path) == "nifti":
        return predict_nifti_folder(input_path, output, model_path, fmt, overwrite, uncertainty, batch_size, tile,
                                    percentile, progress, ensemble, precision)
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
    model, scale, percentile, name = _model(model_path, percentile, precision)
    multi = len(scanned) > 1
    if multi and fmt != "dicom":
        raise CardiacSRError(f"{input_path}: holds {len(scanned)} studies; write them as DICOM (an output folder)")
    extra = [_sibling(output, "uncertainty"), _sibling(output, "warning")] if uncertainty else []
    for p in extra:
        check_output(p, overwrite, fmt, inputs)
    written = []
    for number, study in enumerate(_studies(scanned, scale, uncertainty, ensemble, input_path, batch_size, tile,
                                            precision)):
        multi_target = (lambda base: base / study.patient_id) if multi else (lambda base: base)
        if multi:
            for base in [output] + extra:
                base.mkdir(exist_ok=True)
        targets = [multi_target(output)] + [multi_target(base) for base in extra]
        dtype = np.dtype(study.meta["dtype"]) if in_fmt == "npy" else None
        middle, norm = _write_study(model, study, scale, percentile, fmt, targets, name, dtype, uncertainty, batch_size,
                              tile, progress, ensemble, overwrite, keep_slice=preview is not None and number == 0)
        written += targets
        if middle is not None:
            written.append(write_preview(study, middle, scale, preview, norm))
    if not written:
        raise CardiacSRError(f"{input_path}: no readable study")
    return written


def _write_study(model, study: Study, scale: int, percentile: float, fmt: str, targets: list[Path], name: str,
                 dtype, uncertainty: bool, batch_size: int, tile: int, progress: bool, ensemble: bool,
                 overwrite: bool, keep_slice: bool = False) -> tuple[np.ndarray | None, Normalisation]:
    """Predict ``study`` and stream it into ``targets`` (the super-resolved volume[, its uncertainty and
    warning]) as it is predicted; returns the middle slice's images (all phases) when ``keep_slice``, and the
    study's normalisation.

    A NIfTI whose values outgrow the input's integer storage is written again as float32 (never clipped)."""
    norm = fit_normalisation(study.image, percentile, name=f"patient {study.patient_id}")
    s, t, h, w = study.image.shape
    shape = (s, t, h * scale, w * scale)
    kinds = [("super-resolved", dtype, None)]
    if uncertainty:  # display windows known before any image: up to twice the warning level; the mask 0/1
        top = 2 * UNCERTAINTY_THRESHOLD * norm.scale
        kinds += [("SR uncertainty", np.float32, (top / 2, top)), ("SR uncertainty warning", np.float32, (0.5, 1.0))]
    def stream(storage) -> np.ndarray | None:
        middle = np.empty((t,) + shape[2:], np.float32) if keep_slice else None
        with ExitStack() as stack:
            writers = [stack.enter_context(open_writer(study, shape, target, fmt, scale, name, desc,
                                                       storage or kind_dtype, progress, overwrite, window))
                       for target, (desc, kind_dtype, window) in zip(targets, kinds)]
            for chunk in predict_chunks(model, study, scale, norm, uncertainty, batch_size, tile, progress, ensemble):
                for writer, images in zip(writers, (chunk.sr, chunk.uncertainty, chunk.warning)):
                    writer.write(chunk.start, images)
                if keep_slice:
                    lo, hi = max(chunk.start, s // 2 * t), min(chunk.start + len(chunk.sr), (s // 2 + 1) * t)
                    if lo < hi:
                        middle[lo - s // 2 * t:hi - s // 2 * t] = chunk.sr[lo - chunk.start:hi - chunk.start]
        return middle

    try:
        return stream(storage=None), norm
    except StorageOverflow as exc:
        if fmt != "nifti":
            raise
        log.info("%s: the super-resolved %s; writing float32 (predicting again)", targets[0], exc)
        return stream(storage=np.float32), norm


def _model(model_path, percentile: float | None, precision: str = "fp32"):
    """The model (in ``precision``, :mod:`cardiac_sr.precision`), its scale, the normalisation percentile it
    was trained with (unless given) and its name, from its card (:class:`cardiac_sr.card.Card`)."""
    model, card = load_model(model_path)
    model = with_precision(model, precision)
    percentile = card.percentile if percentile is None else percentile
    log.info("using model %s (%s, x%d, %g percentile normalisation)", model_path, card.name, card.scale, percentile)
    return model, card.scale, percentile, card.name


def _studies(scanned, scale, uncertainty, ensemble, source, batch_size: int = 8, tile: int = 256,
             precision: str = "fp32"):
    """Each readable study of ``scanned``, one in memory at a time; a study that cannot fit in memory is
    refused before its work (:func:`check_memory`)."""
    for _, load in scanned:
        study = load()
        if study is None:  # an unreadable study among others (a warning was logged)
            continue
        study = dataclasses.replace(study, image=compact_image(study.image))  # int16 while it waits: half the memory
        check_memory(study, scale, uncertainty, ensemble, source, batch_size, tile, precision)
        yield study


def predict_nifti_folder(input_path, output, model_path=PREDICT_MODEL, fmt: str | None = None, overwrite: bool = False,
                         uncertainty: bool = False, batch_size: int = 8, tile: int = 256,
                         percentile: float | None = None, progress: bool = True, ensemble: bool = False,
                         precision: str = "fp32") -> list[Path]:
    """A folder of NIfTI volumes (ACDC ``patientNNN/patientNNN_frameXX.nii.gz``, M&Ms ``*_sa.nii.gz``) into an
    output folder: one volume per input volume, same relative path and name (label maps are not images and
    are not copied); the folder appears whole when every volume is written."""
    input_path = Path(input_path)
    if fmt not in (None, "nifti") or Path(output).name.lower().endswith((".nii", ".nii.gz", ".npy")):
        raise CardiacSRError(f"{output}: {input_path} is a folder of NIfTI volumes; name an output folder (it gets "
                             "one .nii.gz per input volume, same names)")
    output = check_output(output, overwrite, "nifti-folder", (input_path, model_path))
    in_fmt, scanned = scan_input(input_path)
    model, scale, percentile, name_on_card = _model(model_path, percentile, precision)
    written = []
    with atomic_dir(output, replace=overwrite) as tmp:
        for study in _studies(scanned, scale, uncertainty, ensemble, input_path, batch_size, tile, precision):
            rel = Path(study.sources[0, 0]).relative_to(input_path)
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            names = [rel] + ([_sibling(rel, "uncertainty"), _sibling(rel, "warning")] if uncertainty else [])
            _write_study(model, study, scale, percentile, "nifti", [tmp / n for n in names], name_on_card, None,
                         uncertainty, batch_size, tile, progress, ensemble, overwrite=True)
            written += [output / n for n in names]
        if not written:
            raise CardiacSRError(f"{input_path}: no readable study")
    return written


# ----------------------------------------------------------------------------- export

def export(model_path, output, fmt: str = "savedmodel", overwrite: bool = False) -> Path:
    """Export a trained generator for serving: TensorFlow SavedModel or ONNX (atomically)."""
    output = check_output(output, overwrite, fmt, (model_path,))
    model, card = load_model(model_path)
    if fmt == "savedmodel":
        with atomic_dir(output) as tmp:
            shutil.rmtree(tmp)
            model.export(str(tmp), format="tf_saved_model", verbose=False)
    elif fmt == "onnx":
        import tensorflow as tf
        import tf2onnx

        import onnx

        spec = (tf.TensorSpec((None, None, None, 1), tf.float32, name="lr"),)
        with atomic_file(output, suffix=".onnx") as tmp:
            tf2onnx.convert.from_keras(model, input_signature=spec, opset=17, output_path=str(tmp))
            onnx_model = onnx.load(str(tmp))
            onnx.helper.set_model_props(onnx_model, {  # what an ONNX Runtime user needs to feed it right
                "cardiac_sr.model": card.name, "cardiac_sr.scale": str(card.scale),
                "cardiac_sr.normalisation_percentile": str(card.percentile),
                "cardiac_sr.degradation": json.dumps(dataclasses.asdict(card.degradation), sort_keys=True),
                "cardiac_sr.input": "LR images (batch, h, w, 1) in [0, 1], each volume divided by its percentile"})
            onnx.save(onnx_model, str(tmp))
    else:
        choice(fmt, ("savedmodel", "onnx"), "export format", source="export")
    return output
