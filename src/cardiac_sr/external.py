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
from .degradation import degrade_stack, validate_degrade_params
from .errors import CardiacSRError
from .fileio import atomic_dir
from .names import EXTERNAL
from .params import choice
from .readers import read_studies


def build_external(external, prep: dict, degrade_params: dict, prepared_dir: str | Path, out_dir: str | Path) -> dict:
    """Write the external test set (or an empty one when ``external`` is off); returns its info."""
    cfg = external_config(external)
    validate_degrade_params(degrade_params)
    size, percentile = int(prep["hr_size"]), float(prep["percentile"])
    studies = []
    if cfg is not None:
        studies = read_studies(cfg["source"], cfg["path"], contours=cfg["contours"], strict=cfg["strict"])
        clash = sorted({s.patient_id for s in studies} & prepared_patients(prepared_dir))
        if clash:
            raise CardiacSRError(f"evaluate.external: patient {clash[0]!r} is also in the prepared data "
                                 f"(prepare.path); an external test set must be other patients")
    per_split = collect_splits(studies, {s.patient_id: EXTERNAL for s in studies}, [EXTERNAL], size, percentile)
    info = {"external": None if cfg is None else {"source": cfg["source"], "path": str(cfg["path"])},
            "hr_size": size, "percentile": percentile, "splits": {}, "patients": {}}
    with atomic_dir(out_dir) as tmp:
        hr = write_splits(tmp, per_split, [EXTERNAL], size, info)[EXTERNAL]
        lr, up = degrade_stack(hr, degrade_params, np.random.default_rng(int(degrade_params["seed"])), EXTERNAL)
        np.save(tmp / f"{EXTERNAL}_lr.npy", lr)
        np.save(tmp / f"{EXTERNAL}_bicubic.npy", up)
        info["degradation"] = {k: degrade_params[k] for k in ("method", "scale", "blur_sigma", "noise_sigma")
                               if k in degrade_params}
        (tmp / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def external_config(external) -> dict | None:
    """The ``evaluate.external`` params (``{source, path, contours}``), or None when it is off."""
    if external in (None, False, "", "none"):
        return None
    if not isinstance(external, dict):
        raise CardiacSRError(f"params.yaml: 'evaluate.external' must be null or a mapping with source and path, "
                             f"got {external!r}")
    source = external.get("source")
    if source not in ("dicom", "nifti"):
        choice(source, ("dicom", "nifti"), "evaluate.external.source")
    if not external.get("path"):
        raise CardiacSRError("params.yaml: missing param 'evaluate.external.path'")
    return {"source": source, "path": external["path"], "contours": external.get("contours"),
            "strict": bool(external.get("strict", False))}
