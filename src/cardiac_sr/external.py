"""The external test set: studies of another dataset, scored next to the test split.

The protocol of Lin et al. (MICCAI 2020): train on one dataset, test on
another.  ``evaluate.external: {source, path, contours}`` names DICOM or
NIfTI studies; :func:`build_external` normalises and crops them exactly as
``prepare`` does the test split and degrades them exactly as ``degrade``
does, into one folder (``data/external``)::

    external_hr.npy, external_roi.npy, external_lr.npy, external_bicubic.npy
    manifest.csv, info.json

It is its own DVC stage, apart from ``data/prepared`` and ``data/degraded``,
so turning the external set on or off never re-trains a model.  When it is
off the folder holds an empty set.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .dataset import collect_splits, prepared_patients, write_splits
from .degradation import degrade_stack
from .errors import CardiacSRError
from .fileio import atomic_dir
from .names import EXTERNAL
from .params import Degrade, External, Prepare
from .readers import read_studies


def build_external(external: External | dict | None, prep: Prepare | dict, degrade: Degrade | dict,
                   prepared_dir: str | Path, out_dir: str | Path) -> dict:
    """Write the external test set (or an empty one when ``external`` is off); returns its info."""
    cfg = None if external is None else External.of(external, "evaluate.external")
    prep, degrade = Prepare.of(prep, "prepare"), Degrade.of(degrade, "degrade")
    studies = []
    if cfg is not None:
        studies = read_studies(cfg.source, cfg.path, contours=cfg.contours, strict=cfg.strict)
        clash = sorted({s.patient_id for s in studies} & prepared_patients(prepared_dir))
        if clash:
            raise CardiacSRError(f"evaluate.external: patient {clash[0]!r} is also in the prepared data "
                                 f"(prepare.path); an external test set must be other patients")
    per_split = collect_splits(studies, {s.patient_id: EXTERNAL for s in studies}, [EXTERNAL], prep.hr_size,
                               prep.percentile)
    info = {"external": None if cfg is None else {"source": cfg.source, "path": cfg.path},
            "hr_size": prep.hr_size, "percentile": prep.percentile, "splits": {}, "patients": {}}
    with atomic_dir(out_dir) as tmp:
        hr = write_splits(tmp, per_split, [EXTERNAL], prep.hr_size, info)[EXTERNAL]
        lr, up = degrade_stack(hr, degrade, np.random.default_rng(degrade.seed), EXTERNAL)
        np.save(tmp / f"{EXTERNAL}_lr.npy", lr)
        np.save(tmp / f"{EXTERNAL}_bicubic.npy", up)
        info["degradation"] = {k: getattr(degrade, k) for k in ("method", "scale", "blur_sigma", "noise_sigma")}
        (tmp / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    return info
