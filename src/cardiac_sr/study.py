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
