"""NIfTI cine volumes (ACDC, M&Ms and plain 3D/4D files) -> :class:`~cardiac_sr.study.Study`.

``read_nifti(path)`` takes a 3D (x, y, slices) or 4D (x, y, slices,
phases) file, or a folder of them (ACDC ``patientNNN_4d.nii.gz`` or its
``patientNNN_frameXX.nii.gz`` ED/ES frames, which become the phases of one
study per patient; M&Ms ``*_sa.nii.gz``).  Label maps (``*_gt*``) are
never images: the one next to a volume gives its ROI (labels 1-3, the
heart), as the Sunnybrook contours do.  Image axes are kept as stored:
``image[s, t] = data[:, :, s, t]``, so writing back is the exact inverse.
Spacing comes from the header zooms; a header claiming more voxels than
its file holds is refused before anything is allocated.  The study keeps
the NIfTI header, affine and storage for :mod:`cardiac_sr.writers`.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import CardiacSRError
from .inputs import files_under, is_nifti, loaded, require_path
from .study import Study

log = logging.getLogger(__name__)


def _nifti_stem(path: Path) -> str:
    name = path.name
    for suf in (".nii.gz", ".nii"):
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return name


def _nifti_patient_id(path: Path) -> str:
    return re.sub(r"_(4d|sa)$", "", _nifti_stem(path))


_FRAME = re.compile(r"^(?P<patient>.+)_frame(?P<frame>\d+)$")  # ACDC: patientNNN_frameXX
HEART_LABELS = (1, 2, 3)  # ACDC and M&Ms label maps: RV cavity, myocardium, LV cavity


def _label_file(path: Path) -> Path | None:
    """The label map next to an image (ACDC/M&Ms: ``<name>_gt.nii.gz``), if there is one."""
    stem, suffix = _nifti_stem(path), path.name[len(_nifti_stem(path)):]
    for cand in (path.with_name(f"{stem}_gt{suffix}"), path.with_name(f"{stem}_gt.nii.gz"),
                 path.with_name(f"{stem}_gt.nii")):
        if cand.is_file():
            return cand
    return None


def _is_label_file(path: Path) -> bool:
    return _nifti_stem(path).endswith("_gt") or "_gt_" in path.name


def _label_roi(path: Path, image_shape: tuple) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(roi, has_roi) from the label map next to ``path`` (labels 1-3 = the heart), laid out like the image
    (slices, phases, rows, cols); (None, None) without one, or with one of another size (a warning)."""
    import nibabel as nib

    labels_path = _label_file(path)
    if labels_path is None and _nifti_stem(path).endswith("_4d"):  # ACDC: the labelled frames of the cine
        frames = sorted(path.parent.glob(_nifti_stem(path)[:-3] + "_frame*_gt.nii*"))
        labels = np.zeros(image_shape[2:] + image_shape[:1] + image_shape[1:2], np.uint8)  # (x, y, s, t)
        for f in frames:
            t = int(re.search(r"_frame(\d+)_gt", f.name).group(1)) - 1
            frame = np.asanyarray(nib.load(str(f)).dataobj)
            if 0 <= t < labels.shape[3] and frame.shape == labels.shape[:3]:
                labels[..., t] = frame
        labels_path = frames[0] if frames else None
    elif labels_path is not None:
        labels = np.asanyarray(nib.load(str(labels_path)).dataobj)
    if labels_path is None:
        return None, None
    labels = labels.reshape(labels.shape + (1,) * (4 - labels.ndim))
    roi = np.transpose(np.isin(np.rint(labels), HEART_LABELS), (2, 3, 0, 1)).astype(np.uint8)
    if roi.shape != tuple(image_shape):
        log.warning("%s: label map of shape %s does not match its image %s; not used as the ROI",
                    labels_path, roi.shape, tuple(image_shape))
        return None, None
    has_roi = roi.any(axis=(2, 3))
    return (roi, has_roi) if has_roi.any() else (None, None)


def _stored_bytes(path: Path, limit: int) -> int:
    """Bytes in the file once decompressed (a .gz is streamed, never held), counting stops past ``limit``."""
    import gzip

    if not path.name.lower().endswith(".gz"):
        return path.stat().st_size
    total = 0
    with gzip.open(path, "rb") as fh:
        while total <= limit:
            chunk = fh.read(1 << 24)
            if not chunk:
                break
            total += len(chunk)
    return total


def _check_claimed_size(img, path: Path) -> None:
    """A header may claim any size: check it against what the file holds before reading the voxels, so a
    600-byte file claiming 8 GB is one line, not an 8 GB allocation."""
    header = img.header
    claimed = int(np.prod(img.shape, dtype=np.int64)) * np.dtype(img.get_data_dtype()).itemsize
    offset = int(header.get("vox_offset", 352) or 352)
    needed = claimed + offset
    if path.name.lower().endswith(".gz"):
        with open(path, "rb") as fh:  # the gzip trailer's size (mod 2**32): a quick first look
            fh.seek(-4, os.SEEK_END)
            isize = int.from_bytes(fh.read(4), "little")
        if needed < (1 << 32) and isize == needed % (1 << 32):
            return
    held = _stored_bytes(path, needed)
    if held < needed:
        raise CardiacSRError(f"{path}: the header claims {img.shape} {img.get_data_dtype()} voxels "
                             f"({claimed / 2**20:.1f} MiB) but the file holds {max(held - offset, 0) / 2**20:.1f} MiB of "
                             "voxel data: a truncated or corrupt NIfTI file")


def read_nifti_file(path: str | os.PathLike) -> Study:
    """Read one 3D or 4D cine NIfTI volume."""
    import nibabel as nib

    path = require_path(path)
    try:
        img = nib.load(str(path))
        _check_claimed_size(img, path)
        data = np.asanyarray(img.dataobj)
    except CardiacSRError:
        raise
    except Exception as exc:
        raise CardiacSRError(f"{path}: not a readable NIfTI volume ({type(exc).__name__}: {exc})") from exc
    if data.dtype.names is not None:
        raise CardiacSRError(f"{path}: is an RGB/structured NIfTI; cardiac-sr needs single-channel MR images")
    if data.ndim == 2:
        data = data[:, :, None, None]
    elif data.ndim == 3:
        data = data[:, :, :, None]
    elif data.ndim != 4:
        raise CardiacSRError(f"{path}: has {data.ndim} dimensions {data.shape}; expected 2D, 3D (x, y, slices) "
                             "or 4D (x, y, slices, phases)")
    if min(data.shape[:2]) < 8:
        raise CardiacSRError(f"{path}: in-plane size {data.shape[:2]} is too small to super-resolve")
    zooms = [float(z) for z in img.header.get_zooms()[:3]] + [1.0] * 3
    image = np.transpose(data.astype(np.float32), (2, 3, 0, 1))
    roi, has_roi = _label_roi(path, image.shape)
    return Study(
        patient_id=_nifti_patient_id(path),
        image=image,
        spacing=(zooms[0], zooms[1], zooms[2]),
        roi=roi,
        has_roi=has_roi,
        sources=np.full(image.shape[:2], str(path), dtype=object),
        meta={"affine": img.affine.tolist(), "nifti_header": img.header.copy(),
              "nifti_dtype": str(img.get_data_dtype()), "nifti_ndim": len(img.shape),
              "nifti_scaling": (float(getattr(img.dataobj, "slope", 1.0)), float(getattr(img.dataobj, "inter", 0.0)))},
    )


def _check_nifti_header(path: Path) -> None:
    """What can be checked of a NIfTI file without reading its voxels (raise CardiacSRError)."""
    import nibabel as nib

    try:
        img = nib.load(str(path))
    except Exception as exc:
        raise CardiacSRError(f"{path}: not a readable NIfTI volume ({type(exc).__name__}: {exc})") from exc
    if not 2 <= len(img.shape) <= 4:
        raise CardiacSRError(f"{path}: has {len(img.shape)} dimensions {img.shape}; expected 2D, 3D (x, y, slices) "
                             "or 4D (x, y, slices, phases)")


def nifti_files(root: Path) -> list[Path]:
    """The cine volumes of a NIfTI folder: label maps (``*_gt*``) are never images; where a patient has a
    full cine (ACDC ``_4d``, M&Ms ``_sa``) its single-frame copies (``_frameXX``, ``_sa_ED``) are left out."""
    files = [f for f in files_under(root) if is_nifti(f) and not _is_label_file(f)]
    cines = {(f.parent, _CINE.sub("", _nifti_stem(f))) for f in files if _CINE.search(_nifti_stem(f))}
    return [f for f in files if _CINE.search(_nifti_stem(f)) or
            (f.parent, _FRAME_OF.sub("", _nifti_stem(f))) not in cines]


_CINE = re.compile(r"_(4d|sa)$")                   # a patient's full cine: ACDC _4d, M&Ms _sa
_FRAME_OF = re.compile(r"_(frame\d+|sa_E[DS])$")  # one frame of it: ACDC _frameXX, M&Ms _sa_ED / _sa_ES


def scan_nifti(path: str | os.PathLike, strict: bool = False,
               by_patient: bool = True) -> list[tuple[str, Callable[[], Study]]]:
    """A NIfTI file, or every cine NIfTI under a folder (label files skipped), as ``(patient id, load)``
    pairs: headers checked now, voxels read when ``load()`` is called.  ``by_patient``: an ACDC patient's
    frames (``patientNNN_frameXX``, ED and ES) are one study with the frames as phases (prepare, inspect);
    otherwise each file is its own study (predict, assess: one output per input file)."""
    root = require_path(path)
    if root.is_file():
        return [(_nifti_patient_id(root), functools.partial(read_nifti_file, root))]
    files = nifti_files(root)
    if not files:
        raise CardiacSRError(f"{root}: no NIfTI (.nii, .nii.gz) volumes found")
    found = []
    for f in files:
        try:
            _check_nifti_header(f)
        except CardiacSRError as exc:
            if strict:
                raise
            log.warning("skipping %s", exc)
            continue
        found.append((_nifti_patient_id(f), f))
    if not found:
        raise CardiacSRError(f"{root}: no readable NIfTI volume")
    if not by_patient:
        return [(pid, functools.partial(_load_nifti, f, strict)) for pid, f in found]
    groups: dict[str, list[Path]] = defaultdict(list)
    for pid, f in found:
        m = _FRAME.match(pid)
        groups[f"{f.parent}/{m.group('patient')}" if m else f"{f}"].append(f)
    pairs = []
    for key, fs in groups.items():
        m = _FRAME.match(_nifti_stem(fs[0]))
        if m is None:
            pairs.append((_nifti_patient_id(fs[0]), functools.partial(_load_nifti, fs[0], strict)))
        else:
            fs = sorted(fs, key=lambda f: int(_FRAME.match(_nifti_stem(f)).group("frame")))
            pairs.append((m.group("patient"), functools.partial(_load_frames, m.group("patient"), fs, strict)))
    return sorted(pairs, key=lambda pair: pair[0])


def _load_frames(pid: str, files: list[Path], strict: bool) -> Study | None:
    """An ACDC patient's single-frame volumes (ED, ES) as one study whose phases are the frames, in frame
    order; frames of another geometry (size, spacing, affine) are an error (a warning unless ``strict``)."""
    frames = [_load_nifti(f, strict) for f in files]
    frames = [(f, st) for f, st in zip(files, frames) if st is not None]
    if not frames:
        return None
    first_file, first = frames[0]
    for f, st in frames[1:]:
        if st.image.shape[::2] != first.image.shape[::2] or st.image.shape[1] != 1 or \
                not np.allclose(st.meta["affine"], first.meta["affine"], atol=1e-3):
            message = (f"{f}: its geometry ({st.image.shape[0]} slices of {st.shape2d}, affine) differs from "
                       f"{first_file.name}; the frames of patient {pid} cannot be one study")
            if strict:
                raise CardiacSRError(message)
            log.warning("skipping patient %s: %s", pid, message)
            return None
    image = np.concatenate([st.image for _, st in frames], axis=1)
    rois = [st.roi if st.roi is not None else np.zeros(st.image.shape, np.uint8) for _, st in frames]
    has = [st.has_roi if st.has_roi is not None else np.zeros(st.image.shape[:2], bool) for _, st in frames]
    has_roi = np.concatenate(has, axis=1)
    meta = dict(first.meta, frames=[int(_FRAME.match(_nifti_stem(f)).group("frame")) for f, _ in frames])
    return Study(patient_id=pid, image=image, spacing=first.spacing,
                 roi=np.concatenate(rois, axis=1) if has_roi.any() else None,
                 has_roi=has_roi if has_roi.any() else None,
                 sources=np.concatenate([st.sources for _, st in frames], axis=1), meta=meta)


def _load_nifti(path: Path, strict: bool) -> Study | None:
    """One volume of a folder; ``None`` (with a warning) when it cannot be read and ``strict`` is off."""
    try:
        return read_nifti_file(path)
    except CardiacSRError as exc:
        if strict:
            raise
        log.warning("skipping %s", exc)
        return None


def read_nifti(path: str | os.PathLike, strict: bool = False) -> list[Study]:
    """Read a NIfTI file, or every cine NIfTI under a folder (label files skipped)."""
    return loaded(scan_nifti(path, strict), path)
