"""DICOM cine series (and Sunnybrook contours) -> :class:`~cardiac_sr.study.Study`.

``read_dicom(path)`` takes one study folder or a root of patient folders
(Sunnybrook-style ``SCDxxxxxxx/``, Kaggle Data Science Bowl
``<patient>/study/sax_*/``) and never trusts file names: images are grouped
by patient (PatientID, else the top folder under the root), then by slice
position (ImagePositionPatient projected on the slice normal, else
SliceLocation), and phases are ordered by TriggerTime.  Rescale
slope/intercept are applied; pixel spacing and slice spacing are kept.
Duplicates are dropped once (conflicting ones are an error), orientations
are never merged, DICOMDIR and non-image objects are skipped, enhanced
(multi-frame) MR is refused.

Files that are not DICOM at all (a README, a CSV) are ignored.  A file
that *is* DICOM but cannot be decoded is skipped with a warning that
names it (``strict=True`` makes it an error).  An RGB image is always an
error: cine bSSFP magnitude images are single-channel.

Sunnybrook contours (``contours/SC-HF-I-k/o-contours/IM-0001-NNNN-ocontour-manual.txt``,
NNNN = InstanceNumber, ``link.csv`` mapping folder id to original id) are
found next to the studies automatically and become ROI masks (the filled
epicardial o-contour).

``scan_dicom`` lists a collection's studies as ``(patient id, load)`` pairs after
reading only headers; the study keeps its DICOM headers (without pixel data)
for :mod:`cardiac_sr.writers`.
"""

from __future__ import annotations

import csv
import functools
import logging
import os
import re
import warnings
from collections import Counter, defaultdict
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import CardiacSRError
from .inputs import files_under, loaded, looks_like_dicom, require_path
from .study import Study

log = logging.getLogger(__name__)


class ColourImage(CardiacSRError):
    """An RGB/YBR/palette DICOM image: always an error, never a skipped file (cine bSSFP is single-channel)."""


def _read_one_dicom(path: Path):
    """Read one DICOM image -> (dataset without its pixel data, its pixels decoded as stored) or raise
    CardiacSRError.  The stored values (int16 or uint16 for MR: half of float32) are kept until the study is
    assembled, where :func:`_rescaled` turns each into float32 in place in the study's array."""
    import pydicom
    from pydicom.pixels import pixel_array

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path)
            if int(getattr(ds, "SamplesPerPixel", 1)) != 1 or str(
                getattr(ds, "PhotometricInterpretation", "MONOCHROME2")
            ).upper().startswith(("RGB", "YBR", "PALETTE")):
                raise ColourImage(
                    f"{path}: is a colour ({getattr(ds, 'PhotometricInterpretation', '?')}) image; "
                    "cardiac-sr needs single-channel MR magnitude images"
                )
            pixels = pixel_array(ds)  # decoded without a copy cached on the dataset
    except CardiacSRError:
        raise
    except Exception as exc:  # pydicom raises many types for broken files
        raise CardiacSRError(f"{path}: not a readable DICOM image ({type(exc).__name__}: {exc})") from exc
    if pixels.ndim != 2:
        raise CardiacSRError(f"{path}: expected one 2D image per file, got pixel array of shape {pixels.shape}")
    del ds.PixelData  # the header is what is kept (for the writers); the pixels are returned decoded
    return ds, pixels


def _rescaled(ds, pixels: np.ndarray) -> np.ndarray:
    """Stored pixels -> float32 values in the modality's units (RescaleSlope, RescaleIntercept)."""
    slope = float(getattr(ds, "RescaleSlope", 1) or 1)
    intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
    return pixels.astype(np.float32) * slope + intercept


def _slice_position(ds, path: Path) -> float:
    ipp = getattr(ds, "ImagePositionPatient", None)
    iop = getattr(ds, "ImageOrientationPatient", None)
    if ipp is not None and iop is not None and len(ipp) == 3 and len(iop) == 6:
        o = np.asarray(iop, float)
        normal = np.cross(o[:3], o[3:])
        return float(np.dot(normal, np.asarray(ipp, float)))
    if getattr(ds, "SliceLocation", None) is not None:
        return float(ds.SliceLocation)
    raise CardiacSRError(f"{path}: has neither ImagePositionPatient/ImageOrientationPatient nor SliceLocation")


def _patient_key(ds, path: Path, root: Path) -> str:
    pid = str(getattr(ds, "PatientID", "") or "").strip()
    if pid:
        return pid
    rel = path.relative_to(root) if root.is_dir() else Path(path.name)
    return rel.parts[0] if len(rel.parts) > 1 else root.name


def _read_dicom_header(path: Path):
    """The dataset of one DICOM file without its pixel data, or raise CardiacSRError."""
    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as exc:  # pydicom raises many types for broken files
        raise CardiacSRError(f"{path}: not a readable DICOM image ({type(exc).__name__}: {exc})") from exc
    sop_class = str(ds.get("SOPClassUID", "") or getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", ""))
    if sop_class == DICOMDIR_CLASS or "DirectoryRecordSequence" in ds:
        raise NotAnImage(f"{path}: a DICOMDIR (the index of a CD/DVD export)")
    if "Rows" not in ds or "Columns" not in ds:
        if sop_class and "PixelData" not in ds and "Image" not in _uid_name(sop_class):
            raise NotAnImage(f"{path}: a DICOM {_uid_name(sop_class) or sop_class} object, not an image")
        raise CardiacSRError(f"{path}: not a readable DICOM image (no image rows and columns in its header)")
    if int(ds.get("NumberOfFrames", 1) or 1) > 1 or sop_class in ENHANCED_CLASSES:
        raise CardiacSRError(f"{path}: is an enhanced (multi-frame) DICOM image with {ds.get('NumberOfFrames', '?')} "
                             "frames in one file, which cardiac-sr does not read; export the series as one image "
                             "per file (classic MR), or convert it to NIfTI with dcm2niix")
    return ds


DICOMDIR_CLASS = "1.2.840.10008.1.3.10"  # Media Storage Directory Storage
ENHANCED_CLASSES = {"1.2.840.10008.5.1.4.1.1.4.1", "1.2.840.10008.5.1.4.1.1.4.4"}  # Enhanced MR, Legacy Converted


class NotAnImage(CardiacSRError):
    """A DICOM file that holds no image (a DICOMDIR, a report, a presentation state): skipped, never an error."""


def _uid_name(uid: str) -> str:
    from pydicom.uid import UID

    return str(UID(uid).name) if uid else ""


def scan_dicom(path: str | os.PathLike, contours: str | os.PathLike | None = None,
               strict: bool = False) -> list[tuple[str, Callable[[], Study]]]:
    """The cine studies under ``path`` as ``(patient id, load)`` pairs, sorted by patient: the headers
    are read now (to group the files by patient), the pixels only when ``load()`` is called, so a
    large collection is read one study at a time."""
    import pydicom

    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE  # real UIDs are often malformed
    root = require_path(path)
    if root.is_file() and not looks_like_dicom(root):
        raise CardiacSRError(f"{root}: not a DICOM file (no DICM preamble); expected a DICOM file or folder, "
                             "a NIfTI volume (.nii, .nii.gz) or a .npy stack")
    candidates = [f for f in files_under(root) if looks_like_dicom(f)]
    if not candidates:
        raise CardiacSRError(f"{root}: no DICOM files found")
    files: dict[str, list[Path]] = defaultdict(list)
    not_images = []
    for f in candidates:
        try:
            ds = _read_dicom_header(f)
        except NotAnImage as exc:
            not_images.append(str(exc))
            continue
        except CardiacSRError as exc:
            if strict:
                raise
            log.warning("skipping %s", exc)
            continue
        files[_patient_key(ds, f, root)].append(f)
    if not_images:
        log.info("ignoring %d DICOM file(s) that hold no image, e.g. %s", len(not_images), not_images[0])
    if not files:
        raise CardiacSRError(f"{root}: no readable DICOM image")
    contour_index = _find_contours(root, contours)
    return [(pid, functools.partial(_load_dicom_study, pid, fs, contour_index, strict))
            for pid, fs in sorted(files.items())]


def _load_dicom_study(pid: str, files: list[Path], contour_index: dict, strict: bool) -> Study | None:
    items = []
    for f in files:
        try:
            ds, pixels = _read_one_dicom(f)
        except CardiacSRError as exc:
            if strict or isinstance(exc, ColourImage):  # never skipped: a colour series is the wrong input
                raise
            log.warning("skipping %s", exc)
            continue
        items.append((ds, pixels, f))
    if not items:
        if strict:
            raise CardiacSRError(f"patient {pid}: no readable DICOM image among its {len(files)} files")
        log.warning("skipping patient %s: no readable DICOM image among its %d files", pid, len(files))
        return None
    return _assemble_dicom_study(pid, _one_orientation(pid, _without_duplicates(pid, items), strict), contour_index)


def _without_duplicates(pid: str, items: list[tuple]) -> list[tuple]:
    """Drop copies of one image (the same SOPInstanceUID, or the same pixels at the same position, time and
    series), saying so once; two different images at the same position, time and series are an error naming
    both files."""
    seen: dict[tuple, tuple] = {}
    keep, dropped = [], []
    for it in items:
        ds, pixels, f = it
        uid = str(getattr(ds, "SOPInstanceUID", "") or "")
        place = (str(getattr(ds, "SeriesInstanceUID", "")), round(_slice_position(ds, f), 1),
                 getattr(ds, "TriggerTime", None), tuple(np.round(np.asarray(getattr(ds, "ImageOrientationPatient", []), float), 3)))
        first = seen.get(("uid", uid)) if uid else None
        if first is None and place[2] is not None:
            first = seen.get(("place", place))
            if first is not None and not (first[1].shape == pixels.shape and
                                          np.array_equal(_rescaled(first[0], first[1]), _rescaled(ds, pixels))):
                raise CardiacSRError(f"{f}: a different image at the same slice position ({place[1]} mm), trigger "
                                     f"time ({place[2]} ms) and series as {first[2]}; remove the one that does not "
                                     "belong to the cine series")
        if first is not None:
            dropped.append((f, first[2]))
            continue
        if uid:
            seen[("uid", uid)] = it
        if place[2] is not None:
            seen[("place", place)] = it
        keep.append(it)
    if dropped:
        log.warning("patient %s: ignoring %d duplicate image(s), e.g. %s (a copy of %s)", pid, len(dropped),
                    dropped[0][0], dropped[0][1])
    return keep


def _orientation_label(group: list[tuple]) -> str:
    ds = group[0][0]
    series = sorted({str(getattr(it[0], "SeriesNumber", "?")) for it in group})
    desc = str(getattr(ds, "SeriesDescription", "") or "").strip()
    positions = len({round(_slice_position(it[0], it[2]), 1) for it in group})
    return (f"series {','.join(series[:4])}{'...' if len(series) > 4 else ''}{f' {desc!r}' if desc else ''}: "
            f"{len(group)} images at {positions} positions in {Path(group[0][2]).parent}")


def _one_orientation(pid: str, items: list[tuple], strict: bool) -> list[tuple]:
    """The images of one stack orientation: images of another orientation (a long-axis series beside the
    short-axis stack) are never merged into it.  With several, ``strict`` (predict, assess) refuses with a
    line that lists them; otherwise (prepare, inspect) the stack with the most slice positions is kept and
    the others are named in a warning."""
    groups: list[list[tuple]] = []
    for it in items:
        iop = np.asarray(getattr(it[0], "ImageOrientationPatient", [0] * 6), float)
        for g in groups:
            if np.abs(np.asarray(getattr(g[0][0], "ImageOrientationPatient", [0] * 6), float) - iop).max() < 0.01:
                g.append(it)
                break
        else:
            groups.append([it])
    if len(groups) == 1:
        return items
    groups.sort(key=lambda g: (len({round(_slice_position(it[0], it[2]), 1) for it in g}), len(g)), reverse=True)
    listing = "; ".join(_orientation_label(g) for g in groups)
    if strict:
        raise CardiacSRError(f"patient {pid}: images in {len(groups)} orientations, which are not one cine stack "
                             f"({listing}); give the folder of one orientation's series")
    log.warning("patient %s: images in %d orientations; keeping the stack with the most slice positions (%s)",
                pid, len(groups), listing)
    return groups[0]


def read_dicom(path: str | os.PathLike, contours: str | os.PathLike | None = None,
               strict: bool = False) -> list[Study]:
    """Read every cine study under ``path`` (see the module docstring)."""
    return loaded(scan_dicom(path, contours, strict), path)


def _assemble_dicom_study(pid: str, items: list[tuple], contour_index: dict) -> Study:
    by_pos: dict[float, list[tuple]] = defaultdict(list)
    for ds, pixels, f in items:
        by_pos[round(_slice_position(ds, f), 1)].append((ds, pixels, f))
    positions = sorted(by_pos)
    slices = []
    for pos in positions:
        group = by_pos[pos]
        series = defaultdict(list)
        for it in group:
            series[str(getattr(it[0], "SeriesInstanceUID", ""))].append(it)
        if len(series) > 1:  # repeated acquisitions at one position: keep the largest series
            keep = max(series.values(), key=len)
            log.warning("patient %s: %d series at slice position %.1f mm; keeping the one with %d images",
                        pid, len(series), pos, len(keep))
            group = keep
        group.sort(key=lambda it: (float(getattr(it[0], "TriggerTime", 0) or 0), int(getattr(it[0], "InstanceNumber", 0) or 0)))
        slices.append(group)
    shapes = Counter(it[1].shape for g in slices for it in g)
    if len(shapes) > 1:
        usual = shapes.most_common(1)[0][0]
        odd = next(it for g in slices for it in g if it[1].shape != usual)
        raise CardiacSRError(f"{odd[2]}: image size {odd[1].shape} differs from the {shapes[usual]} other images "
                             f"of patient {pid} ({usual}); a study must have one matrix size")
    n_phases = min(len(g) for g in slices)
    if any(len(g) != n_phases for g in slices):
        log.warning("patient %s: slices have different phase counts %s; keeping the first %d phases",
                    pid, sorted({len(g) for g in slices}), n_phases)
    image = np.empty((len(slices), n_phases) + shapes.most_common(1)[0][0], np.float32)  # one copy, filled in place
    for s, g in enumerate(slices):
        for t in range(n_phases):
            image[s, t] = _rescaled(g[t][0], g[t][1])
    first = slices[0][0][0]
    row_mm, col_mm = (float(v) for v in getattr(first, "PixelSpacing", [1.0, 1.0]))
    if len(positions) > 1:
        slice_mm = float(np.median(np.diff(positions)))
    else:
        slice_mm = float(getattr(first, "SpacingBetweenSlices", 0) or getattr(first, "SliceThickness", 0) or 1.0)
    sources = np.array([[str(g[t][2]) for t in range(n_phases)] for g in slices], dtype=object)
    has_roi = np.zeros(image.shape[:2], bool)
    roi = None  # allocated at the first contour: a study without contours needs no mask the size of its image
    for s, g in enumerate(slices):
        for t in range(n_phases):
            key = (pid, int(getattr(g[t][0], "InstanceNumber", -1) or -1))
            if key in contour_index:
                roi = np.zeros(image.shape, np.uint8) if roi is None else roi
                roi[s, t] = _polygon_mask(contour_index[key], image.shape[2:])
                has_roi[s, t] = True
    return Study(
        patient_id=pid,
        image=image,
        spacing=(row_mm, col_mm, abs(slice_mm)),
        roi=roi if has_roi.any() else None,
        has_roi=has_roi if has_roi.any() else None,
        sources=sources,
        meta={
            "slice_positions_mm": positions,
            "slice_thickness_mm": float(getattr(first, "SliceThickness", 0) or 0),
            "trigger_times_ms": [[float(getattr(g[t][0], "TriggerTime", 0) or 0) for t in range(n_phases)] for g in slices],
            "dicom_headers": _headers(slices, n_phases),  # what a writer copies: no file is read twice
        },
    )


def _headers(slices: list, n_phases: int) -> np.ndarray:
    """The (slices, phases) datasets, already without their pixel data (:func:`_read_one_dicom`)."""
    out = np.empty((len(slices), n_phases), dtype=object)
    for s, group in enumerate(slices):
        for t in range(n_phases):
            out[s, t] = group[t][0]
    return out


# ------------------------------------------------------------------- contours
_CONTOUR_RE = re.compile(r"IM-\d+-(\d+)-ocontour-manual\.txt$")


def read_contour(path: str | os.PathLike) -> np.ndarray:
    """Read one Sunnybrook contour file: ``x y`` pixel coordinates, one point a line."""
    path = Path(path)
    try:
        pts = np.loadtxt(path, dtype=float, ndmin=2)
    except ValueError as exc:
        raise CardiacSRError(f"{path}: not a contour file of 'x y' lines ({exc})") from exc
    if pts.shape[1] != 2 or len(pts) < 3:
        raise CardiacSRError(f"{path}: a contour needs at least 3 'x y' points, got shape {pts.shape}")
    return pts


def _polygon_mask(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    from skimage.draw import polygon

    mask = np.zeros(shape, np.uint8)
    rr, cc = polygon(points[:, 1], points[:, 0], shape)
    mask[rr, cc] = 1
    return mask


def _find_contours(root: Path, contours: str | os.PathLike | None) -> dict:
    """Map (patient id, InstanceNumber) -> o-contour points, from a Sunnybrook contour folder."""
    folder = Path(contours) if contours else None
    if folder is None:
        for cand in (root / "contours", root.parent / "contours"):
            if cand.is_dir():
                folder = cand
                break
    if folder is None:
        return {}
    if not folder.is_dir():
        raise CardiacSRError(f"{folder}: contour folder not found")
    link = {}
    link_csv = folder.parent / "link.csv"
    if link_csv.is_file():
        with open(link_csv, newline="") as fh:
            for row in csv.DictReader(fh):
                link[row["original_id"].strip()] = row["patient_id"].strip()
    index = {}
    for f in sorted(folder.rglob("*-ocontour-manual.txt")):
        m = _CONTOUR_RE.search(f.name)
        original = f.parent.parent.name  # contours/SC-HF-I-1/o-contours/<file>
        if m:
            index[(link.get(original, original), int(m.group(1)))] = read_contour(f)
    return index
