"""Readers: any input (a DICOM folder or root, a NIfTI file or folder, a .npy stack) -> studies.

The one entry point that picks the reader: :mod:`cardiac_sr.dicom` (DICOM series, Sunnybrook
contours) or :mod:`cardiac_sr.nifti` (NIfTI volumes, ACDC/M&Ms layouts and label maps), from
the format :func:`detect_format` sees; ``.npy`` stacks are read here.

``scan_studies``/``scan_input`` list a collection's studies as ``(patient id, load)``
pairs after reading only headers, so ``prepare``, ``predict`` and ``assess`` hold one
study in memory at a time however large the collection; ``read_*`` load them all.

The reader keeps what a writer needs (DICOM headers without pixel data, the
NIfTI header and affine) on the ``Study``, so :mod:`cardiac_sr.writers` never
re-reads a file.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Callable

import numpy as np

from .dicom import scan_dicom
from .errors import CardiacSRError
from .inputs import files_under, is_nifti, looks_like_dicom, require_path
from .nifti import scan_nifti
from .params import choice
from .study import Study

log = logging.getLogger(__name__)


def scan_studies(source: str, path: str | os.PathLike | None, contours=None,
                 strict: bool = False) -> list[tuple[str, Callable[[], Study]]]:
    """``(patient id, load)`` for each study of ``source`` 'dicom' or 'nifti' at ``path``; ``load()``
    reads the study (one at a time: memory stays bounded by the largest study), or returns ``None``
    with a warning for an unreadable volume when ``strict`` is off."""
    if path is None or str(path).strip() == "":
        raise CardiacSRError(f"source '{source}' needs a path (prepare.path)")
    choice(source, tuple(SCANNERS), "source", source="readers")
    return SCANNERS[source](path, contours, strict)


SCANNERS = {"dicom": lambda path, contours, strict: scan_dicom(path, contours=contours, strict=strict),
            "nifti": lambda path, contours, strict: scan_nifti(path, strict=strict)}


def detect_format(path: str | os.PathLike) -> str:
    """'nifti' for a NIfTI file or a folder holding one, 'npy' for .npy, else 'dicom'."""
    path = require_path(path)
    if path.is_file():
        if is_nifti(path):
            return "nifti"
        if path.suffix.lower() == ".npy":
            return "npy"
        return "dicom"
    files = files_under(path)
    nifti = [f for f in files if is_nifti(f)]
    dicom = [f for f in files if not is_nifti(f) and looks_like_dicom(f)]
    if nifti and dicom:  # decide by what the folder holds, and say what is left out
        fmt, ignored = ("nifti", dicom) if len(nifti) > len(dicom) else ("dicom", nifti)
        log.warning("%s: holds %d NIfTI and %d DICOM files; reading it as %s and ignoring %d file(s), e.g. %s",
                    path, len(nifti), len(dicom), fmt.upper() if fmt == "dicom" else "NIfTI", len(ignored), ignored[0])
        return fmt
    return "nifti" if nifti else "dicom"


def scan_input(path: str | os.PathLike, strict: bool = True) -> tuple[str, list[tuple[str, Callable]]]:
    """(format, ``(patient id, load)`` pairs) of a DICOM folder/root, a NIfTI file or a .npy stack:
    ``predict`` and ``assess`` read one study at a time."""
    fmt = detect_format(path)
    if fmt == "npy":
        return fmt, [(Path(path).stem, functools.partial(read_npy, path))]
    if fmt == "nifti":
        return fmt, scan_nifti(path, strict=strict, by_patient=False)  # one study per file
    return fmt, scan_dicom(path, strict=strict)


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
