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
import logging
import os
import re
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


def save_npy(path: Path, array: np.ndarray, replace: bool = True) -> None:
    """``np.save`` layout (format 1.0, readable by ``np.load``) with ``# cardiac-sr`` after the header's
    dictionary, so ``--overwrite`` can tell our files from a user's; written atomically."""
    array = np.ascontiguousarray(array)
    header = repr({"descr": np.lib.format.dtype_to_descr(array.dtype), "fortran_order": False,
                   "shape": array.shape}) + f"  # {MARKER}"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"  # pad magic + length + header to 64 bytes
    with atomic_file(path, suffix=".npy", replace=replace) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode("latin-1"))
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


def _stored_values(data: np.ndarray, dtype: np.dtype, slope: float, inter: float):
    """``data`` as the input stored it (same dtype, slope and intercept), or float32 when that would
    clip it; returns (array, slope, intercept) with slope 1, intercept 0 meaning no scaling."""
    if dtype.kind == "f":
        return data.astype(dtype), 1.0, 0.0
    stored = np.rint((data - inter) / slope)
    info = np.iinfo(dtype)
    if stored.min() >= info.min and stored.max() <= info.max:
        return stored.astype(dtype), slope, inter
    log.info("the super-resolved values (%.4g..%.4g) do not fit the input's %s storage; writing float32",
             float(data.min()), float(data.max()), dtype)
    return data.astype(np.float32), 1.0, 0.0


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


def write_nifti(pred_volume: np.ndarray, study: Study, path: Path, scale: int, dtype=None,
                description: str = "super-resolved", replace: bool = True, progress: bool = False) -> None:
    """(S, T, H, W) -> NIfTI, written atomically, with the field of view kept in place.

    A NIfTI input keeps its axes, header, units and storage (dtype, scl_slope/scl_inter); a DICOM input
    gets the patient geometry from ImagePositionPatient/ImageOrientationPatient in dcm2niix's layout
    (x = column, y = row from the bottom, z = slice, t = phase), units mm and ms, the phase spacing and
    the DICOM storage (BitsAllocated, PixelRepresentation, RescaleSlope/Intercept).  Values that the
    input's storage cannot hold are written as float32 rather than clipped.
    """
    import nibabel as nib

    out_dtype, slope, inter = _storage(study, dtype)
    if "nifti_header" in study.meta:  # NIfTI input: what the reader kept, axes as stored
        affine, header = np.asarray(study.meta["affine"], float), study.meta["nifti_header"].copy()
        ndim, codes = int(study.meta["nifti_ndim"]), (int(header["qform_code"]) or 1, int(header["sform_code"]) or 1)
        data = np.transpose(pred_volume, (2, 3, 0, 1))  # (x, y, slices, phases)
    else:
        header, ndim, codes = nib.Nifti1Header(), 4, (1, 1)
        header.set_xyzt_units("mm", "msec")
        affine = dicom_affine(study) if "dicom_headers" in study.meta else None
        if affine is not None:
            data = np.transpose(pred_volume, (3, 2, 0, 1))[:, ::-1]  # (column, row from the bottom, slice, phase)
        else:  # .npy, or DICOM without patient geometry: the array's axes, spacing only, orientation unknown
            affine, codes = np.diag([study.spacing[0], study.spacing[1], study.spacing[2], 1.0]), (0, 0)
            data = np.transpose(pred_volume, (2, 3, 0, 1))  # (row, column, slice, phase), as before
            if "dicom_headers" in study.meta:
                log.warning("patient %s: no ImagePositionPatient/ImageOrientationPatient; the NIfTI output has "
                            "spacing but no patient orientation", study.patient_id)
    if ndim < 4:  # a 2D/3D input gets a 2D/3D output (the reader added length-1 axes)
        data = data.reshape(data.shape[:max(ndim, 2)])
    stored, slope, inter = _stored_values(np.ascontiguousarray(data), out_dtype, slope, inter)
    new_affine = sr_affine(affine, scale)
    img = nib.Nifti1Image(stored, new_affine, header)  # pixdim follows the new affine
    img.set_data_dtype(stored.dtype)
    img.set_qform(new_affine, code=codes[0])
    img.set_sform(new_affine, code=codes[1])
    if ndim == 4 and "nifti_header" not in study.meta:
        zooms = list(img.header.get_zooms())
        img.header.set_zooms(zooms[:3] + [_phase_ms(study)])
    img.header.set_slope_inter(*((slope, inter) if (slope, inter) != (1.0, 0.0) else (np.nan, np.nan)))
    img.header["descrip"] = f"{MARKER} {description} x{scale}".encode()[:79]
    compress = path.name.lower().endswith(".gz")
    log.info("writing %s (%.0f MB%s)", path, stored.nbytes / 1e6, ", compressing" if compress else "")
    with atomic_file(path, suffix=".nii.gz" if compress else ".nii", replace=replace) as tmp:
        if not compress:
            nib.save(img, str(tmp))
            return
        raw = tmp.with_name(tmp.name[:-len(".gz")])  # the uncompressed file beside the temp, then gzip it
        try:
            nib.save(img, str(raw))
            _gzip(raw, tmp, f"compress {path.name}", progress)
        finally:
            raw.unlink(missing_ok=True)


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


# the series written per input series: SeriesNumber offset, display window (None: the input's, "fit": the values')
SERIES_KINDS = {"super-resolved": (1000, None), "SR uncertainty": (2000, "fit"), "SR uncertainty warning": (3000, "fit")}
IMPLEMENTATION_UID = "2.25.315318440297414187917617427542446370416"  # cardiac-sr's (a UUID-derived UID, PS3.5 B.2)


def write_dicom_series(pred_volume: np.ndarray, study: Study, folder: Path, scale: int, model_name: str,
                       description: str = "super-resolved", progress: bool = True) -> None:
    """One DICOM file per (slice, phase): pixels, size, spacing and position updated; new UIDs."""
    import datetime

    from pydicom.dataset import Dataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from . import __version__

    headers = study.meta.get("dicom_headers")
    if headers is None:
        raise CardiacSRError("DICOM output needs a DICOM input (its tags are copied); write .nii.gz instead")
    series_uid = generate_uid()
    now = datetime.datetime.now()
    number_offset, window = SERIES_KINDS.get(description, (1000, None))
    if window == "fit":  # uncertainty/warning values have nothing to do with the input's display window
        top = float(np.percentile(pred_volume, 99.5)) or float(pred_volume.max()) or 1.0
        window = (top / 2, top)
    s_count, t_count = headers.shape
    for s, t in tqdm(list(np.ndindex(s_count, t_count)), desc=f"write DICOM {study.patient_id}", unit="file",
                     mininterval=1, disable=not progress):
        ds = copy.deepcopy(headers[s, t])  # the header the reader kept: the source is never re-read
        source = Dataset()
        meta = getattr(ds, "file_meta", None)
        source.ReferencedSOPClassUID = ds.get("SOPClassUID") or getattr(meta, "MediaStorageSOPClassUID", "")
        source.ReferencedSOPInstanceUID = ds.get("SOPInstanceUID") or getattr(meta, "MediaStorageSOPInstanceUID", "")
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
        flavour = list(getattr(ds, "ImageType", []) or [])[2:] or ["OTHER"]  # value 3 is required for MR
        ds.ImageType = ["DERIVED", "SECONDARY", *flavour]
        old = str(getattr(ds, "SeriesDescription", "") or "").strip()
        ds.SeriesDescription = (f"{old} {description} x{scale} (cardiac-sr {model_name})").strip()[:64]
        ds.SeriesNumber = int(getattr(ds, "SeriesNumber", 0) or 0) + number_offset
        ds.DerivationDescription = f"{description} x{scale} in-plane by cardiac-sr model {model_name}"[:1024]
        ds.SourceImageSequence = [source]  # the input image this one was derived from
        ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
        ds.SoftwareVersions = f"cardiac-sr {__version__}"
        ds.file_meta.ImplementationClassUID = IMPLEMENTATION_UID
        ds.file_meta.ImplementationVersionName = f"CARDIACSR_{__version__.replace('.', '')}"[:16]
        if window is not None:
            ds.WindowCenter, ds.WindowWidth = f"{window[0]:.6g}", f"{window[1]:.6g}"
        ds.save_as(folder / series_file(s, t), enforce_file_format=True)


def write_prediction(volume: np.ndarray, study: Study, output: Path, fmt: str, scale: int, model_name: str,
                     description: str, dtype=None, progress: bool = True, overwrite: bool = True) -> None:
    """Write one volume (S, T, H, W) to ``output`` atomically in ``fmt``; ``overwrite=False``: an output that
    another run wrote meanwhile is an error, never replaced."""
    if fmt == "nifti":
        write_nifti(volume, study, output, scale, dtype, description, replace=overwrite, progress=progress)
    elif fmt == "npy":
        arr = volume.reshape(volume.shape[-2:]) if study.meta.get("ndim") == 2 else volume
        if study.meta.get("ndim") == 3:
            arr = volume.reshape((-1,) + volume.shape[-2:])
        save_npy(output, _cast_like(arr, dtype or np.float32), replace=overwrite)
    else:
        with atomic_dir(output, replace=overwrite) as tmp:
            write_dicom_series(volume, study, tmp, scale, model_name, description, progress)
