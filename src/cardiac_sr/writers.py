"""Writers, the counterpart of :mod:`cardiac_sr.readers`: super-resolved volumes as NIfTI, DICOM or .npy.

Every writer goes through a temporary name and a rename (:mod:`cardiac_sr.fileio`).
``--overwrite`` replaces only a file or a folder output this project wrote before
(:func:`check_output`, ``FOLDER_OUTPUTS``).

Geometry: the field of view stays at the same physical place.  Output pixel
centres sit at input coordinates ``(i + 0.5) / scale - 0.5`` (the convention
of the bicubic baseline), so in-plane spacing is divided by the scale and the
first voxel's centre (NIfTI affine origin, DICOM ImagePositionPatient) moves
by ``-(1 - 1/scale) / 2`` of an input pixel along each in-plane axis.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .errors import CardiacSRError
from .fileio import atomic_dir, atomic_file
from .study import Study


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

    if "nifti_header" in study.meta:  # NIfTI input: what the reader kept
        affine, header = np.asarray(study.meta["affine"], float), study.meta["nifti_header"].copy()
        dtype, ndim = dtype or np.dtype(study.meta["nifti_dtype"]), int(study.meta["nifti_ndim"])
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
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    headers = study.meta.get("dicom_headers")
    if headers is None:
        raise CardiacSRError("DICOM output needs a DICOM input (its tags are copied); write .nii.gz instead")
    series_uid = generate_uid()
    s_count, t_count = headers.shape
    for s, t in tqdm(list(np.ndindex(s_count, t_count)), desc=f"write DICOM {study.patient_id}", unit="file",
                     mininterval=1, disable=not progress):
        ds = copy.deepcopy(headers[s, t])  # the header the reader kept: the source is never re-read
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
        for tag in ("SmallestImagePixelValue", "LargestImagePixelValue", "PixelPaddingValue"):
            if tag in ds:
                del ds[tag]
        # Rows, Columns, Bits*, Pixel Representation, Samples per Pixel, a new SOP Instance UID
        ds.set_pixel_data(pixels, photometric_interpretation="MONOCHROME2", bits_stored=bits_stored)
        ds.SeriesInstanceUID = series_uid
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
