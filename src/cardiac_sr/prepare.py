"""The ``prepare`` stage: cine studies -> a normalised float32 slice dataset (``data/prepared``).

Reads the studies (the built-in phantom, domain-randomised for the patients of
``prepare.phantom.randomise_splits``; or DICOM / NIfTI studies), assigns each
patient to train, val or test (fractions or explicit lists), and writes the
dataset layout of :mod:`cardiac_sr.dataset` (per-volume normalisation, arrays,
ROI masks, manifest) atomically.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import multiprocessing as mp
import signal
from collections import deque
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .dataset import write_dataset
from .errors import CardiacSRError
from .fileio import atomic_dir
from .names import SPLITS
from .params import Phantom, Prepare
from .phantom import PhantomGenerator, phantom_id
from .readers import scan_studies
from .study import Study

log = logging.getLogger(__name__)


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


def _phantom_study(args):
    cfg, seed, index = args
    return PhantomGenerator(cfg, seed).study(index)


def _quiet_worker() -> None:
    """Pool workers leave Ctrl-C to the stage, and end with it (Linux ``PR_SET_PDEATHSIG``) when it is killed,
    instead of printing BrokenPipe tracebacks as orphans."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: orphans finish their job and exit
        pass


def _bounded_map(fn, jobs: list, workers: int):
    """``fn`` over ``jobs`` in order, in ``workers`` processes, at most ``2 x workers`` results ahead of
    the consumer (``Pool.imap`` would queue every finished study in memory)."""
    if workers <= 1 or len(jobs) <= 1:
        yield from map(fn, jobs)
        return
    with mp.get_context().Pool(workers, initializer=_quiet_worker) as pool:
        pending = deque()
        todo = iter(jobs)
        for job in itertools.islice(todo, 2 * workers):
            pending.append(pool.apply_async(fn, (job,)))
        while pending:
            result = pending.popleft().get()
            job = next(todo, None)
            if job is not None:
                pending.append(pool.apply_async(fn, (job,)))
            yield result


def phantom_studies(n_patients: int, seed: int, cfg: Phantom | list[Phantom],
                    workers: int = 2) -> Iterator[Study]:
    """Generate ``n_patients`` phantom studies (one config, or one per patient), in parallel over
    patients (deterministic), one after the other."""
    if n_patients < 1:
        raise CardiacSRError(f"prepare.phantom.patients must be >= 1, got {n_patients}")
    cfgs = cfg if isinstance(cfg, list) else [cfg] * n_patients
    jobs = [(cfgs[i], seed, i) for i in range(n_patients)]
    yield from _bounded_map(_phantom_study, jobs, workers)


def _phantom_configs(cfg: Phantom, prep: Prepare) -> list[Phantom]:
    """Per-patient configs: domain randomisation (``prepare.phantom.randomise``) for the patients of
    the splits in ``prepare.phantom.randomise_splits`` (default train and val: the models learn from
    randomised images and are tested on the realistic phantom), the realistic phantom for the rest."""
    ph = prep.phantom
    if ph.randomise == 0.0:
        return [cfg] * ph.patients
    ids = [phantom_id(i) for i in range(ph.patients)]
    assignment = split_patients(ids, prep.split, prep.seed, allow_empty_test=True)
    randomised = dataclasses.replace(cfg, randomise=ph.randomise)
    return [randomised if assignment.get(pid) in ph.randomise_splits else cfg for pid in ids]


def scan(prep: Prepare) -> list[tuple[str, Callable | None]]:
    """``(patient id, load)`` for each study the ``prepare`` params name, in order, without reading any
    image (DICOM headers only); ``load`` is None for the phantom (generated in :func:`iter_studies`)."""
    if prep.source != "phantom":
        return scan_studies(prep.source, prep.path, contours=prep.contours, strict=prep.strict)
    return [(phantom_id(i), None) for i in range(_phantom(prep).patients)]


def _phantom(prep: Prepare):
    if prep.phantom is None:
        raise CardiacSRError("params.yaml: missing param 'prepare.phantom'")
    return prep.phantom


def iter_studies(prep: Prepare, scanned: list | None = None, keep: set[str] | None = None) -> Iterator[Study]:
    """The studies named by the ``prepare`` params (``scanned``: what :func:`scan` returned), one at a
    time; real studies outside ``keep`` are not read."""
    if prep.source != "phantom":
        for pid, load in scanned if scanned is not None else scan(prep):
            if keep is None or pid in keep:
                st = load()
                if st is not None:
                    yield st
        return
    ph = _phantom(prep)
    cfg = dataclasses.replace(ph, randomise=0.0)  # the realistic phantom; _phantom_configs randomises some splits
    yield from phantom_studies(ph.patients, prep.seed, _phantom_configs(cfg, prep), workers=prep.workers)


def prepare(prep: Prepare, scale: int, out_dir: str | Path, allow_empty_test: bool = False) -> dict:
    """Run the prepare stage with the ``prepare`` params; returns the info written to info.json.

    ``allow_empty_test``: the test split may be empty (an external test set is scored instead).
    """
    if prep.hr_size % scale:
        raise CardiacSRError(f"prepare.hr_size {prep.hr_size} must be a multiple of degrade.scale {scale}")
    scanned = scan(prep)
    assignment = split_patients([pid for pid, _ in scanned], prep.split, prep.seed, allow_empty_test=allow_empty_test)
    info = {"source": prep.source, "hr_size": prep.hr_size, "percentile": prep.percentile,
            "splits": {}, "patients": {}}
    with atomic_dir(out_dir) as tmp:
        write_dataset(iter_studies(prep, scanned, keep=set(assignment)), assignment, SPLITS, tmp, prep.hr_size,
                      prep.percentile, info)
        (tmp / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    log.info("prepared %s", info["splits"])
    return info
