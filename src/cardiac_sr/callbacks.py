"""The Keras callbacks of the train stage and its checkpoints (plain classes, as in the keras.io examples).

* :class:`StopOnNonFinite`: stops the run at the first NaN or infinite loss (before any checkpoint of it);
* :class:`Validation`: val_psnr / val_ssim on whole val slices after every epoch;
* :class:`Progress`: one log line about every 20 s with the ETA;
* :class:`Checkpoint`: weights, optimiser state, the dvclive folder and the last
  epoch's logs after every epoch (:func:`save_checkpoint`), which a re-run after
  a kill resumes from (:func:`restore_checkpoint`).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import keras
import numpy as np

from .fileio import atomic_dir
from .inference import super_resolve
from .metrics import psnr, ssim

log = logging.getLogger("cardiac_sr.train")


class NonFiniteLoss(Exception):
    """The training loss became NaN or infinite (raised by :class:`StopOnNonFinite`)."""

    def __init__(self, epoch: int, step: int, value: float):
        super().__init__(f"the loss became {value} in epoch {epoch + 1}, step {step + 1}")
        self.epoch, self.step, self.value = epoch, step, value


class StopOnNonFinite(keras.callbacks.Callback):
    """Raises :class:`NonFiniteLoss` at the first step whose loss (or epoch whose val_loss) is not finite,
    so no checkpoint or model of a diverged run is ever written (Keras' ``TerminateOnNaN`` only stops, and
    the run would then publish).  Listed first, it runs before :class:`Checkpoint`."""

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        value = float((logs or {}).get("loss", 0.0))
        if not np.isfinite(value):
            raise NonFiniteLoss(self.epoch, batch, value)

    def on_epoch_end(self, epoch, logs=None):
        value = float((logs or {}).get("val_loss", 0.0))
        if not np.isfinite(value):
            raise NonFiniteLoss(epoch, -1, value)


class Validation(keras.callbacks.Callback):
    """Adds val_psnr / val_ssim (whole val slices, [0, 1], data_range 1) to the epoch logs."""

    def __init__(self, lr, hr, scale, batch_size=8):
        super().__init__()
        self.lr, self.hr, self.scale, self.bs = lr, hr, scale, batch_size

    def on_epoch_end(self, epoch, logs=None):
        sr = super_resolve(self.model, self.lr, self.scale, self.bs, progress=False)
        logs["val_psnr"] = float(np.mean([psnr(a, b) for a, b in zip(self.hr, sr)]))
        logs["val_ssim"] = float(np.mean([ssim(a, b) for a, b in zip(self.hr, sr)]))


class Progress(keras.callbacks.Callback):
    """One log line about every ``every`` seconds: epoch, step, loss, ETA (works in any terminal/CI)."""

    def __init__(self, name, epochs, steps, first_epoch, every=20.0):
        super().__init__()
        self.name, self.epochs, self.steps, self.every = name, epochs, steps, every
        self.total = (epochs - first_epoch) * steps
        self.done = 0
        self.epoch_seconds: list[float] = []  # this run's epochs (kept out of the logs: timings are no metric)

    def on_train_begin(self, logs=None):
        self.t0 = self.last = time.time()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self.t_epoch = epoch, time.time()

    def on_train_batch_end(self, batch, logs=None):
        self.done += 1
        now = time.time()
        if now - self.last >= self.every or batch + 1 == self.steps:
            self.last = now
            eta = (now - self.t0) / self.done * (self.total - self.done)
            log.info("%s epoch %d/%d step %d/%d loss %.5g  ETA %s", self.name, self.epoch + 1, self.epochs,
                     batch + 1, self.steps, float(logs.get("loss", np.nan)), fmt_time(eta))

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_seconds.append(time.time() - self.t_epoch)
        shown = ", ".join(f"{k} {v:.4g}" for k, v in logs.items() if k != "loss")
        log.info("%s epoch %d/%d done in %s: loss %.5g, %s", self.name, epoch + 1, self.epochs,
                 fmt_time(self.epoch_seconds[-1]), float(logs.get("loss", np.nan)), shown)


class Checkpoint(keras.callbacks.Callback):
    """After each epoch: weights, optimiser state, dvclive logs, state.json (atomically)."""

    def __init__(self, folder, live_dir, fp, stop_after=None):
        super().__init__()
        self.folder, self.live_dir, self.fp, self.stop_after = Path(folder), Path(live_dir), fp, stop_after

    def on_epoch_end(self, epoch, logs=None):
        save_checkpoint(self.folder, self.model, self.live_dir, epoch + 1, self.fp, logs)
        if self.stop_after is not None and epoch + 1 >= self.stop_after:
            # used by the resume test: behaves like a kill right after a checkpoint
            raise KeyboardInterrupt(f"stopped after epoch {epoch + 1} (CARDIAC_SR_STOP_AFTER_EPOCH)")


def fmt_time(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def save_checkpoint(folder: Path, model, live_dir: Path, epochs_done: int, fp: str, logs: dict | None = None) -> None:
    """Weights, optimiser state, dvclive folder and state.json (epochs done, fingerprint, the last epoch's logs)."""
    state = {"epochs_done": epochs_done, "fingerprint": fp,
             "last_epoch": {k: float(v) for k, v in (logs or {}).items()}}
    with atomic_dir(folder) as tmp:
        model.save_weights(tmp / "model.weights.h5")
        np.savez(tmp / "optimizer.npz", *[v.numpy() for v in model.optimizer.variables])
        if live_dir.exists():
            shutil.copytree(live_dir, tmp / "dvclive")
        (tmp / "state.json").write_text(json.dumps(state) + "\n")


def checkpoint_state(folder: Path) -> dict:
    """The checkpoint's state.json, or {} when there is none (or it is unreadable)."""
    try:
        return json.loads((Path(folder) / "state.json").read_text())
    except (OSError, ValueError):
        return {}


def restore_checkpoint(folder: Path, model, live_dir: Path, fp: str) -> int:
    """Load the checkpoint into ``model`` if it matches ``fp``; returns the epochs already done."""
    state = checkpoint_state(folder)
    if not state:
        return 0
    if state.get("fingerprint") != fp:
        log.info("checkpoint %s is for other params, data or code: starting over", folder)
        return 0
    model.load_weights(folder / "model.weights.h5")
    saved = np.load(folder / "optimizer.npz")
    variables = model.optimizer.variables
    if len(saved.files) != len(variables):
        log.warning("checkpoint %s: optimiser state does not match, starting over", folder)
        return 0
    for v, key in zip(variables, saved.files):
        v.assign(saved[key])
    if (folder / "dvclive").exists():
        shutil.rmtree(live_dir, ignore_errors=True)
        shutil.copytree(folder / "dvclive", live_dir)
    return int(state["epochs_done"])
