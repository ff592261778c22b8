"""The ``degrade`` stage: high-resolution slices -> low-resolution model inputs (``data/degraded``).

Applies :mod:`cardiac_sr.degradation` (``degrade.method``, ``scale``, noise) to
every split of a prepared dataset, a chunk of slices at a time, and writes the
sharded arrays of :mod:`cardiac_sr.dataset`::

    {train,val,test}_lr/        float32 (N, H/scale, W/scale) in [0, 1]
    {train,val,test}_bicubic/   float32 (N, H, W): the bicubic baseline
    info.json                   the params used and the shapes
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .dataset import ShardWriter, load_split, prepared_splits
from .degradation import degrade_slices
from .fileio import atomic_dir
from .params import Degrade


def degrade(params: Degrade, prepared_dir: str | Path, out_dir: str | Path) -> dict:
    """Run the degrade stage on every split of a prepared dataset."""
    rng = np.random.default_rng(params.seed)
    info = {"method": params.method, "scale": params.scale, "noise_sigma": params.noise_sigma, "shapes": {}}
    with atomic_dir(out_dir) as tmp:
        for split in prepared_splits(prepared_dir):
            hr = load_split(prepared_dir, split, "hr")
            _, h, w = hr.shape
            lr_out = ShardWriter(tmp / f"{split}_lr", (h // params.scale, w // params.scale), np.float32)
            up_out = ShardWriter(tmp / f"{split}_bicubic", (h, w), np.float32)
            degrade_slices(hr, params, rng, lr_out, up_out, split)
            info["shapes"][split] = {"hr": list(hr.shape), "lr": list(lr_out.close())}
            up_out.close()
        (tmp / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    return info
