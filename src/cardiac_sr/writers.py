"""Writers, the counterpart of :mod:`cardiac_sr.readers`: super-resolved volumes as NIfTI, DICOM or .npy.

Every writer streams: :func:`open_writer` takes a study's output images in (slice, phase)
order, a chunk at a time, as they are predicted, so memory never holds a whole
super-resolved study (a 512 x 512 x 30 x 40 cine is 10 GB at x4); the output
goes through a temporary name and a rename (:mod:`cardiac_sr.fileio`).  The format
writers: :class:`~cardiac_sr.nifti_writer.NiftiWriter`, :class:`~cardiac_sr.dicom_writer.DicomWriter`
and :class:`NpyWriter` here.
``--overwrite`` replaces only a file or a folder output this project wrote before
(:func:`check_output`, ``FOLDER_OUTPUTS``).

Geometry: the field of view stays at the same physical place.  Output pixel
centres sit at input coordinates ``(i + 0.5) / scale - 0.5`` (the convention
of the bicubic baseline), so in-plane spacing is divided by the scale and the
first voxel's centre (NIfTI affine origin, DICOM ImagePositionPatient) moves
by ``-(1 - 1/scale) / 2`` of an input pixel along each in-plane axis.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .dicom_writer import SERIES_FILE, DicomWriter
from .errors import CardiacSRError
from .fileio import atomic_dir, atomic_file, check_writable
from .nifti_writer import MARKER, NiftiWriter, gzip_file
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


def _cast_like(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(x), info.min, info.max).astype(dtype)
    return x.astype(dtype if dtype.kind == "f" else np.float32)


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
                gzip_file(raw, tmp, f"compress {output.name}", progress)
        finally:
            if compress:
                raw.unlink(missing_ok=True)


def _check_complete(writer, shape, output) -> None:
    """An output missing images is a bug, never a file: the block's caller wrote fewer than the study has."""
    if writer.images_written != shape[0] * shape[1]:
        raise CardiacSRError(f"{output}: {writer.images_written} of {shape[0] * shape[1]} images were written; "
                             "nothing was kept")
