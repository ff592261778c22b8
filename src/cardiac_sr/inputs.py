"""Input paths: does it exist, which files a folder holds, and what format a file is (DICOM, NIfTI).

Shared by :mod:`cardiac_sr.dicom`, :mod:`cardiac_sr.nifti` and :mod:`cardiac_sr.readers`
(which picks the reader), so that each fact about an input path is decided in one place.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import CardiacSRError
from .study import Study

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def require_path(path: str | os.PathLike) -> Path:
    if path is None or str(path).strip() == "":
        raise CardiacSRError("empty input path")
    path = Path(path)
    if not path.exists():
        raise CardiacSRError(f"{path}: no such file or folder")
    return path


def files_under(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise CardiacSRError(f"{path}: folder is empty")
    return files


def looks_like_dicom(path: Path) -> bool:
    """True for files with the DICOM preamble or a .dcm/.ima suffix (or no suffix)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    if len(head) == 132 and head[128:132] == b"DICM":
        return True
    return path.suffix.lower() in (".dcm", ".ima", ".dicom")


def is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)



def loaded(pairs: list, path) -> list[Study]:
    studies = [st for st in (load() for _, load in pairs) if st is not None]
    if not studies:
        raise CardiacSRError(f"{path}: no readable study")
    return studies
