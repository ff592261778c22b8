"""The NIfTI writer: a super-resolved study streamed into one ``.nii``/``.nii.gz`` file, image by image.

A NIfTI input keeps its axes, header, units and storage; a DICOM input gets the patient geometry
dcm2niix gives the same series.  Opened through :func:`cardiac_sr.writers.open_writer`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .study import Study

log = logging.getLogger(__name__)

MARKER = "cardiac-sr"  # starts the NIfTI description and the .npy header comment of every file we write



def sr_affine(affine: np.ndarray, scale: int) -> np.ndarray:
    """NIfTI affine of the x``scale`` in-plane output (axes 0 and 1), field of view kept in place."""
    a = np.asarray(affine, float).copy()
    shift = -(1.0 - 1.0 / scale) / 2.0  # first output voxel centre, in input voxel units
    a[:3, 3] = a[:3, 3] + a[:3, 0] * shift + a[:3, 1] * shift
    a[:3, 0] /= scale
    a[:3, 1] /= scale
    return a


def _storage(study: Study, dtype) -> tuple[np.dtype, float, float]:
    """(on-disk dtype, slope, intercept) of the input: what a NIfTI output keeps unless the values need more."""
    if dtype is not None:
        return np.dtype(dtype), 1.0, 0.0
    if "nifti_header" in study.meta:
        slope, inter = study.meta.get("nifti_scaling", (1.0, 0.0))  # nibabel moves them off the header
        slope = 1.0 if not np.isfinite(slope) or slope == 0 else float(slope)
        inter = 0.0 if not np.isfinite(inter) else float(inter)
        return np.dtype(study.meta["nifti_dtype"]), slope, inter
    headers = study.meta.get("dicom_headers")
    if headers is None:
        return np.dtype(np.float32), 1.0, 0.0
    rescale = {(float(getattr(ds, "RescaleSlope", 1) or 1), float(getattr(ds, "RescaleIntercept", 0) or 0))
               for ds in headers.flat}
    ds = headers.flat[0]
    bits = int(getattr(ds, "BitsAllocated", 16))
    if len(rescale) > 1 or bits not in (8, 16):
        return np.dtype(np.float32), 1.0, 0.0  # a scaling per image cannot be one NIfTI scaling
    signed = int(getattr(ds, "PixelRepresentation", 0)) == 1
    slope, inter = rescale.pop()
    return np.dtype(f"{'i' if signed else 'u'}{bits // 8}"), slope, inter


class StorageOverflow(Exception):
    """Super-resolved values that the input's integer storage cannot hold: write the study as float32."""


def _stored_values(data: np.ndarray, dtype: np.dtype, slope: float, inter: float) -> np.ndarray:
    """``data`` as the input stores it (``dtype``, slope, intercept); :class:`StorageOverflow` where
    that would clip it (the caller writes float32 instead: values are never clipped)."""
    if dtype.kind == "f":
        return data.astype(dtype)
    stored = np.rint((data - inter) / slope)
    info = np.iinfo(dtype)
    if stored.min() < info.min or stored.max() > info.max:
        raise StorageOverflow(f"values {float(data.min()):.4g}..{float(data.max()):.4g} do not fit {dtype}")
    return stored.astype(dtype)


def dicom_affine(study: Study) -> np.ndarray | None:
    """The RAS affine of a DICOM study's voxels laid out as dcm2niix writes them: (column, row counted
    from the bottom, slice[, phase]); ``None`` without ImagePositionPatient/ImageOrientationPatient."""
    headers = study.meta["dicom_headers"]
    first = headers[0, 0]
    if not all("ImagePositionPatient" in ds and "ImageOrientationPatient" in ds for ds in headers[:, 0]):
        return None
    iop = np.asarray(first.ImageOrientationPatient, float)
    along_row, along_col = iop[:3], iop[3:]  # directions of increasing column and row index (LPS)
    row_mm, col_mm = (float(v) for v in first.PixelSpacing)
    ipp = np.array([np.asarray(ds.ImagePositionPatient, float) for ds in headers[:, 0]])
    rows = study.shape2d[0]
    lps = np.eye(4)
    lps[:3, 0] = along_row * col_mm
    lps[:3, 1] = -along_col * row_mm  # rows are stored bottom-up, as dcm2niix does
    normal = np.cross(along_row, along_col)
    if len(ipp) > 1:  # slices go along the normal (as the reader sorted them), one mean step apart (as dcm2niix)
        steps = np.diff(ipp, axis=0)
        step = (ipp[-1] - ipp[0]) @ normal / (len(ipp) - 1)
        if np.abs(steps - step * normal).max() > 0.01 * abs(step) + 1e-3:
            log.warning("patient %s: slice positions are not evenly spaced along the slice normal (steps %s mm); "
                        "a NIfTI volume has one slice spacing (%.3f mm): write DICOM to keep each slice's position",
                        study.patient_id, np.round(np.linalg.norm(steps, axis=1), 2).tolist(), step)
    else:
        step = study.spacing[2]
    lps[:3, 2] = normal * step
    lps[:3, 3] = ipp[0] + (rows - 1) * row_mm * along_col
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # DICOM's LPS -> NIfTI's RAS


def _phase_ms(study: Study) -> float:
    times = np.asarray(study.meta.get("trigger_times_ms", []), float)
    if times.ndim != 2 or times.shape[1] < 2:
        return 0.0
    return float(np.median(np.diff(times, axis=1)))


def _nifti_layout(study: Study, dtype) -> tuple:
    """What the NIfTI output of ``study`` is, before any voxel: (image with the input's header, affine and
    codes, but no data yet; ndim; whether an image's rows run bottom-up (DICOM layout); on-disk dtype,
    slope, intercept)."""
    import nibabel as nib

    out_dtype, slope, inter = _storage(study, dtype)
    bottom_up = False
    if "nifti_header" in study.meta:  # NIfTI input: what the reader kept, axes as stored
        affine, header = np.asarray(study.meta["affine"], float), study.meta["nifti_header"].copy()
        ndim, codes = int(study.meta["nifti_ndim"]), (int(header["qform_code"]) or 1, int(header["sform_code"]) or 1)
    else:
        header, ndim, codes = nib.Nifti1Header(), 4, (1, 1)
        header.set_xyzt_units("mm", "msec")
        affine = dicom_affine(study) if "dicom_headers" in study.meta else None
        bottom_up = affine is not None  # (column, row from the bottom, slice, phase), as dcm2niix
        if affine is None:  # .npy, or DICOM without patient geometry: the array's axes, spacing only
            affine, codes = np.diag([study.spacing[0], study.spacing[1], study.spacing[2], 1.0]), (0, 0)
            if "dicom_headers" in study.meta:
                log.warning("patient %s: no ImagePositionPatient/ImageOrientationPatient; the NIfTI output has "
                            "spacing but no patient orientation", study.patient_id)
    return affine, header, ndim, codes, bottom_up, out_dtype, slope, inter


class NiftiWriter:
    """(S, T, H, W) images -> one NIfTI file, streamed: the header nibabel would write, then each image at
    its place in the file as it comes (``write``); gzipped at the end for ``.nii.gz``.

    A NIfTI input keeps its axes, header, units and storage (dtype, scl_slope/scl_inter); a DICOM input
    gets the patient geometry from ImagePositionPatient/ImageOrientationPatient in dcm2niix's layout
    (x = column, y = row from the bottom, z = slice, t = phase), units mm and ms, the phase spacing and
    the DICOM storage (BitsAllocated, PixelRepresentation, RescaleSlope/Intercept).  Values that the
    input's storage cannot hold raise :class:`StorageOverflow` (the caller writes float32 instead).
    """

    def __init__(self, study: Study, fh, shape: tuple[int, int, int, int], scale: int, dtype=None,
                 description: str = "super-resolved"):
        import nibabel as nib
        from nibabel.arraywriters import get_slope_inter, make_array_writer

        affine, header, ndim, codes, self.bottom_up, self.dtype, slope, inter = _nifti_layout(study, dtype)
        s, t, h, w = shape
        self.shape = shape
        data_shape = ((w, h) if self.bottom_up else (h, w)) + (s, t)
        if ndim < 4:  # a 2D/3D input gets a 2D/3D output (the reader added length-1 axes)
            data_shape = data_shape[:max(ndim, 2)]
        self.slope, self.inter = (slope, inter) if self.dtype.kind in "iu" else (1.0, 0.0)
        new_affine = sr_affine(affine, scale)
        img = nib.Nifti1Image(np.broadcast_to(np.zeros((), self.dtype), data_shape), new_affine, header)
        img.set_data_dtype(self.dtype)
        img.set_qform(new_affine, code=codes[0])
        img.set_sform(new_affine, code=codes[1])
        if ndim == 4 and "nifti_header" not in study.meta:
            zooms = list(img.header.get_zooms())
            img.header.set_zooms(zooms[:3] + [_phase_ms(study)])
        img.header.set_slope_inter(*((self.slope, self.inter) if (self.slope, self.inter) != (1.0, 0.0)
                                     else (np.nan, np.nan)))
        img.header["descrip"] = f"{MARKER} {description} x{scale}".encode()[:79]
        # the header as nib.save writes it (Nifti1Image.to_file_map), without the data
        img.get_data_dtype(finalize=True)
        img.update_header()
        hdr = img.header
        if np.isnan(hdr["scl_slope"]) and np.isnan(hdr["scl_inter"]):  # nibabel then fits its own (1, 0)
            hdr.set_slope_inter(*get_slope_inter(make_array_writer(np.zeros(1, self.dtype), self.dtype,
                                                                   hdr.has_data_slope, hdr.has_data_intercept)))
        self.fh = fh
        hdr.write_to(fh)
        self.offset = int(hdr.get_data_offset())
        fh.write(b"\0" * (self.offset - fh.tell()))
        self.nbytes = self.offset + int(np.prod(data_shape)) * self.dtype.itemsize
        self.images_written = 0

    def write(self, start: int, images: np.ndarray) -> None:
        """Images ``start, start + 1, ...`` in (slice, phase) order, (k, H, W) in intensity units."""
        s, t, h, w = self.shape
        stored = _stored_values(np.asarray(images), self.dtype, self.slope, self.inter)
        self.images_written += len(stored)
        for k, image in enumerate(stored):
            slice_, phase = divmod(start + k, t)
            block = image[::-1] if self.bottom_up else image.T  # x runs fastest in a NIfTI file
            at = self.offset + (phase * s + slice_) * h * w * self.dtype.itemsize
            os.pwrite(self.fh.fileno(), np.ascontiguousarray(block).tobytes(), at)


def gzip_file(src: Path, dst: Path, desc: str, progress: bool) -> None:
    """gzip ``src`` into ``dst`` at nibabel's level (1), in chunks with a progress bar (the write tail of a
    large study is tens of seconds), with no name or time in the gzip header (same bytes for the same data)."""
    import gzip

    with open(src, "rb") as fin, open(dst, "wb") as raw_out, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw_out, compresslevel=1, mtime=0) as fout, \
            tqdm(total=src.stat().st_size, unit="B", unit_scale=True, desc=desc, disable=not progress,
                 mininterval=1) as bar:
        while chunk := fin.read(1 << 24):
            fout.write(chunk)
            bar.update(len(chunk))
