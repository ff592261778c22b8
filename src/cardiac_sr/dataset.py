"""The dataset layout and normalisation shared by every stage, the figures and inference.

A dataset folder (``data/prepared``, ``data/degraded``, ``data/external``) holds
one *sharded array* per split and kind, a folder of ``.npy`` shards of at most
``SHARD_SLICES`` slices each, read back memory-mapped, so no stage needs the
whole dataset in memory::

    {split}_hr/       float32 (N, H, W), intensities in [0, 1]      (prepare, external)
    {split}_roi/      uint8   (N, H, W), cardiac ROI (0 where unknown) (prepare, external)
    {split}_lr/       float32 (N, H/s, W/s), the low-resolution input  (degrade, external)
    {split}_bicubic/  float32 (N, H, W), the bicubic baseline          (degrade, external)
        00000.npy, 00001.npy, ...   slices 0-1023, 1024-2047, ... of the split
        index.json                  shape, dtype and rows per shard
    manifest.csv      one row per slice: split, index, patient, slice, phase, spacing,
                      source file, normalisation (intensity_offset, intensity_scale), has_roi
    info.json         patients per split, counts, the params used

Slices are in manifest order (patient, then slice location, then phase), so
slice ``index`` of a split lies in shard ``index // SHARD_SLICES``.
:func:`load_split` returns a :class:`ShardedArray`, which indexes like a NumPy
array (an int, a slice or a list of indices) and reads only what is asked for.

Normalisation is per volume (one patient's whole cine study):
``x01 = clip((x - offset) / scale, 0, 1)`` with ``offset = min(0, min x)`` and
``scale`` = the ``percentile``-th percentile of ``x - offset``.  Both are
recorded so predictions can be mapped back: ``x = x01 * scale + offset``.
"""

from __future__ import annotations

import csv
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
from tqdm import tqdm

from .errors import CardiacSRError
from .names import DEFAULT_PERCENTILE, EXTERNAL
from .params import check_percentile
from .study import Study, blocks

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


def fit_normalisation(volume: np.ndarray, percentile: float = DEFAULT_PERCENTILE, name: str = "volume") -> Normalisation:
    """Per-volume normalisation: offset = min(0, min), scale = percentile of (volume - offset)."""
    percentile = check_percentile(percentile, source=name)
    low, high = volume.min(), volume.max()  # NaN propagates through both: no whole-volume mask
    if not (np.isfinite(low) and np.isfinite(high)):
        raise CardiacSRError(f"{name}: contains NaN or infinite intensities")
    offset = float(min(0.0, float(low)))
    scale = float(percentile_of(volume, percentile, offset))
    if scale <= 0:
        raise CardiacSRError(f"{name}: image is blank (the {percentile}th intensity percentile is 0)")
    return Normalisation(offset, scale)


EXACT_IN_FLOAT32 = tuple(np.dtype(d) for d in (np.float32, np.int8, np.uint8, np.int16, np.uint16))


def percentile_of(volume: np.ndarray, q: float, offset: float = 0.0):
    """``np.percentile(volume - offset, q)`` (the default linear method), the same number bit for bit, without
    the whole-volume copy that NumPy sorts.  A volume of small integers (int16, uint16: a compacted study,
    :func:`cardiac_sr.study.compact_image`) gives the number of its float32 values.  For these dtypes the two
    order statistics it needs are found by counting the values' bits (a radix select, two passes over the
    volume in blocks), so a study of 1.2 GB needs megabytes here, not another 1.2 GB.  Other dtypes go to NumPy."""
    volume = np.asarray(volume)
    if volume.dtype not in EXACT_IN_FLOAT32 or volume.ndim == 0:
        return np.percentile(volume - offset if offset else volume, float(q))
    n = volume.size
    # NumPy's arithmetic for a Python-float q (numpy/lib/_function_base_impl.py: _quantile, _lerp)
    virtual = (n - 1) * np.true_divide(float(q), 100)
    if virtual >= n - 1:
        lo = hi = n - 1
        gamma = float(virtual - (n - 1))
    else:
        lo = int(np.floor(virtual))
        hi = lo + 1
        gamma = float(virtual - lo)
    a, b = (np.float32(v) for v in _order_statistics(volume, offset, (lo, hi)))
    diff = b - a
    return b - diff * (1 - gamma) if gamma >= 0.5 else a + diff * gamma


def _sortable_keys(block: np.ndarray, offset: float) -> np.ndarray:
    """float32 -> uint32 keys in the floats' order (sign bit flipped for positives, all bits for negatives)."""
    values = block.astype(np.float32)  # (a copy of the block: the subtraction is float32's, as NumPy's)
    bits = (values - offset if offset else values).view(np.uint32)
    return np.where(bits >> 31, ~bits, bits | np.uint32(0x80000000))


def _order_statistics(volume: np.ndarray, offset: float, ranks: tuple[int, ...]) -> list[float]:
    """The values of ``volume - offset`` at these 0-based ranks of its sorted order (a radix select over the
    top and bottom 16 bits of the sortable keys, a few million values of the volume at a time)."""
    top = np.zeros(1 << 16, np.int64)
    for block in blocks(volume):
        top += np.bincount((_sortable_keys(block, offset) >> 16).ravel(), minlength=1 << 16)
    up_to = np.cumsum(top)  # values in top-16-bit bins <= each bin
    below = up_to - top  # values in lower bins
    bins = {r: int(np.searchsorted(up_to, r, side="right")) for r in ranks}
    low = {b: np.zeros(1 << 16, np.int64) for b in set(bins.values())}
    for block in blocks(volume):
        keys = _sortable_keys(block, offset).ravel()
        for b, hist in low.items():
            hist += np.bincount(keys[(keys >> 16) == b] & 0xFFFF, minlength=1 << 16)
    values = []
    for r in ranks:
        b = bins[r]
        lo16 = int(np.searchsorted(np.cumsum(low[b]), r - below[b], side="right"))
        key = np.uint32((b << 16) | lo16)
        bits = np.where(key >> 31, key & np.uint32(0x7FFFFFFF), ~key)
        values.append(np.asarray(bits, np.uint32).view(np.float32).item())
    return values


def crop_or_pad(array: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop or zero-pad the last two axes to ``size`` x ``size``."""
    h, w = array.shape[-2:]
    out = np.zeros(array.shape[:-2] + (size, size), array.dtype)
    sh, sw = min(h, size), min(w, size)
    ih, iw = (h - sh) // 2, (w - sw) // 2  # crop offsets in the input
    oh, ow = (size - sh) // 2, (size - sw) // 2  # pad offsets in the output
    out[..., oh:oh + sh, ow:ow + sw] = array[..., ih:ih + sh, iw:iw + sw]
    return out


SHARD_SLICES = 1024  # slices per shard file: 256 MiB of 256 x 256 float32


class ShardWriter:
    """Appends slices to a sharded array folder (``00000.npy`` ... and ``index.json``), holding at most
    one shard in memory."""

    def __init__(self, folder: str | Path, row_shape: tuple[int, ...], dtype, shard_slices: int = SHARD_SLICES):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.row_shape, self.dtype, self.shard_slices = tuple(int(v) for v in row_shape), np.dtype(dtype), shard_slices
        self.rows: list[int] = []
        self._buffer = np.empty((shard_slices,) + self.row_shape, self.dtype)
        self._filled = 0

    def append(self, slices: np.ndarray) -> None:
        slices = np.asarray(slices)
        if slices.shape[1:] != self.row_shape:
            raise CardiacSRError(f"{self.folder}: slices of shape {slices.shape[1:]} do not fit an array of "
                                 f"{self.row_shape} slices")
        done = 0
        while done < len(slices):
            take = min(len(slices) - done, self.shard_slices - self._filled)
            self._buffer[self._filled:self._filled + take] = slices[done:done + take]
            self._filled += take
            done += take
            if self._filled == self.shard_slices:
                self._flush()

    def _flush(self) -> None:
        if self._filled:
            np.save(self.folder / f"{len(self.rows):05d}.npy", self._buffer[:self._filled])
            self.rows.append(self._filled)
            self._filled = 0

    def close(self) -> tuple[int, ...]:
        """Write the last shard and ``index.json``; returns the array's shape."""
        self._flush()
        self._buffer = None
        shape = (sum(self.rows),) + self.row_shape
        (self.folder / "index.json").write_text(json.dumps(
            {"shape": list(shape), "dtype": self.dtype.str, "shard_rows": self.rows}) + "\n")
        return shape


def write_array(folder: str | Path, array: np.ndarray, shard_slices: int = SHARD_SLICES) -> tuple[int, ...]:
    """Write a whole (N, ...) array as a sharded array folder."""
    writer = ShardWriter(folder, array.shape[1:], array.dtype, shard_slices)
    writer.append(array)
    return writer.close()


class ShardedArray:
    """A read-only (N, ...) array stored as shards, read memory-mapped on demand.

    ``a[i]`` (one slice), ``a[i:j]``, ``a[[i, j, k]]`` and ``a[i, rows, cols]`` return NumPy arrays;
    ``np.asarray(a)`` reads everything (only for small arrays).  For single slices and patches (random
    access in training) at most ``MAX_OPEN`` shards are kept mapped at a time, so a dataset of thousands
    of shards never runs out of file handles, and the pages a process has touched, which count in its
    resident memory, stay bounded.
    """

    MAX_OPEN = 8

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        index = self.folder / "index.json"
        if not index.is_file():
            raise CardiacSRError(f"{self.folder}: not found (run the stage that writes it, e.g. `dvc repro`)")
        meta = json.loads(index.read_text())
        self.shape = tuple(meta["shape"])
        self.dtype = np.dtype(meta["dtype"])
        rows = meta["shard_rows"]
        self.starts = np.concatenate([[0], np.cumsum(rows)]).astype(np.int64)
        self.files = [self.folder / f"{k:05d}.npy" for k in range(len(rows))]
        self._open: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()  # tf.data reads patches from two threads

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def _shard(self, k: int) -> np.ndarray:
        with self._lock:
            if k not in self._open:
                while len(self._open) >= self.MAX_OPEN:
                    self._open.pop(next(iter(self._open)))  # the oldest mapping
                self._open[k] = np.load(self.files[k], mmap_mode="r")
            return self._open[k]

    def _locate(self, i: int) -> tuple[int, int]:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"{self.folder}: index {i} out of range for {n} slices")
        i %= n
        k = int(np.searchsorted(self.starts, i, side="right") - 1)
        return k, i - int(self.starts[k])

    def __getitem__(self, key):
        if isinstance(key, tuple):
            first, rest = key[0], key[1:]
            if isinstance(first, (int, np.integer)):
                k, r = self._locate(int(first))
                return np.array(self._shard(k)[(r,) + rest])
            return self[first][(slice(None),) + rest]
        if isinstance(key, (int, np.integer)):
            k, r = self._locate(int(key))
            return np.array(self._shard(k)[r])
        if isinstance(key, slice):
            rows = range(*key.indices(len(self)))
            return self._block(rows.start, rows.stop) if rows.step == 1 else self._rows(rows)
        key = np.asarray(key)
        if key.dtype == bool:
            key = np.flatnonzero(key)
        return self._rows(key.reshape(-1))

    def _block(self, start: int, stop: int) -> np.ndarray:
        """Slices start..stop-1, copied shard by shard through a mapping that is closed right after, so a
        pass over the whole array (degrade, evaluate) does not keep the pages it read mapped."""
        out = np.empty((max(0, stop - start),) + self.shape[1:], self.dtype)
        for k in range(len(self.files)):
            lo, hi = max(start, int(self.starts[k])), min(stop, int(self.starts[k + 1]))
            if lo < hi:
                shard = np.load(self.files[k], mmap_mode="r")
                out[lo - start:hi - start] = shard[lo - int(self.starts[k]):hi - int(self.starts[k])]
                del shard
        return out

    def _rows(self, indices) -> np.ndarray:
        out = np.empty((len(indices),) + self.shape[1:], self.dtype)
        for j, i in enumerate(indices):
            k, r = self._locate(int(i))
            out[j] = self._shard(k)[r]
        return out

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out.astype(dtype) if dtype is not None else out


class DatasetWriter:
    """Writes studies into a dataset folder as they come (normalised per volume, cropped or padded to
    ``size``): HR and ROI sharded arrays per split, the manifest and the counts for ``info.json``."""

    def __init__(self, folder: str | Path, splits, size: int, percentile: float):
        self.folder, self.splits, self.size, self.percentile = Path(folder), list(splits), size, percentile
        self.hr = {s: ShardWriter(self.folder / f"{s}_hr", (size, size), np.float32) for s in self.splits}
        self.roi = {s: ShardWriter(self.folder / f"{s}_roi", (size, size), np.uint8) for s in self.splits}
        self.rows = {s: [] for s in self.splits}

    def add(self, st: Study, split: str) -> None:
        norm = fit_normalisation(st.image, self.percentile, name=f"patient {st.patient_id}")
        size, rows = self.size, self.rows[split]
        hr = crop_or_pad(norm.apply(st.image), size)
        roi = crop_or_pad(st.roi, size) if st.roi is not None else np.zeros(hr.shape, np.uint8)
        for s in range(st.n_slices):
            for t in range(st.n_phases):
                rows.append({
                    "split": split, "index": len(rows), "patient": st.patient_id, "slice": s, "phase": t,
                    "rows": st.shape2d[0], "columns": st.shape2d[1],
                    "spacing_row_mm": st.spacing[0], "spacing_col_mm": st.spacing[1], "spacing_slice_mm": st.spacing[2],
                    "source_file": st.sources[s, t] if st.sources is not None else "",
                    "intensity_offset": norm.offset, "intensity_scale": norm.scale,
                    "has_roi": int(st.has_roi[s, t]) if st.has_roi is not None else 0,
                })
        self.hr[split].append(hr.reshape(-1, size, size))
        self.roi[split].append(roi.reshape(-1, size, size).astype(np.uint8))

    def close(self, info: dict) -> None:
        """Finish the arrays, write ``manifest.csv``; fill ``info``'s slice counts and patients."""
        for split in self.splits:
            self.roi[split].close()
            info["splits"][split] = int(self.hr[split].close()[0])
            info["patients"][split] = sorted({r["patient"] for r in self.rows[split]})
        with open(self.folder / "manifest.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=MANIFEST_FIELDS)
            writer.writeheader()
            for split in self.splits:
                writer.writerows(self.rows[split])


def write_dataset(studies: Iterable[Study], assignment: dict[str, str], splits, folder: Path, size: int,
                  percentile: float, info: dict, desc: str = "prepare") -> None:
    """Normalise, crop and write each study into ``folder`` under its split as it comes (one study in
    memory at a time; patients without a split are left out); fill ``info``."""
    writer = DatasetWriter(folder, splits, size, percentile)
    for st in tqdm(studies, total=sum(s in splits for s in assignment.values()), desc=f"{desc} patients"):
        split = assignment.get(st.patient_id)
        if split is not None:
            writer.add(st, split)
    writer.close(info)


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


def load_split(folder: str | Path, split: str, kind: str = "hr") -> ShardedArray:
    """The sharded array ``{split}_{kind}`` of a stage output folder (memory-mapped), with a clear error
    if it is missing."""
    return ShardedArray(Path(folder) / f"{split}_{kind}")


def read_manifest(folder: str | Path) -> list[dict]:
    """The manifest rows of a prepared dataset."""
    path = Path(folder) / "manifest.csv"
    if not path.is_file():
        raise CardiacSRError(f"{path}: not found (run `dvc repro prepare`)")
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def load_pairs(prepared_dir: str | Path, degraded_dir: str | Path, split: str) -> tuple[ShardedArray, ShardedArray]:
    """HR (N, H, W) and LR (N, H/s, W/s) arrays of one split, memory-mapped, checked to agree."""
    hr = load_split(prepared_dir, split, "hr")
    lr = load_split(degraded_dir, split, "lr")
    if len(lr) != len(hr):
        raise CardiacSRError(f"{Path(degraded_dir) / f'{split}_lr'}: {len(lr)} LR slices but {len(hr)} HR "
                             f"slices; re-run dvc repro degrade")
    return hr, lr


def has_external(folder: str | Path) -> bool:
    """Whether ``folder`` holds a non-empty external test set."""
    path = Path(folder) / "info.json"
    return path.is_file() and bool(json.loads(path.read_text())["splits"].get(EXTERNAL))
