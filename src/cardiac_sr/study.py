"""The in-memory form of one cine study, whatever it was read from."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Study:
    """One patient's short-axis cine study.

    Attributes:
        patient_id: identifier used for splitting (never two splits per patient).
        image: float32 array (slices, phases, rows, columns) in the source's units.
        spacing: (row, column, slice) spacing in mm.
        roi: optional uint8 array shaped like ``image``: 1 inside the cardiac
            region of interest (filled LV epicardial contour).
        has_roi: optional bool array (slices, phases): where ``roi`` is defined.
        sources: (slices, phases) array of strings: the file each image came from.
        meta: free-form extra information (slice positions, trigger times, ...).
    """

    patient_id: str
    image: np.ndarray
    spacing: tuple[float, float, float]
    roi: np.ndarray | None = None
    has_roi: np.ndarray | None = None
    sources: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    @property
    def n_slices(self) -> int:
        return int(self.image.shape[0])

    @property
    def n_phases(self) -> int:
        return int(self.image.shape[1])

    @property
    def shape2d(self) -> tuple[int, int]:
        return int(self.image.shape[2]), int(self.image.shape[3])

    def summary(self) -> dict:
        """The facts ``cardiac-sr inspect`` prints for this study."""
        return {
            "patient": self.patient_id,
            "slices": self.n_slices,
            "phases": self.n_phases,
            "rows": self.shape2d[0],
            "columns": self.shape2d[1],
            "spacing_mm": [round(float(s), 3) for s in self.spacing],
            "intensity_min": float(np.min(self.image)),
            "intensity_max": float(np.max(self.image)),
            "roi_images": int(self.has_roi.sum()) if self.has_roi is not None else 0,
        }


def blocks(array: np.ndarray, values: int = 1 << 22):
    """Views of ``array`` along its first axis, about ``values`` values each (a few million: 16 MB of float32),
    for a whole-study pass that must not make a whole-study temporary."""
    step = max(1, values // max(1, array.size // max(1, array.shape[0])))
    return (array[i:i + step] for i in range(0, array.shape[0], step))


def compact_image(image: np.ndarray, block: int = 1 << 22) -> np.ndarray:
    """``image`` in int16 or uint16 where every value is an integer that fits (a scanner's stored values, as
    most MR studies are): half the memory of float32, and the same numbers once cast back to float32 (which
    :func:`cardiac_sr.predict.predict_chunks` does a chunk at a time).  Anything else is returned as it is.
    Checked and copied a few million values at a time: no whole-study temporary."""
    if image.dtype != np.float32 or image.size == 0:
        return image
    low, high = float(image.min()), float(image.max())
    dtype = next((d for d in (np.int16, np.uint16) if np.iinfo(d).min <= low and high <= np.iinfo(d).max), None)
    if dtype is None:
        return image
    if not all(np.array_equal(part, np.rint(part)) for part in blocks(image, block)):
        return image
    out = np.empty(image.shape, dtype)
    for part_out, part in zip(blocks(out, block), blocks(image, block)):
        part_out[...] = part
    return out
