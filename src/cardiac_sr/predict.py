"""Super-resolving users' own scans: ``cardiac-sr predict``, ``assess`` and ``export``.

Inputs: a DICOM series folder (or a root of studies), a 3D/4D NIfTI file, or
a ``.npy`` stack (..., H, W).  Every slice and phase goes through the model x4
in-plane, in batches; slices larger than ``tile`` LR pixels are processed in
overlapping tiles so memory stays bounded.

Intensities: per volume as in ``prepare`` (offset, 99.5th percentile -> 1,
clipped to [0, 1]) before the model; afterwards mapped back to the input's
scale and dtype range.  Highlights above the percentile, which the clipped
input cannot carry, are restored by adding the cubic-spline interpolation of
the clipped-off part, so nothing saturates.

Geometry: the field of view stays at the same physical place.  Output pixel
centres sit at input coordinates ``(i + 0.5) / 4 - 0.5`` (the convention of
the bicubic baseline), so in-plane spacing is divided by 4 and the first
voxel's centre (NIfTI affine origin, DICOM ImagePositionPatient) moves by
-3/8 of an input pixel along each in-plane axis: the outer edge of the image
is where it was.

Uncertainty (``--uncertainty``): the standard deviation of the 8
predictions for the flips/rotations of the input (in input intensity units),
and a warning mask where it exceeds ``UNCERTAINTY_THRESHOLD`` (2 % of the
volume's 99.5th-percentile intensity).
"""

from __future__ import annotations

import copy
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .errors import CardiacSRError
from .fileio import atomic_dir, atomic_file
from .prepare import fit_normalisation
from .readers import detect_format, read_dicom, read_nifti_file
from .study import Study

log = logging.getLogger(__name__)

DEFAULT_MODEL = "models/selected.keras"
UNCERTAINTY_THRESHOLD = 0.02  # on the normalised [0, 1] scale
MAX_OUTPUT_PIXELS = 1 << 21     # per model call: 8 slices of 512 x 512, 2 of 1024 x 1024 (~0.5 GiB per feature tensor)
FORMATS = ("dicom", "nifti", "npy")
TILE_OVERLAP = 16  # LR pixels of context read on each side of a tile (beyond the network's receptive field)
MIN_TILE = 2 * TILE_OVERLAP + 8  # a tile must keep more than its overlap, or tiling never advances


# ----------------------------------------------------------------------------- the model

def load_model(path: str | os.PathLike = DEFAULT_MODEL):
    """Load a trained ``.keras`` generator in safe mode, with clear errors."""
    import zipfile

    from .models import load_generator

    path = Path(path)
    if not path.is_file():
        hint = " (train and select one with `dvc repro`, or pass --model)" if str(path) == DEFAULT_MODEL else ""
        raise CardiacSRError(f"{path}: model file not found{hint}")
    if not zipfile.is_zipfile(path):
        raise CardiacSRError(f"{path}: not a Keras model (.keras zip archive)")
    try:
        model = load_generator(path)
    except Exception as exc:
        raise CardiacSRError(f"{path}: cannot be loaded as a Keras model in safe mode "
                             f"({type(exc).__name__}: {str(exc)[:200]})") from exc
    if len(model.inputs) != 1 or model.inputs[0].shape[-1] != 1 or model.outputs[0].shape[-1] != 1:
        raise CardiacSRError(f"{path}: not a single-channel super-resolution model")
    return model


PIPELINE_SCALE = 4  # the factor of the pipeline's default models (params.yaml degrade.scale)


def model_scale(model, expected: int | None = None) -> int:
    """The model's up-scaling factor, measured on a small input; said in the log, with a warning when it
    is not ``expected`` (a model trained with another ``degrade.scale`` changes the output size)."""
    y = model.predict_on_batch(np.zeros((1, 8, 8, 1), np.float32))
    scale = int(y.shape[1] // 8)
    if expected is not None and scale != expected:
        log.warning("model %s up-scales x%d, not x%d as the pipeline's default models: the output is x%d",
                    model.name, scale, expected, scale)
    else:
        log.info("model %s up-scales x%d", model.name, scale)
    return scale


def _tiles(n: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Cover range(n) with windows (read_lo, read_hi, keep_lo, keep_hi)."""
    if n <= tile:
        return [(0, n, 0, n)]
    if tile <= 2 * overlap:
        raise CardiacSRError(f"tile {tile} must be larger than twice the overlap ({2 * overlap} LR pixels)")
    out, start = [], 0
    step = tile - 2 * overlap
    while start < n:
        keep_hi = min(n, start + step)
        lo, hi = max(0, start - overlap), min(n, keep_hi + overlap)
        out.append((lo, hi, start, keep_hi))
        start = keep_hi
    return out


def super_resolve(model, images: np.ndarray, scale: int, batch_size: int = 8, tile: int = 256,
                  overlap: int = TILE_OVERLAP, progress: bool = True, desc: str = "super-resolve") -> np.ndarray:
    """Model output for normalised LR images (N, h, w) -> (N, h*scale, w*scale), float32, unclipped.

    Images wider or taller than ``tile`` are split into tiles with ``overlap``
    LR pixels of context on each side (beyond the network's receptive field),
    so the result equals the whole-image prediction.
    """
    images = np.asarray(images, np.float32)
    n, h, w = images.shape
    if h < 2 or w < 2:
        raise CardiacSRError(f"images of {h} x {w} pixels are too small to super-resolve")
    out = np.zeros((n, h * scale, w * scale), np.float32)
    windows = [(r, c) for r in _tiles(h, tile, overlap) for c in _tiles(w, tile, overlap)]
    # bound memory: at most MAX_OUTPUT_PIXELS output pixels per model call (64 feature maps each)
    largest = max((r[1] - r[0]) * (c[1] - c[0]) for r, c in windows) * scale * scale
    batch_size = max(1, min(batch_size, MAX_OUTPUT_PIXELS // largest))
    bar = tqdm(total=n * len(windows), desc=desc, unit="tile" if len(windows) > 1 else "img", disable=not progress,
               mininterval=1)
    for (r0, r1, kr0, kr1), (c0, c1, kc0, kc1) in windows:
        for i in range(0, n, batch_size):
            x = images[i:i + batch_size, r0:r1, c0:c1, None]
            y = model.predict_on_batch(x)[..., 0]
            out[i:i + batch_size, kr0 * scale:kr1 * scale, kc0 * scale:kc1 * scale] = \
                y[:, (kr0 - r0) * scale:(kr1 - r0) * scale, (kc0 - c0) * scale:(kc1 - c0) * scale]
            bar.update(len(x))
    bar.close()
    return out


def _dihedral(x: np.ndarray, k: int, flip: bool) -> np.ndarray:
    x = np.rot90(x, k, axes=(-2, -1))
    return x[..., ::-1] if flip else x


def _undo_dihedral(x: np.ndarray, k: int, flip: bool) -> np.ndarray:
    x = x[..., ::-1] if flip else x
    return np.rot90(x, -k, axes=(-2, -1))


def super_resolve_with_uncertainty(model, images, scale, **kw) -> tuple[np.ndarray, np.ndarray]:
    """Plain prediction, and the std over the 8 flips/rotations of the input."""
    preds = []
    for k in range(4):
        for flip in (False, True):
            y = super_resolve(model, np.ascontiguousarray(_dihedral(images, k, flip)), scale,
                              desc=f"uncertainty {len(preds) + 1}/8", **kw)
            preds.append(np.ascontiguousarray(_undo_dihedral(y, k, flip)))
    return preds[0], np.std(np.stack(preds), axis=0).astype(np.float32)


def _restore_highlights(sr: np.ndarray, x01_unclipped: np.ndarray, scale: int) -> np.ndarray:
    """Add the cubic interpolation of what the [0, 1] clip removed (linear, so exact for the skip)."""
    from .degrade import upsample_bicubic

    over = np.maximum(x01_unclipped - 1.0, 0.0)
    if not over.any():
        return sr
    for i in np.flatnonzero(over.reshape(len(over), -1).any(axis=1)):
        sr[i] += upsample_bicubic(over[i], scale).astype(np.float32)
    return sr


@dataclass
class Prediction:
    study: Study
    sr: np.ndarray                 # (S, T, H*s, W*s) in the input's intensity units
    uncertainty: np.ndarray | None  # same shape, intensity units
    warning: np.ndarray | None     # uint8 mask
    scale: int


def predict_study(model, study: Study, scale: int, percentile: float = 99.5, uncertainty: bool = False,
                  batch_size: int = 8, tile: int = 256, progress: bool = True) -> Prediction:
    """Super-resolve every slice and phase of one study, back in the input's intensity units."""
    s, t, h, w = study.image.shape
    norm = fit_normalisation(study.image, percentile, name=f"patient {study.patient_id}")
    x = ((study.image - norm.offset) / norm.scale).reshape(s * t, h, w).astype(np.float32)
    x01 = np.clip(x, 0.0, 1.0)
    kw = {"batch_size": batch_size, "tile": tile, "progress": progress}
    if uncertainty:
        sr, std = super_resolve_with_uncertainty(model, x01, scale, **kw)
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


# ----------------------------------------------------------------------------- inputs

def read_input(path: str | os.PathLike, strict: bool = True) -> tuple[str, list[Study]]:
    """(format, studies) of a DICOM folder/root, a NIfTI file or a .npy stack."""
    fmt = detect_format(path)
    if fmt == "npy":
        return fmt, [read_npy(path)]
    if fmt == "nifti":
        p = Path(path)
        if p.is_dir():
            raise CardiacSRError(f"{p}: give one NIfTI file (.nii or .nii.gz), not a folder")
        return fmt, [read_nifti_file(p)]
    return fmt, read_dicom(path, strict=strict)


def read_npy(path: str | os.PathLike) -> Study:
    """A .npy stack (H, W), (N, H, W) or (S, T, H, W) of one channel."""
    path = Path(path)
    try:
        a = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise CardiacSRError(f"{path}: not a readable .npy array ({type(exc).__name__}: {exc})") from exc
    if a.size == 0:
        raise CardiacSRError(f"{path}: the array is empty {a.shape}")
    if a.dtype.kind not in "iuf" or a.ndim not in (2, 3, 4):
        raise CardiacSRError(f"{path}: expected a numeric (H, W), (N, H, W) or (slices, phases, H, W) array, "
                             f"got {a.dtype} {a.shape}")
    if a.ndim >= 3 and a.shape[-1] in (3, 4) and a.shape[-2] > 8:
        raise CardiacSRError(f"{path}: looks like an RGB image {a.shape}; cardiac-sr needs single-channel images")
    meta = {"dtype": str(a.dtype), "ndim": a.ndim}
    a = a.reshape((1,) * (4 - a.ndim) + a.shape).astype(np.float32)
    return Study(patient_id=path.stem, image=a, spacing=(1.0, 1.0, 1.0), meta=meta)


# ----------------------------------------------------------------------------- outputs

def output_format(output: Path, requested: str | None) -> str:
    if requested:
        return requested
    name = output.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    if name.endswith(".npy"):
        return "npy"
    return "dicom"


SERIES_FILE = re.compile(r"s\d{3}_t\d{3}\.dcm")  # the names series_file gives


def series_file(s: int, t: int) -> str:
    """File name of slice ``s``, phase ``t`` in a DICOM series written by :func:`write_dicom_series`."""
    return f"s{s:03d}_t{t:03d}.dcm"


def is_predicted_series(folder: Path) -> bool:
    """True for a folder that only holds what ``predict`` writes as DICOM: ``sNNN_tNNN.dcm`` files, or
    one folder of them per patient (a root of studies)."""
    def flat(f: Path) -> bool:
        return all(e.is_file() and not e.is_symlink() and SERIES_FILE.fullmatch(e.name) for e in f.iterdir())

    return flat(folder) or all(e.is_dir() and not e.is_symlink() and flat(e) for e in folder.iterdir())


def is_saved_model(folder: Path) -> bool:
    """True for a folder that only holds what a TensorFlow SavedModel export writes."""
    names = {e.name for e in folder.iterdir()}
    return "saved_model.pb" in names and names <= {"saved_model.pb", "fingerprint.pb", "variables", "assets"}


# output formats written as folders: how to recognise a previous output of ours, and its description
FOLDER_OUTPUTS = {"dicom": (is_predicted_series, "a previous DICOM output of predict (sNNN_tNNN.dcm files)"),
                  "savedmodel": (is_saved_model, "a previous SavedModel export (saved_model.pb, variables/)")}


def check_output(output: str | os.PathLike, overwrite: bool, fmt: str) -> Path:
    """``output`` if it may be written: new, or (with ``overwrite``) a file, or a folder output of ours."""
    output = Path(output)
    if not output.parent.is_dir():
        raise CardiacSRError(f"{output}: the output's folder {output.parent} does not exist")
    if not (output.exists() or output.is_symlink()):
        return output
    if not overwrite:
        raise CardiacSRError(f"{output}: already exists (use --overwrite to replace it)")
    ours = FOLDER_OUTPUTS.get(fmt)
    if output.is_dir() and ours is None:
        raise CardiacSRError(f"{output}: is a folder; a {fmt} output is one file, so name a file inside it")
    if output.is_dir() and not ours[0](output):
        raise CardiacSRError(f"{output}: is a folder that holds files cardiac-sr did not write; --overwrite only "
                             f"replaces {ours[1]}, so choose a new folder")
    return output


def _cast_like(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(x), info.min, info.max).astype(dtype)
    return x.astype(dtype if dtype.kind == "f" else np.float32)


def sr_affine(affine: np.ndarray, scale: int) -> np.ndarray:
    """NIfTI affine of the x``scale`` in-plane output (axes 0 and 1), field of view kept in place."""
    a = np.asarray(affine, float).copy()
    shift = -(1.0 - 1.0 / scale) / 2.0  # first output voxel centre, in input voxel units
    a[:3, 3] = a[:3, 3] + a[:3, 0] * shift + a[:3, 1] * shift
    a[:3, 0] /= scale
    a[:3, 1] /= scale
    return a


def write_nifti(pred_volume: np.ndarray, study: Study, path: Path, scale: int, dtype=None) -> None:
    """(S, T, H, W) -> NIfTI (x, y, slices[, phases]) with the affine updated, written atomically."""
    import nibabel as nib

    src = study.sources[0, 0] if study.sources is not None else None
    if src and str(src).lower().endswith((".nii", ".nii.gz")):
        ref = nib.load(str(src))
        affine, header, dtype = ref.affine, ref.header.copy(), dtype or ref.get_data_dtype()
        ndim = len(ref.shape)
    else:  # DICOM or npy input: spacing from the study, axes as read
        affine = np.diag([study.spacing[0], study.spacing[1], study.spacing[2], 1.0])
        header, dtype, ndim = None, dtype or np.float32, 4
    data = np.transpose(pred_volume, (2, 3, 0, 1))  # (x, y, slices, phases)
    if ndim < 4:  # a 2D/3D input gets a 2D/3D output (the reader added length-1 axes)
        data = data.reshape(data.shape[:max(ndim, 2)])
    data = _cast_like(data, dtype)
    new_affine = sr_affine(affine, scale)
    img = nib.Nifti1Image(data, new_affine, header)  # pixdim follows the new affine
    img.set_qform(new_affine, code=1)
    img.set_sform(new_affine, code=1)
    suffix = ".nii.gz" if path.name.lower().endswith(".gz") else ".nii"
    with atomic_file(path, suffix=suffix) as tmp:
        nib.save(img, str(tmp))


def write_dicom_series(pred_volume: np.ndarray, study: Study, folder: Path, scale: int, model_name: str,
                       description: str = "super-resolved", progress: bool = True) -> None:
    """One DICOM file per (slice, phase): pixels, size, spacing and position updated; new UIDs."""
    import pydicom
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    if study.sources is None or not str(study.sources[0, 0]).strip():
        raise CardiacSRError("DICOM output needs a DICOM input (its tags are copied); write .nii.gz instead")
    series_uid = generate_uid()
    s_count, t_count = study.sources.shape
    for s, t in tqdm(list(np.ndindex(s_count, t_count)), desc=f"write DICOM {study.patient_id}", unit="file",
                     mininterval=1, disable=not progress):
        src = Path(str(study.sources[s, t]))
        try:
            ds = pydicom.dcmread(src)
        except Exception as exc:
            raise CardiacSRError(f"{src}: cannot re-read the input DICOM ({exc})") from exc
        ds = copy.deepcopy(ds)
        slope = float(getattr(ds, "RescaleSlope", 1) or 1)
        intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
        stored = (pred_volume[s, t] - intercept) / slope
        signed = int(getattr(ds, "PixelRepresentation", 0)) == 1
        bits = int(getattr(ds, "BitsAllocated", 16))
        dtype = np.dtype(f"{'i' if signed else 'u'}{max(bits, 16) // 8}")
        bits_stored = int(getattr(ds, "BitsStored", bits))
        lo, hi = (-(1 << (bits_stored - 1)), (1 << (bits_stored - 1)) - 1) if signed else (0, (1 << bits_stored) - 1)
        pixels = np.clip(np.rint(stored), lo, hi).astype(dtype)
        row_mm, col_mm = (float(v) for v in ds.PixelSpacing)
        if "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds:
            iop = np.asarray(ds.ImageOrientationPatient, float)
            shift = -(1.0 - 1.0 / scale) / 2.0
            ipp = np.asarray(ds.ImagePositionPatient, float) + shift * (iop[:3] * col_mm + iop[3:] * row_mm)
            ds.ImagePositionPatient = [f"{v:.6f}" for v in ipp]
        ds.PixelSpacing = [f"{row_mm / scale:.6f}", f"{col_mm / scale:.6f}"]
        ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = dtype.itemsize * 8, bits_stored, bits_stored - 1
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.PixelData = pixels.tobytes()
        for tag in ("SmallestImagePixelValue", "LargestImagePixelValue", "PixelPaddingValue"):
            if tag in ds:
                del ds[tag]
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.ImageType = ["DERIVED", "SECONDARY"]
        old = str(getattr(ds, "SeriesDescription", "") or "").strip()
        ds.SeriesDescription = (f"{old} {description} x{scale} (cardiac-sr {model_name})").strip()[:64]
        ds.SeriesNumber = int(getattr(ds, "SeriesNumber", 0) or 0) + 1000
        ds.DerivationDescription = f"{description} x{scale} in-plane by cardiac-sr model {model_name}"[:1024]
        ds.save_as(folder / series_file(s, t), enforce_file_format=True)


def write_prediction(volume: np.ndarray, study: Study, output: Path, fmt: str, scale: int, model_name: str,
                     description: str, dtype=None, progress: bool = True) -> None:
    """Write one volume (S, T, H, W) to ``output`` atomically in ``fmt``."""
    if fmt == "nifti":
        write_nifti(volume, study, output, scale, dtype)
    elif fmt == "npy":
        arr = volume.reshape(volume.shape[-2:]) if study.meta.get("ndim") == 2 else volume
        if study.meta.get("ndim") == 3:
            arr = volume.reshape((-1,) + volume.shape[-2:])
        with atomic_file(output, suffix=".npy") as tmp:
            np.save(tmp, _cast_like(arr, dtype or np.float32))
    else:
        with atomic_dir(output) as tmp:
            write_dicom_series(volume, study, tmp, scale, model_name, description, progress)


def _sibling(output: Path, tag: str) -> Path:
    name = output.name
    for suf in (".nii.gz", ".nii", ".npy"):
        if name.lower().endswith(suf):
            return output.with_name(name[: -len(suf)] + f"_{tag}" + name[-len(suf):])
    return output.with_name(f"{name}_{tag}")


def predict(input_path, output, model_path=DEFAULT_MODEL, fmt: str | None = None, overwrite: bool = False,
            uncertainty: bool = False, batch_size: int = 8, tile: int = 256, percentile: float = 99.5,
            progress: bool = True, preview: str | os.PathLike | None = None) -> list[Path]:
    """The ``cardiac-sr predict`` command; returns the paths written.

    ``preview``: also write this animated GIF of the first study's middle slice over all phases,
    input next to super-resolved (:func:`write_preview`).
    """
    fmt = output_format(Path(output), fmt)
    output = check_output(output, overwrite, fmt)
    if preview is not None:
        if Path(preview).suffix.lower() != ".gif":
            raise CardiacSRError(f"{preview}: --preview writes an animated GIF; name it *.gif")
        preview = check_output(preview, overwrite, "gif")
    in_fmt, studies = read_input(input_path)
    if fmt == "dicom" and in_fmt != "dicom":
        raise CardiacSRError(f"{output}: DICOM output needs a DICOM input; name the output .nii.gz or .npy")
    model = load_model(model_path)
    scale = model_scale(model, expected=PIPELINE_SCALE)
    multi = len(studies) > 1
    if multi and fmt != "dicom":
        raise CardiacSRError(f"{input_path}: holds {len(studies)} studies; write them as DICOM (an output folder)")
    extra = [_sibling(output, "uncertainty"), _sibling(output, "warning")] if uncertainty else []
    for p in extra:
        check_output(p, overwrite, fmt)
    written = []
    model_name = Path(model_path).stem
    dtype = np.dtype(studies[0].meta["dtype"]) if in_fmt == "npy" else None
    for study in studies:
        pred = predict_study(model, study, scale, percentile, uncertainty, batch_size, tile, progress)
        target = output / study.patient_id if multi else output
        if multi:
            output.mkdir(exist_ok=True)
        write_prediction(pred.sr, study, target, fmt, scale, model_name, "super-resolved", dtype, progress)
        written.append(target)
        if preview is not None and study is studies[0]:
            written.append(write_preview(study, pred.sr, scale, preview, percentile))
        if uncertainty:
            for base, vol, desc in ((extra[0], pred.uncertainty, "SR uncertainty"),
                                    (extra[1], pred.warning.astype(np.float32), "SR uncertainty warning")):
                tgt = base / study.patient_id if multi else base
                if multi:
                    base.mkdir(exist_ok=True)
                write_prediction(vol, study, tgt, fmt, scale, model_name, desc,
                                 np.float32 if fmt != "dicom" else None, progress)
                written.append(tgt)
    return written


PREVIEW_PX = 256  # output pixels a side of the preview's centre window


def write_preview(study: Study, sr: np.ndarray, scale: int, path: Path, percentile: float = 99.5) -> Path:
    """Animated GIF of the middle slice over all phases: the input (pixels enlarged x``scale``) next to the
    super-resolved image, the central ``PREVIEW_PX`` output pixels, in the study's normalised window."""
    from .figures import write_cine_gif

    s = study.image.shape[0] // 2
    norm = fit_normalisation(study.image, percentile, name=f"patient {study.patient_id}")
    lr = np.kron(norm.apply(study.image[s]), np.ones((1, scale, scale), np.float32))
    out = norm.apply(sr[s])
    h, w = out.shape[1:]
    r0, c0 = max(0, (h - PREVIEW_PX) // 2), max(0, (w - PREVIEW_PX) // 2)
    win = np.s_[:, r0:r0 + PREVIEW_PX, c0:c0 + PREVIEW_PX]
    return write_cine_gif([(f"input {study.patient_id} slice {s}", lr[win]), ("super-resolved x%d" % scale, out[win])],
                          path)


# ----------------------------------------------------------------------------- assess

def assess(input_path, model_path=DEFAULT_MODEL, method: str = "blur_bicubic", scale: int | None = None,
           blur_sigma: float = 1.0, percentile: float = 99.5, batch_size: int = 8, progress: bool = True) -> dict:
    """Degrade a user's HR studies, super-resolve, and score model vs bicubic per patient and overall."""
    from .degrade import degrade_image, upsample_bicubic
    from .evaluate import roi_box  # ROI scores only where contours exist
    from .metrics import psnr, ssim, temporal_psnr

    model = load_model(model_path)
    scale = scale or model_scale(model, expected=PIPELINE_SCALE)
    in_fmt, studies = read_input(input_path, strict=False)
    params = {"method": method, "scale": scale, "blur_sigma": blur_sigma}
    rows = []
    for st in studies:
        s, t, h, w = st.image.shape
        hc, wc = h - h % scale, w - w % scale  # crop (never pad) so every score is on real pixels
        r0, c0 = (h - hc) // 2, (w - wc) // 2
        norm = fit_normalisation(st.image, percentile, name=f"patient {st.patient_id}")
        hr = norm.apply(st.image[..., r0:r0 + hc, c0:c0 + wc]).reshape(s * t, hc, wc)
        lr = np.stack([np.clip(degrade_image(x, params), 0, 1) for x in hr]).astype(np.float32)
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
            per["model_psnr"].append(psnr(hr[i], sr[i]))
            per["bicubic_psnr"].append(psnr(hr[i], bic))
            per["model_ssim"].append(ssim(hr[i], sr[i]))
            per["bicubic_ssim"].append(ssim(hr[i], bic))
            if has_roi[i]:
                b = roi_box(roi[i])
                per["model_roi_psnr"].append(psnr(hr[i][b], sr[i][b]))
                per["bicubic_roi_psnr"].append(psnr(hr[i][b], bic[b]))
                per["model_roi_ssim"].append(ssim(hr[i][b], sr[i][b]))
                per["bicubic_roi_ssim"].append(ssim(hr[i][b], bic[b]))
        row = {"patient": st.patient_id, "images": len(hr), "roi_images": int(has_roi.sum())}
        row.update({k: float(np.mean(v)) if v else None for k, v in per.items()})
        row["detail_corr"], row["detail_scale"] = detail_agreement(detail)
        row["_per_image"], row["_detail"] = per, detail
        rows.append(row)
    overall = {"patient": "overall", "images": sum(r["images"] for r in rows),
               "roi_images": sum(r["roi_images"] for r in rows)}
    for k in rows[0]["_per_image"]:
        vals = [v for r in rows for v in r["_per_image"][k]]
        overall[k] = float(np.mean(vals)) if vals else None
    overall["detail_corr"], overall["detail_scale"] = detail_agreement(sum(r["_detail"] for r in rows))
    for r in rows:
        del r["_per_image"], r["_detail"]
    return {"model": str(model_path), "degradation": params, "input_format": in_fmt,
            "patients": rows, "overall": overall}


def detail_sums(reference: np.ndarray, baseline: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Sums (t.p, p.p, t.t) of the true detail t = reference - baseline and the detail the
    method adds, p = test - baseline (both clipped as for PSNR); add them up over images."""
    from .metrics import DATA_RANGE, _pair

    reference, test = _pair(reference, test)
    baseline = np.clip(np.asarray(baseline, np.float64), 0.0, DATA_RANGE)
    t = reference - baseline
    p = test - baseline
    return np.array([np.sum(t * p), np.sum(p * p), np.sum(t * t)])


def detail_agreement(sums: np.ndarray) -> tuple[float | None, float | None]:
    """Correlation of added and true detail, and the least-squares scale of the added detail.

    A scale below 1 means the method adds more detail than the images have (it would do
    better with its residual shrunk), above 1 less.  ``(None, None)`` when it adds none
    (less than 1e-8 of the true detail's energy: float round-off of a baseline twin).
    """
    tp, pp, tt = (float(v) for v in sums)
    if tt <= 0 or pp <= 1e-8 * tt:
        return None, None
    return tp / np.sqrt(pp * tt), tp / pp


def format_assessment(result: dict) -> str:
    """The ``assess`` table: model next to bicubic, per patient and overall."""
    head = (f"{'patient':<14} {'images':>6} {'PSNR model':>10} {'bicubic':>8} {'gain':>6} "
            f"{'SSIM model':>10} {'bicubic':>8} {'ROI PSNR model':>14} {'bicubic':>8} {'ROI SSIM model':>14} {'bicubic':>8} "
            f"{'detail r':>8} {'scale*':>6} {'tPSNR model':>11} {'bicubic':>8}")
    lines = [f"model {result['model']}, degradation {result['degradation']}", head, "-" * len(head)]

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


# ----------------------------------------------------------------------------- export

def export(model_path, output, fmt: str = "savedmodel", overwrite: bool = False) -> Path:
    """Export a trained generator for serving: TensorFlow SavedModel or ONNX (atomically)."""
    output = check_output(output, overwrite, fmt)
    model = load_model(model_path)
    if fmt == "savedmodel":
        with atomic_dir(output) as tmp:
            shutil.rmtree(tmp)
            model.export(str(tmp), format="tf_saved_model", verbose=False)
    elif fmt == "onnx":
        import tensorflow as tf
        import tf2onnx

        spec = (tf.TensorSpec((None, None, None, 1), tf.float32, name="lr"),)
        with atomic_file(output, suffix=".onnx") as tmp:
            tf2onnx.convert.from_keras(model, input_signature=spec, opset=17, output_path=str(tmp))
    else:
        raise CardiacSRError(f"unknown export format {fmt!r}; valid values: savedmodel, onnx")
    return output
