"""Readers for real cine studies: DICOM series and NIfTI volumes.

DICOM
    ``read_dicom(path)`` takes one study folder or a root of patient folders
    (Sunnybrook-style ``SCDxxxxxxx/``, Kaggle Data Science Bowl
    ``<patient>/study/sax_*/``) and never trusts file names: images are grouped
    by patient (PatientID, else the top folder under the root), then by slice
    position (ImagePositionPatient projected on the slice normal, else
    SliceLocation), and phases are ordered by TriggerTime.  Rescale
    slope/intercept are applied; pixel spacing and slice spacing are kept.

    Files that are not DICOM at all (a README, a CSV) are ignored.  A file
    that *is* DICOM but cannot be decoded is skipped with a warning that
    names it (``strict=True`` makes it an error).  An RGB image is always an
    error: cine bSSFP magnitude images are single-channel.

    Sunnybrook contours (``contours/SC-HF-I-k/o-contours/IM-0001-NNNN-ocontour-manual.txt``,
    NNNN = InstanceNumber, ``link.csv`` mapping folder id to original id) are
    found next to the studies automatically and become ROI masks (the filled
    epicardial o-contour).

NIfTI
    ``read_nifti(path)`` takes a 3D (x, y, slices) or 4D (x, y, slices,
    phases) file, or a folder of them (ACDC ``patientNNN_4d.nii.gz`` or its
    ``patientNNN_frameXX.nii.gz`` ED/ES frames, which become the phases of one
    study per patient; M&Ms ``*_sa.nii.gz``).  Label maps (``*_gt*``) are
    never images: the one next to a volume gives its ROI (labels 1-3, the
    heart), as the Sunnybrook contours do.  Image axes are kept as stored:
    ``image[s, t] = data[:, :, s, t]``, so writing back is the exact inverse.
    Spacing comes from the header zooms; a header claiming more voxels than
    its file holds is refused before anything is allocated.

``scan_dicom``/``scan_nifti``/``scan_studies`` list a collection's studies as
``(patient id, load)`` pairs after reading only headers, so ``prepare`` holds one
study in memory at a time however large the collection; ``read_*`` load them all.

The reader keeps what a writer needs (DICOM headers without pixel data, the
NIfTI header and affine) on the ``Study``, so :mod:`cardiac_sr.writers` never
re-reads a file.  The module is about 760 lines on purpose: it is the one
place that turns files (DICOM with its duplicates, orientations and
transfer syntaxes, Sunnybrook contours, NIfTI with ACDC/M&Ms layouts and
label maps, ``.npy``) into a ``Study``.  Its natural split, a ``dicom`` and a
``nifti`` module under this one, is left for the next change that re-runs
``prepare`` anyway (it changes the stage's dependencies in ``dvc.yaml``).
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
from .params import choice
from .study import Study

log = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def _require_path(path: str | os.PathLike) -> Path:
    if path is None or str(path).strip() == "":
        raise CardiacSRError("empty input path")
    path = Path(path)
    if not path.exists():
        raise CardiacSRError(f"{path}: no such file or folder")
    return path


def _files_under(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise CardiacSRError(f"{path}: folder is empty")
    return files


# --------------------------------------------------------------------------- DICOM
def _looks_like_dicom(path: Path) -> bool:
    """True for files with the DICOM preamble or a .dcm/.ima suffix (or no suffix)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    if len(head) == 132 and head[128:132] == b"DICM":
        return True
    return path.suffix.lower() in (".dcm", ".ima", ".dicom")


def _read_one_dicom(path: Path):
    """Read one DICOM image -> (dataset, float32 pixels) or raise CardiacSRError."""
    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path)
            if int(getattr(ds, "SamplesPerPixel", 1)) != 1 or str(
                getattr(ds, "PhotometricInterpretation", "MONOCHROME2")
            ).upper().startswith(("RGB", "YBR", "PALETTE")):
                raise CardiacSRError(
                    f"{path}: is a colour ({getattr(ds, 'PhotometricInterpretation', '?')}) image; "
                    "cardiac-sr needs single-channel MR magnitude images"
                )
            pixels = ds.pixel_array
    except CardiacSRError:
        raise
    except Exception as exc:  # pydicom raises many types for broken files
        raise CardiacSRError(f"{path}: not a readable DICOM image ({type(exc).__name__}: {exc})") from exc
    if pixels.ndim != 2:
        raise CardiacSRError(f"{path}: expected one 2D image per file, got pixel array of shape {pixels.shape}")
    slope = float(getattr(ds, "RescaleSlope", 1) or 1)
    intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
    return ds, pixels.astype(np.float32) * slope + intercept


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
    root = _require_path(path)
    if root.is_file() and not _looks_like_dicom(root):
        raise CardiacSRError(f"{root}: not a DICOM file (no DICM preamble); expected a DICOM file or folder, "
                             "a NIfTI volume (.nii, .nii.gz) or a .npy stack")
    candidates = [f for f in _files_under(root) if _looks_like_dicom(f)]
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
            if strict or "colour" in str(exc):
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
            if first is not None and not (first[1].shape == pixels.shape and np.array_equal(first[1], pixels)):
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
    return _loaded(scan_dicom(path, contours, strict), path)


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
    image = np.stack([np.stack([g[t][1] for t in range(n_phases)]) for g in slices]).astype(np.float32)
    first = slices[0][0][0]
    row_mm, col_mm = (float(v) for v in getattr(first, "PixelSpacing", [1.0, 1.0]))
    if len(positions) > 1:
        slice_mm = float(np.median(np.diff(positions)))
    else:
        slice_mm = float(getattr(first, "SpacingBetweenSlices", 0) or getattr(first, "SliceThickness", 0) or 1.0)
    sources = np.array([[str(g[t][2]) for t in range(n_phases)] for g in slices], dtype=object)
    roi = np.zeros(image.shape, np.uint8)
    has_roi = np.zeros(image.shape[:2], bool)
    for s, g in enumerate(slices):
        for t in range(n_phases):
            key = (pid, int(getattr(g[t][0], "InstanceNumber", -1) or -1))
            if key in contour_index:
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
    """The (slices, phases) datasets without their pixel data."""
    out = np.empty((len(slices), n_phases), dtype=object)
    for s, group in enumerate(slices):
        for t in range(n_phases):
            ds = group[t][0]
            if "PixelData" in ds:
                del ds.PixelData
            out[s, t] = ds
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


# --------------------------------------------------------------------------- NIfTI
def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


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

    path = _require_path(path)
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
    files = [f for f in _files_under(root) if _is_nifti(f) and not _is_label_file(f)]
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
    root = _require_path(path)
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
    return _loaded(scan_nifti(path, strict), path)


def _loaded(pairs: list, path) -> list[Study]:
    studies = [st for st in (load() for _, load in pairs) if st is not None]
    if not studies:
        raise CardiacSRError(f"{path}: no readable study")
    return studies


def scan_studies(source: str, path: str | os.PathLike | None, contours=None,
                 strict: bool = False) -> list[tuple[str, Callable[[], Study]]]:
    """``(patient id, load)`` for each study of ``source`` 'dicom' or 'nifti' at ``path``; ``load()``
    reads the study (one at a time: memory stays bounded by the largest study), or returns ``None``
    with a warning for an unreadable volume when ``strict`` is off."""
    if path is None or str(path).strip() == "":
        raise CardiacSRError(f"source '{source}' needs a path (prepare.path)")
    if source == "dicom":
        return scan_dicom(path, contours=contours, strict=strict)
    if source == "nifti":
        return scan_nifti(path, strict=strict)
    choice(source, ("dicom", "nifti"), "source", source="readers")
    raise AssertionError(source)  # both valid sources are read above


def read_studies(source: str, path: str | os.PathLike | None, contours=None, strict: bool = False) -> list[Study]:
    """Read studies from ``source`` 'dicom' or 'nifti' at ``path``."""
    return _loaded(scan_studies(source, path, contours, strict), path)


def detect_format(path: str | os.PathLike) -> str:
    """'nifti' for a NIfTI file or a folder holding one, 'npy' for .npy, else 'dicom'."""
    path = _require_path(path)
    if path.is_file():
        if _is_nifti(path):
            return "nifti"
        if path.suffix.lower() == ".npy":
            return "npy"
        return "dicom"
    files = _files_under(path)
    nifti = [f for f in files if _is_nifti(f)]
    dicom = [f for f in files if not _is_nifti(f) and _looks_like_dicom(f)]
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
