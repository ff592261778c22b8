"""Writers, the counterpart of :mod:`cardiac_sr.readers`: super-resolved volumes as NIfTI, DICOM or .npy.

Every writer streams: :func:`open_writer` takes a study's output images in (slice, phase)
order, a chunk at a time, as they are predicted, so memory never holds a whole
super-resolved study (a 512 x 512 x 30 x 40 cine is 10 GB at x4); the output
goes through a temporary name and a rename (:mod:`cardiac_sr.fileio`).
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
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .errors import CardiacSRError
from .fileio import atomic_dir, atomic_file, check_writable
from .study import Study

log = logging.getLogger(__name__)


def output_format(output: Path, requested: str | None) -> str:
    """The format ``--format`` asks for, else the one ``output``'s name says: ``.nii``/``.nii.gz``, ``.npy``,
    or a folder name (DICOM).  Another suffix (``x.png``, ``x.dcm``) is refused rather than made a folder."""
    if requested:
        return requested
    name = output.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    if name.endswith(".npy"):
        return "npy"
    if output.suffix and not output.is_dir() and not output.suffix[1:].isdigit():
        raise CardiacSRError(f"{output}: unknown output type '{output.suffix}'; name a .nii.gz, .nii or .npy file, "
                             "or a folder for a DICOM series (--format dicom for a folder name with a dot)")
    return "dicom"


SERIES_FILE = re.compile(r"s\d{3}_t\d{3}\.dcm")  # the names series_file gives


def series_file(s: int, t: int) -> str:
    """File name of slice ``s``, phase ``t`` in a DICOM series written by :class:`DicomWriter`."""
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


def is_predicted_nifti_folder(folder: Path) -> bool:
    """True for a folder whose files are all NIfTI volumes that cardiac-sr wrote (``predict`` of a folder)."""
    files = [p for p in folder.rglob("*") if not p.is_dir()]
    return bool(files) and all(p.is_file() and not p.is_symlink() and p.name.lower().endswith((".nii", ".nii.gz"))
                               and _is_ours(p, "nifti") for p in files)


# output formats written as folders: how to recognise a previous output of ours, and its description
FOLDER_OUTPUTS = {"dicom": (is_predicted_series, "a previous DICOM output of predict (sNNN_tNNN.dcm files)"),
                  "nifti-folder": (is_predicted_nifti_folder, "a previous NIfTI-folder output of predict"),
                  "savedmodel": (is_saved_model, "a previous SavedModel export (saved_model.pb, variables/)")}


def _is_ours(path: Path, fmt: str) -> bool:
    """True for a file that cardiac-sr wrote: its NIfTI description, .npy header comment or GIF comment
    starts with :data:`MARKER`."""
    try:
        if fmt == "nifti":
            import nibabel as nib

            return bytes(nib.load(str(path)).header["descrip"]).decode("latin-1").startswith(MARKER)
        with open(path, "rb") as fh:
            head = fh.read(4096)
        if fmt == "npy":
            return head.startswith(b"\x93NUMPY") and f"# {MARKER}".encode() in head[:head.find(b"\n")]
        if fmt == "gif":
            from PIL import Image

            with Image.open(path) as im:
                return str(im.info.get("comment", b"")[:len(MARKER)], "latin-1") == MARKER
        if fmt == "onnx":  # `export` writes its metadata (cardiac_sr.model, .scale, ...)
            import onnx

            return any(p.key.startswith("cardiac_sr.") for p in onnx.load(str(path), load_external_data=False).metadata_props)
    except Exception:  # anything unreadable is not ours
        return False
    return False


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def check_output(output: str | os.PathLike, overwrite: bool, fmt: str, inputs: tuple = ()) -> Path:
    """``output`` if it may be written: new, or (with ``overwrite``) a file or folder output that cardiac-sr
    wrote (recognised by its marker or layout), never one of ``inputs`` nor a folder holding one."""
    output = Path(output)
    for src in inputs:
        if src is not None and (_inside(Path(src), output) or
                                (Path(src).exists() and output.exists() and os.path.samefile(src, output))):
            raise CardiacSRError(f"{output}: is the input {src} (or holds it); choose another output name")
    if not output.parent.is_dir():
        raise CardiacSRError(f"{output}: the output's folder {output.parent} does not exist")
    check_writable(output)  # a read-only place fails now, not after all the inference
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
    if not output.is_dir() and fmt in FILE_OUTPUTS and not _is_ours(output, fmt):
        raise CardiacSRError(f"{output}: is a file cardiac-sr did not write; --overwrite only replaces "
                             f"{FILE_OUTPUTS[fmt]}, so choose a new name")
    return output


# output formats written as files that carry our marker
FILE_OUTPUTS = {"nifti": "a NIfTI file written by cardiac-sr (its description starts 'cardiac-sr')",
                "npy": "a .npy file written by cardiac-sr (its header says '# cardiac-sr')",
                "gif": "a preview GIF written by cardiac-sr (its comment says 'cardiac-sr')",
                "onnx": "an ONNX export written by cardiac-sr (its metadata names the model)"}


def _npy_header(dtype, shape) -> bytes:
    """``np.save``'s format-1.0 header with ``# cardiac-sr`` after the dictionary (readable by ``np.load``),
    so ``--overwrite`` can tell our files from a user's."""
    header = repr({"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
                   "shape": tuple(shape)}) + f"  # {MARKER}"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"  # pad magic + length + header to 64 bytes
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode("latin-1")


def save_npy(path: Path, array: np.ndarray, replace: bool = True) -> None:
    """``array`` as a marked .npy file (:func:`_npy_header`), written atomically."""
    array = np.ascontiguousarray(array)
    with atomic_file(path, suffix=".npy", replace=replace) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(_npy_header(array.dtype, array.shape))
            fh.write(array.tobytes())


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


MARKER = "cardiac-sr"  # starts the NIfTI description and the .npy header comment of every file we write


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


def write_nifti(pred_volume: np.ndarray, study: Study, path: Path, scale: int, dtype=None,
                description: str = "super-resolved", replace: bool = True, progress: bool = False) -> None:
    """(S, T, H, W) -> NIfTI (:class:`NiftiWriter`), written atomically; float32 where the input's storage
    cannot hold the values."""
    for storage in (dtype, np.float32):
        try:
            with open_writer(study, pred_volume.shape, path, "nifti", scale, "", description, storage, progress,
                             replace) as out:
                out.write(0, pred_volume.reshape((-1,) + pred_volume.shape[-2:]))
            return
        except StorageOverflow as exc:
            log.info("%s: the super-resolved %s; writing float32", path, exc)


def _gzip(src: Path, dst: Path, desc: str, progress: bool) -> None:
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


# the series written per input series: their SeriesNumber is the input's plus this offset
SERIES_NUMBER_OFFSETS = {"super-resolved": 1000, "SR uncertainty": 2000, "SR uncertainty warning": 3000}
IMPLEMENTATION_UID = "2.25.315318440297414187917617427542446370416"  # cardiac-sr's (a UUID-derived UID, PS3.5 B.2)


class DicomWriter:
    """One DICOM file per (slice, phase), written as its image comes: the header the reader kept, with
    pixels, size, spacing and position updated, new UIDs, and what traces it to its input."""

    def __init__(self, study: Study, folder: Path, scale: int, model_name: str, description: str = "super-resolved",
                 window: tuple[float, float] | None = None):
        import datetime

        from pydicom.uid import generate_uid

        self.headers = study.meta.get("dicom_headers")
        if self.headers is None:
            raise CardiacSRError("DICOM output needs a DICOM input (its tags are copied); write .nii.gz instead")
        self.folder, self.scale, self.model_name, self.description = folder, scale, model_name, description
        self.window = window  # (centre, width) in intensity units; None: the input's
        self.series_uid = generate_uid()
        self.now = datetime.datetime.now()
        self.number_offset = SERIES_NUMBER_OFFSETS.get(description, 1000)
        self.images_written = 0

    def write(self, start: int, images: np.ndarray) -> None:
        """Images ``start, start + 1, ...`` in (slice, phase) order, (k, H, W) in intensity units."""
        t_count = self.headers.shape[1]
        self.images_written += len(images)
        for k, image in enumerate(images):
            s, t = divmod(start + k, t_count)
            self._write_one(s, t, image)

    def _write_one(self, s: int, t: int, image: np.ndarray) -> None:
        from pydicom.dataset import Dataset
        from pydicom.uid import ExplicitVRLittleEndian

        from . import __version__

        ds = copy.deepcopy(self.headers[s, t])  # the header the reader kept: the source is never re-read
        scale, description = self.scale, self.description
        source = Dataset()
        meta = getattr(ds, "file_meta", None)
        source.ReferencedSOPClassUID = ds.get("SOPClassUID") or getattr(meta, "MediaStorageSOPClassUID", "")
        source.ReferencedSOPInstanceUID = ds.get("SOPInstanceUID") or getattr(meta, "MediaStorageSOPInstanceUID", "")
        slope = float(getattr(ds, "RescaleSlope", 1) or 1)
        intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
        stored = (image - intercept) / slope
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
        ds.SeriesInstanceUID = self.series_uid
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        flavour = list(getattr(ds, "ImageType", []) or [])[2:] or ["OTHER"]  # value 3 is required for MR
        ds.ImageType = ["DERIVED", "SECONDARY", *flavour]
        old = str(getattr(ds, "SeriesDescription", "") or "").strip()
        ds.SeriesDescription = (f"{old} {description} x{scale} (cardiac-sr {self.model_name})").strip()[:64]
        ds.SeriesNumber = int(getattr(ds, "SeriesNumber", 0) or 0) + self.number_offset
        ds.DerivationDescription = f"{description} x{scale} in-plane by cardiac-sr model {self.model_name}"[:1024]
        ds.SourceImageSequence = [source]  # the input image this one was derived from
        ds.ContentDate, ds.ContentTime = self.now.strftime("%Y%m%d"), self.now.strftime("%H%M%S")
        ds.SoftwareVersions = f"cardiac-sr {__version__}"
        ds.file_meta.ImplementationClassUID = IMPLEMENTATION_UID
        ds.file_meta.ImplementationVersionName = f"CARDIACSR_{__version__.replace('.', '')}"[:16]
        if self.window is not None:
            ds.WindowCenter, ds.WindowWidth = f"{self.window[0]:.6g}", f"{self.window[1]:.6g}"
        ds.save_as(self.folder / series_file(s, t), enforce_file_format=True)


class NpyWriter:
    """(S, T, H, W) images -> one marked .npy file (:func:`_npy_header`) in ``dtype``, streamed; a 2D or 3D
    .npy input gets its own number of axes back."""

    def __init__(self, study: Study, fh, shape: tuple[int, int, int, int], dtype=None):
        self.dtype = np.dtype(dtype or np.float32)
        ndim = study.meta.get("ndim")
        out_shape = shape[-2:] if ndim == 2 else (shape[0] * shape[1],) + shape[-2:] if ndim == 3 else shape
        self.fh, self.image_bytes = fh, shape[-2] * shape[-1] * self.dtype.itemsize
        fh.write(_npy_header(self.dtype, out_shape))
        self.offset = fh.tell()
        self.nbytes = self.offset + int(np.prod(out_shape)) * self.dtype.itemsize
        self.images_written = 0

    def write(self, start: int, images: np.ndarray) -> None:
        """Images ``start, start + 1, ...`` in (slice, phase) order, (k, H, W) in intensity units."""
        self.images_written += len(images)
        os.pwrite(self.fh.fileno(), _cast_like(np.asarray(images), self.dtype).tobytes(),
                  self.offset + start * self.image_bytes)


@contextmanager
def open_writer(study: Study, shape: tuple[int, int, int, int], output: Path, fmt: str, scale: int,
                model_name: str, description: str, dtype=None, progress: bool = True, overwrite: bool = True,
                window: tuple[float, float] | None = None) -> Iterator:
    """A writer of one output volume ``shape`` (S, T, H*scale, W*scale) of ``study`` in ``fmt``, whose
    ``write(start, images)`` takes images in (slice, phase) order as they are predicted; the output appears
    whole, atomically, when the block ends without an error (``overwrite=False``: an output that another run
    wrote meanwhile is an error, never replaced).  ``dtype``: the output's (default: the input's storage for
    NIfTI, float32 for .npy); ``window``: the DICOM display window (default: the input's)."""
    if fmt == "dicom":
        with atomic_dir(output, replace=overwrite) as tmp:
            writer = DicomWriter(study, tmp, scale, model_name, description, window)
            yield writer
            _check_complete(writer, shape, output)
        return
    if fmt not in ("nifti", "npy"):
        raise CardiacSRError(f"{output}: unknown output format {fmt!r}")
    compress = fmt == "nifti" and output.name.lower().endswith(".gz")
    suffix = ".npy" if fmt == "npy" else ".nii.gz" if compress else ".nii"
    with atomic_file(output, suffix=suffix, replace=overwrite) as tmp:
        raw = tmp.with_name(tmp.name[:-len(".gz")]) if compress else tmp  # gzipped from beside the temp
        try:
            with open(raw, "wb") as fh:
                writer = NpyWriter(study, fh, shape, dtype) if fmt == "npy" else \
                    NiftiWriter(study, fh, shape, scale, dtype, description)
                log.info("writing %s (%.0f MB%s)", output, writer.nbytes / 1e6, ", compressed at the end" if compress else "")
                yield writer
                _check_complete(writer, shape, output)
            if compress:
                _gzip(raw, tmp, f"compress {output.name}", progress)
        finally:
            if compress:
                raw.unlink(missing_ok=True)


def _check_complete(writer, shape, output) -> None:
    """An output missing images is a bug, never a file: the block's caller wrote fewer than the study has."""
    if writer.images_written != shape[0] * shape[1]:
        raise CardiacSRError(f"{output}: {writer.images_written} of {shape[0] * shape[1]} images were written; "
                             "nothing was kept")


def write_prediction(volume: np.ndarray, study: Study, output: Path, fmt: str, scale: int, model_name: str,
                     description: str, dtype=None, progress: bool = True, overwrite: bool = True,
                     window: tuple[float, float] | None = None) -> None:
    """Write one whole volume (S, T, H, W) to ``output`` atomically in ``fmt`` (:func:`open_writer`)."""
    if fmt == "nifti":
        write_nifti(volume, study, output, scale, dtype, description, replace=overwrite, progress=progress)
        return
    with open_writer(study, volume.shape, output, fmt, scale, model_name, description, dtype, progress, overwrite,
                     window) as out:
        out.write(0, volume.reshape((-1,) + volume.shape[-2:]))
