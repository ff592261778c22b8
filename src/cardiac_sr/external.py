"""The external test set: studies of another dataset, scored next to the test split.

The protocol of Lin et al. (MICCAI 2020): train on one dataset, test on
another.  ``evaluate.external: {source, path, contours}`` names DICOM or
NIfTI studies; :func:`build_external` normalises and crops them exactly as
``prepare`` does the test split and degrades them exactly as ``degrade``
does, into one folder (``data/external``)::

    external_hr/, external_roi/, external_lr/, external_bicubic/   (sharded arrays)
    manifest.csv, info.json

It is its own DVC stage, apart from ``data/prepared`` and ``data/degraded``,
so turning the external set on or off never re-trains a model.  When it is
off the folder holds an empty set.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .dataset import ShardWriter, load_split, prepared_patients, write_dataset
from .degradation import degrade_slices
from .errors import CardiacSRError
from .fileio import atomic_dir
from .names import EXTERNAL
from .params import Degrade, External, Prepare
from .readers import scan_studies


def build_external(cfg: External | None, prep: Prepare, degrade: Degrade,
                   prepared_dir: str | Path, out_dir: str | Path) -> dict:
    """Write the external test set (or an empty one when ``external`` is off), one study in memory at a
    time; returns its info."""
    scanned = []
    if cfg is not None:
        scanned = scan_studies(cfg.source, cfg.path, contours=cfg.contours, strict=cfg.strict)
        clash = sorted({pid for pid, _ in scanned} & prepared_patients(prepared_dir))
        if clash:
            raise CardiacSRError(f"evaluate.external: patient {clash[0]!r} is also in the prepared data "
                                 f"(prepare.path); an external test set must be other patients")
    info = {"external": None if cfg is None else {"source": cfg.source, "path": cfg.path},
            "hr_size": prep.hr_size, "percentile": prep.percentile, "splits": {}, "patients": {}}
    studies = (st for st in (load() for _, load in scanned) if st is not None)
    size, scale = prep.hr_size, degrade.scale
    with atomic_dir(out_dir) as tmp:
        write_dataset(studies, {pid: EXTERNAL for pid, _ in scanned}, [EXTERNAL], tmp, size, prep.percentile, info,
                      desc=EXTERNAL)
        lr_out = ShardWriter(tmp / f"{EXTERNAL}_lr", (size // scale, size // scale), np.float32)
        up_out = ShardWriter(tmp / f"{EXTERNAL}_bicubic", (size, size), np.float32)
        degrade_slices(load_split(tmp, EXTERNAL, "hr"), degrade, np.random.default_rng(degrade.seed), lr_out, up_out,
                       EXTERNAL)
        lr_out.close()
        up_out.close()
        info["degradation"] = {k: getattr(degrade, k) for k in ("method", "scale", "blur_sigma", "noise_sigma")}
        (tmp / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    return info
