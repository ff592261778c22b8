"""The dataset layout and normalisation shared by every stage, the figures and inference.

A dataset folder (``data/prepared``, ``data/degraded``, ``data/external``) holds::

    {split}_hr.npy    float32 (N, H, W), intensities in [0, 1]      (prepare, external)
    {split}_roi.npy   uint8   (N, H, W), cardiac ROI (0 where unknown) (prepare, external)
    {split}_lr.npy    float32 (N, H/s, W/s), the low-resolution input  (degrade, external)
    {split}_bicubic.npy float32 (N, H, W), the bicubic baseline          (degrade, external)
    manifest.csv      one row per slice: split, index, patient, slice, phase, spacing,
                      source file, normalisation (intensity_offset, intensity_scale), has_roi
    info.json         patients per split, counts, the params used

Normalisation is per volume (one patient's whole cine study):
``x01 = clip((x - offset) / scale, 0, 1)`` with ``offset = min(0, min x)`` and
``scale`` = the ``percentile``-th percentile of ``x - offset``.  Both are
recorded so predictions can be mapped back: ``x = x01 * scale + offset``.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .errors import CardiacSRError
from .names import EXTERNAL
from .study import Study

MANIFEST_FIELDS = [
    "split", "index", "patient", "slice", "phase", "rows", "columns",
    "spacing_row_mm", "spacing_col_mm", "spacing_slice_mm", "source_file",
    "intensity_offset", "intensity_scale", "has_roi",
]




@dataclass
class Normalisation:
    offset: float
    scale: float

    def apply(self, x: np.ndarray) -> np.ndarray:
        return np.clip((x - self.offset) / self.scale, 0.0, 1.0).astype(np.float32)

    def invert(self, x01: np.ndarray) -> np.ndarray:
        return x01 * self.scale + self.offset


def fit_normalisation(volume: np.ndarray, percentile: float = 99.5, name: str = "volume") -> Normalisation:
    """Per-volume normalisation: offset = min(0, min), scale = percentile of (volume - offset)."""
    if not 50.0 < percentile <= 100.0:
        raise CardiacSRError(f"prepare.percentile must be in (50, 100], got {percentile}")
    if not np.all(np.isfinite(volume)):
        raise CardiacSRError(f"{name}: contains NaN or infinite intensities")
    offset = float(min(0.0, float(volume.min())))
    scale = float(np.percentile(volume - offset, percentile))
    if scale <= 0:
        raise CardiacSRError(f"{name}: image is blank (the {percentile}th intensity percentile is 0)")
    return Normalisation(offset, scale)


def crop_or_pad(array: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop or zero-pad the last two axes to ``size`` x ``size``."""
    h, w = array.shape[-2:]
    out = np.zeros(array.shape[:-2] + (size, size), array.dtype)
    sh, sw = min(h, size), min(w, size)
    ih, iw = (h - sh) // 2, (w - sw) // 2  # crop offsets in the input
    oh, ow = (size - sh) // 2, (size - sw) // 2  # pad offsets in the output
    out[..., oh:oh + sh, ow:ow + sw] = array[..., ih:ih + sh, iw:iw + sw]
    return out


def collect_splits(studies: list[Study], assignment: dict[str, str], splits, size: int, percentile: float) -> dict:
    """Normalise each study per volume, crop/pad to ``size`` and gather its slices under its split.

    Returns ``{split: {"hr": [arrays], "roi": [arrays], "rows": [manifest rows]}}``; patients
    missing from ``assignment`` are left out.
    """
    per_split = {s: {"hr": [], "roi": [], "rows": []} for s in splits}
    for st in tqdm(studies, desc="normalise"):
        split = assignment.get(st.patient_id)
        if split is None:  # left out by an explicit split
            continue
        norm = fit_normalisation(st.image, percentile, name=f"patient {st.patient_id}")
        bucket = per_split[split]
        hr = crop_or_pad(norm.apply(st.image), size)
        roi = crop_or_pad(st.roi, size) if st.roi is not None else np.zeros(hr.shape, np.uint8)
        for s in range(st.n_slices):
            for t in range(st.n_phases):
                bucket["rows"].append({
                    "split": split, "index": len(bucket["rows"]), "patient": st.patient_id, "slice": s, "phase": t,
                    "rows": st.shape2d[0], "columns": st.shape2d[1],
                    "spacing_row_mm": st.spacing[0], "spacing_col_mm": st.spacing[1], "spacing_slice_mm": st.spacing[2],
                    "source_file": st.sources[s, t] if st.sources is not None else "",
                    "intensity_offset": norm.offset, "intensity_scale": norm.scale,
                    "has_roi": int(st.has_roi[s, t]) if st.has_roi is not None else 0,
                })
        bucket["hr"].append(hr.reshape(-1, size, size))
        bucket["roi"].append(roi.reshape(-1, size, size).astype(np.uint8))
    return per_split


def write_splits(folder: Path, per_split: dict, splits, size: int, info: dict) -> dict[str, np.ndarray]:
    """Write ``{split}_hr.npy``, ``{split}_roi.npy`` and ``manifest.csv`` into ``folder``; fill ``info``'s
    slice counts and patients; returns the HR arrays."""
    rows, arrays = [], {}
    for split in splits:
        b = per_split[split]
        hr = np.concatenate(b["hr"]) if b["hr"] else np.zeros((0, size, size), np.float32)
        roi = np.concatenate(b["roi"]) if b["roi"] else np.zeros((0, size, size), np.uint8)
        np.save(folder / f"{split}_hr.npy", hr.astype(np.float32))
        np.save(folder / f"{split}_roi.npy", roi)
        rows += b["rows"]
        arrays[split] = hr
        info["splits"][split] = int(len(hr))
        info["patients"][split] = sorted({r["patient"] for r in b["rows"]})
    with open(folder / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=MANIFEST_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    return arrays


def _info(folder: str | Path) -> dict:
    path = Path(folder) / "info.json"
    if not path.is_file():
        raise CardiacSRError(f"{path}: not found (run `dvc repro prepare`)")
    return json.loads(path.read_text())


def prepared_patients(folder: str | Path) -> set[str]:
    """Every patient in a prepared dataset, whatever the split."""
    return {p for members in _info(folder)["patients"].values() for p in members}


def prepared_splits(folder: str | Path) -> list[str]:
    """The splits a dataset folder holds (train, val, test in data/prepared; external in data/external)."""
    return list(_info(folder)["splits"])


def load_split(folder: str | Path, split: str, kind: str = "hr", mmap: bool = True) -> np.ndarray:
    """Load ``{split}_{kind}.npy`` from a stage output folder, with a clear error if missing."""
    path = Path(folder) / f"{split}_{kind}.npy"
    if not path.is_file():
        raise CardiacSRError(f"{path}: not found (run the stage that writes it, e.g. `dvc repro`)")
    return np.load(path, mmap_mode="r" if mmap else None)


def read_manifest(folder: str | Path) -> list[dict]:
    """The manifest rows of a prepared dataset."""
    path = Path(folder) / "manifest.csv"
    if not path.is_file():
        raise CardiacSRError(f"{path}: not found (run `dvc repro prepare`)")
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def load_pairs(prepared_dir: str | Path, degraded_dir: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """HR (N, H, W) and LR (N, H/s, W/s) float32 arrays of one split (the LR array read into memory)."""
    hr = load_split(prepared_dir, split, "hr")
    lr = load_split(degraded_dir, split, "lr", mmap=False)
    if len(lr) != len(hr):
        raise CardiacSRError(f"{Path(degraded_dir) / f'{split}_lr.npy'}: {len(lr)} LR slices but {len(hr)} HR "
                             f"slices; re-run dvc repro degrade")
    return hr, lr


def has_external(folder: str | Path) -> bool:
    """Whether ``folder`` holds a non-empty external test set."""
    path = Path(folder) / "info.json"
    return path.is_file() and bool(json.loads(path.read_text())["splits"].get(EXTERNAL))
