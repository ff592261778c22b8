"""The ``prepare`` stage: cine studies -> a normalised float32 slice dataset.

Output folder (``data/prepared`` by default)::

    {train,val,test}_hr.npy    float32 (N, H, W), intensities in [0, 1]
    {train,val,test}_roi.npy   uint8   (N, H, W), cardiac ROI (0 where unknown)
    manifest.csv               one row per slice: split, index, patient, slice,
                               phase, spacing, source file, normalisation
                               (intensity_offset, intensity_scale), has_roi
    info.json                  patients per split, counts, the params used

Normalisation is per volume (one patient's whole cine study):
``x01 = clip((x - offset) / scale, 0, 1)`` with ``offset = min(0, min x)`` and
``scale`` = the ``percentile``-th percentile of ``x - offset``.  Both are
recorded so predictions can be mapped back: ``x = x01 * scale + offset``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import multiprocessing as mp
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .errors import CardiacSRError
from .fileio import atomic_dir
from .phantom import PhantomConfig, PhantomGenerator, phantom_id
from .readers import read_studies
from .study import Study

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
EXTERNAL = "external"  # the optional external test set (evaluate.external, data/external)
SOURCES = ("phantom", "dicom", "nifti")
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


def split_patients(patient_ids: list[str], split: dict, seed: int, allow_empty_test: bool = False) -> dict[str, str]:
    """Assign each patient to one split: ``{patient: split}``.

    ``split`` holds either fractions (``{train: 0.6, val: 0.2, test: 0.2}``,
    patients shuffled with ``seed``) or explicit patient lists (``{train:
    [A, B], test: [C]}``, val optional; patients named nowhere are left out).
    The train split must not be empty, nor the test split unless an external
    test set is used (``allow_empty_test``).  The val split may be empty:
    training then reports no validation metrics.
    """
    ids = sorted(set(patient_ids))
    if len(ids) != len(patient_ids):
        raise CardiacSRError("duplicate patient ids in the input: " + ", ".join(sorted({p for p in patient_ids if patient_ids.count(p) > 1})))
    if not isinstance(split, dict):
        raise CardiacSRError(f"params.yaml: 'prepare.split' must be a mapping of train/val/test, got {split!r}")
    unknown = sorted(set(split) - set(SPLITS))
    if unknown:
        raise CardiacSRError(f"params.yaml: unknown key 'prepare.split.{unknown[0]}'; valid keys: {', '.join(SPLITS)}")
    if any(isinstance(v, (list, tuple)) for v in split.values()):
        out = _explicit_split(ids, split)
    else:
        out = _fraction_split(ids, split, seed)
    counts = {s: sum(v == s for v in out.values()) for s in SPLITS}
    for name in ("train", "test"):
        if counts[name] < 1 and not (name == "test" and allow_empty_test):
            also = ", or score on an external test set (evaluate.external)" if name == "test" else ""
            raise CardiacSRError(f"prepare.split: the {name} split is empty ({len(ids)} patients, split {split}); "
                                 f"name patients in prepare.split, e.g. '{name}: [ID]'{also}")
    if counts["val"] < 1:
        log.warning("prepare.split: the val split is empty; training will report no validation metrics")
    return out


def _explicit_split(ids: list[str], split: dict) -> dict[str, str]:
    """``{train: [A], val: [B], test: [C]}`` -> ``{A: train, B: val, C: test}``; patients named nowhere are left out."""
    out: dict[str, str] = {}
    for name in SPLITS:
        members = split.get(name) or []
        if not isinstance(members, (list, tuple)):
            raise CardiacSRError(f"params.yaml: 'prepare.split.{name}' must be a list of patient ids like the other "
                                 f"splits (or give all three as fractions), got {members!r}")
        for pid in (str(m) for m in members):
            if pid not in ids:
                raise CardiacSRError(f"prepare.split.{name}: patient {pid!r} is not in the data "
                                     f"(patients: {', '.join(ids)})")
            if pid in out:
                raise CardiacSRError(f"prepare.split: patient {pid!r} is in both '{out[pid]}' and '{name}'")
            out[pid] = name
    left = [p for p in ids if p not in out]
    if left:
        log.info("prepare.split: %d patient(s) in no split, left out: %s", len(left), ", ".join(left))
    return out


def _fraction_split(ids: list[str], fractions: dict, seed: int) -> dict[str, str]:
    """Shuffle with ``seed``; val and test get ``round(fraction * n)`` patients (at least one
    each when the fraction is positive and there are at least 3 patients); the rest train."""
    missing = [s for s in SPLITS if s not in fractions]
    if missing:
        raise CardiacSRError(f"params.yaml: missing param 'prepare.split.{missing[0]}'")
    try:
        fr = {s: float(fractions[s]) for s in SPLITS}
    except (TypeError, ValueError):
        raise CardiacSRError(f"params.yaml: 'prepare.split' values must be fractions or lists of patient ids, "
                             f"got {fractions}") from None
    if any(v < 0 for v in fr.values()) or abs(sum(fr.values()) - 1.0) > 1e-6:
        raise CardiacSRError(f"prepare.split fractions must be >= 0 and sum to 1, got {fr}")
    n = len(ids)
    order = np.random.default_rng(seed).permutation(n)
    counts = {}
    for s in ("test", "val"):
        c = int(round(fr[s] * n))
        if fr[s] > 0 and n >= 3:
            c = max(c, 1)
        counts[s] = c
    counts["train"] = n - counts["test"] - counts["val"]
    out, start = {}, 0
    for s in ("test", "val", "train"):
        for i in order[start:start + counts[s]]:
            out[ids[i]] = s
        start += counts[s]
    return out


def crop_or_pad(array: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop or zero-pad the last two axes to ``size`` x ``size``."""
    h, w = array.shape[-2:]
    out = np.zeros(array.shape[:-2] + (size, size), array.dtype)
    sh, sw = min(h, size), min(w, size)
    ih, iw = (h - sh) // 2, (w - sw) // 2  # crop offsets in the input
    oh, ow = (size - sh) // 2, (size - sw) // 2  # pad offsets in the output
    out[..., oh:oh + sh, ow:ow + sw] = array[..., ih:ih + sh, iw:iw + sw]
    return out


def _phantom_study(args):
    cfg, seed, index = args
    return PhantomGenerator(cfg, seed).study(index)


def phantom_studies(n_patients: int, seed: int, cfg: PhantomConfig | list[PhantomConfig],
                    workers: int = 2) -> list[Study]:
    """Generate ``n_patients`` phantom studies (one config, or one per patient), in parallel over patients
    (deterministic)."""
    if n_patients < 1:
        raise CardiacSRError(f"prepare.phantom.patients must be >= 1, got {n_patients}")
    cfgs = cfg if isinstance(cfg, list) else [cfg] * n_patients
    jobs = [(cfgs[i], seed, i) for i in range(n_patients)]
    desc = "phantom patients"
    if workers > 1 and n_patients > 1:
        with mp.get_context().Pool(workers) as pool:
            return list(tqdm(pool.imap(_phantom_study, jobs), total=n_patients, desc=desc))
    return [_phantom_study(j) for j in tqdm(jobs, desc=desc)]


def _phantom_configs(cfg: PhantomConfig, n: int, ph: dict, prep: dict) -> list[PhantomConfig]:
    """Per-patient configs: domain randomisation (``prepare.phantom.randomise``) for the patients of
    the splits in ``prepare.phantom.randomise_splits`` (default train and val: the models learn from
    randomised images and are tested on the realistic phantom), the realistic phantom for the rest."""
    try:
        strength = float(ph.get("randomise", 0.0))
    except (TypeError, ValueError):
        raise CardiacSRError(f"params.yaml: 'prepare.phantom.randomise' must be a number, got {ph.get('randomise')!r}") from None
    if not 0.0 <= strength <= 1.0:
        raise CardiacSRError(f"params.yaml: 'prepare.phantom.randomise' must be in [0, 1], got {strength}")
    splits = ph.get("randomise_splits", ["train", "val"])
    if not isinstance(splits, (list, tuple)) or any(s not in SPLITS for s in splits):
        raise CardiacSRError(f"params.yaml: 'prepare.phantom.randomise_splits' must be a list of {', '.join(SPLITS)}, "
                             f"got {splits!r}")
    if strength == 0.0:
        return [cfg] * n
    ids = [phantom_id(i) for i in range(n)]
    assignment = split_patients(ids, prep["split"], int(prep["seed"]), allow_empty_test=True)
    randomised = dataclasses.replace(cfg, randomise=strength)
    return [randomised if assignment.get(pid) in splits else cfg for pid in ids]


def load_studies(prep: dict) -> list[Study]:
    """The studies named by the ``prepare`` params."""
    source = prep.get("source")
    if source not in SOURCES:
        raise CardiacSRError(f"params.yaml: unknown value {source!r} for 'prepare.source'; valid values: {', '.join(SOURCES)}")
    if source == "phantom":
        ph = prep.get("phantom")
        if not isinstance(ph, dict):
            raise CardiacSRError("params.yaml: missing param 'prepare.phantom'")
        for key in ("patients", "slices", "phases", "size", "spacing_mm", "slice_thickness_mm", "snr"):
            if key not in ph:
                raise CardiacSRError(f"params.yaml: missing param 'prepare.phantom.{key}'")
        cfg = PhantomConfig(slices=int(ph["slices"]), phases=int(ph["phases"]), size=int(ph["size"]),
                            spacing_mm=float(ph["spacing_mm"]), slice_thickness_mm=float(ph["slice_thickness_mm"]),
                            snr=float(ph["snr"]))
        n = int(ph["patients"])
        return phantom_studies(n, int(prep["seed"]), _phantom_configs(cfg, n, ph, prep),
                               workers=int(prep.get("workers", 2)))
    return read_studies(source, prep.get("path"), contours=prep.get("contours"), strict=bool(prep.get("strict", False)))


def external_config(external) -> dict | None:
    """The ``evaluate.external`` params (``{source, path, contours}``), or None when it is off."""
    if external in (None, False, "", "none"):
        return None
    if not isinstance(external, dict):
        raise CardiacSRError(f"params.yaml: 'evaluate.external' must be null or a mapping with source and path, "
                             f"got {external!r}")
    source = external.get("source")
    if source not in ("dicom", "nifti"):
        raise CardiacSRError(f"params.yaml: unknown value {source!r} for 'evaluate.external.source'; "
                             f"valid values: dicom, nifti")
    if not external.get("path"):
        raise CardiacSRError("params.yaml: missing param 'evaluate.external.path'")
    return {"source": source, "path": external["path"], "contours": external.get("contours"),
            "strict": bool(external.get("strict", False))}


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


def prepare(prep: dict, scale: int, out_dir: str | Path, allow_empty_test: bool = False) -> dict:
    """Run the prepare stage with the ``prepare`` params; returns the info written to info.json.

    ``allow_empty_test``: the test split may be empty (an external test set is scored instead).
    """
    for key in ("source", "seed", "split", "hr_size", "percentile"):
        if key not in prep:
            raise CardiacSRError(f"params.yaml: missing param 'prepare.{key}'")
    size = int(prep["hr_size"])
    if size % scale:
        raise CardiacSRError(f"prepare.hr_size {size} must be a multiple of degrade.scale {scale}")
    studies = load_studies(prep)
    assignment = split_patients([s.patient_id for s in studies], prep["split"], int(prep["seed"]),
                                allow_empty_test=allow_empty_test)
    per_split = collect_splits(studies, assignment, SPLITS, size, float(prep["percentile"]))
    info = {"source": prep["source"], "hr_size": size, "percentile": float(prep["percentile"]),
            "splits": {}, "patients": {}}
    with atomic_dir(out_dir) as tmp:
        write_splits(tmp, per_split, SPLITS, size, info)
        (tmp / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    log.info("prepared %s", info["splits"])
    return info


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
