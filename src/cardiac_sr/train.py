"""Training one generator: data pipeline, strategy, checkpoints, resume, logs.

:func:`train_model` is the whole ``train`` stage for one model of the matrix
(``perceptual-TS``, ``perceptual-NN``, ``mse-TS``, ``mse-NN``):

* random HR patches (``patch_size``) and the matching LR patches from the
  ``degrade`` output, with flips/rot90, drawn with stateless random ops
  seeded by (seed, step): the input stream is a pure function of the step,
  so a resumed run sees exactly the batches an uninterrupted one would;
* ``model.fit`` with a loss *object* (:mod:`cardiac_sr.losses`), Adam,
  validation loss on fixed val patches and validation PSNR/SSIM on whole val
  slices every epoch, logged by dvclive's Keras callback under
  ``dvclive/<model>/``;
* a checkpoint after every epoch in ``scratch/train/<model>/`` (weights,
  optimiser state, the dvclive folder, and a fingerprint of params and data):
  a re-run after a kill continues from the last finished epoch when the
  fingerprint matches, and starts over otherwise;
* op determinism on, so the same params and seed give the same weights on
  the CPU.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .card import Card
from .dataset import load_pairs
from .distributed import fit_multiworker
from .errors import CardiacSRError, Interrupted
from .fileio import atomic_file, write_json
from .names import CHECKPOINT_DIR, LIVE_DIR, METRICS_DIR, MODELS_DIR, split_model_name, timings_file
from .params import Train

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- data


def patch_batch(hr, lr, scale: int, patch_size: int, draws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (LR, HR) patch pairs for one batch's random draws (B, 5): slice, row, column, rot90, flip.

    ``hr`` and ``lr`` are NumPy or memory-mapped sharded arrays: only the patches are read."""
    n, h, w = lr.shape
    lp = patch_size // scale
    lo = np.empty((len(draws), lp, lp, 1), np.float32)
    hi = np.empty((len(draws), patch_size, patch_size, 1), np.float32)
    for b, (ri, ry, rx, rk, rf) in enumerate(np.asarray(draws, np.int64)):
        i, y, x = int(ri % n), int(ry % (h - lp + 1)), int(rx % (w - lp + 1))
        low = np.rot90(lr[i, y:y + lp, x:x + lp], int(rk % 4))  # counter-clockwise, as tf.image.rot90
        high = np.rot90(hr[i, y * scale:(y + lp) * scale, x * scale:(x + lp) * scale], int(rk % 4))
        if rf % 2 == 1:
            low, high = low[:, ::-1], high[:, ::-1]
        lo[b, ..., 0], hi[b, ..., 0] = low, high
    return lo, hi


def patch_dataset(hr, lr, scale: int, patch_size: int, batch_size: int,
                  seed: int, start_step: int = 0, steps: int | None = None, parts: tuple[int, int, int] = (0, 1, 1)):
    """tf.data of (LR, HR) patch batches; batch ``k`` depends only on (seed, k).

    The random draws are TensorFlow's stateless ones, seeded by (seed, k x 100003 + j) for patch j;
    the patches are read from ``hr``/``lr`` (NumPy or memory-mapped sharded arrays, see
    :mod:`cardiac_sr.dataset`) by :func:`patch_batch`, so the dataset never has to fit in memory.

    ``parts = (first, count, here)``: for training across replicas, each batch is cut into ``count``
    parts of ``batch_size / count`` patches and this dataset yields, per step, the ``here`` parts from
    ``first`` on (one per local replica): all replicas together see exactly the single-process batches.
    """
    import tensorflow as tf

    n, h, w = lr.shape
    lp = patch_size // scale
    if lp > h or lp > w:
        raise CardiacSRError(f"train.patch_size {patch_size} is larger than the HR slices ({h * scale})")
    first, count, here = parts
    if batch_size % count:
        raise CardiacSRError(f"train.batch_size {batch_size} is not a multiple of the {count} replicas in sync")
    per = batch_size // count

    def draw(step, j):
        s = tf.stack([tf.cast(seed, tf.int64), step * 100_003 + j])
        return tf.random.stateless_uniform([5], seed=s, minval=0, maxval=1 << 30, dtype=tf.int64)

    def batch(element):
        step, part = element // here, first + element % here
        js = tf.range(part * per, (part + 1) * per, dtype=tf.int64)
        draws = tf.map_fn(lambda j: draw(step, j), js, fn_output_signature=tf.int64)
        lo, hi = tf.numpy_function(lambda d: patch_batch(hr, lr, scale, patch_size, d), [draws],
                                   (tf.float32, tf.float32), stateful=False)
        return tf.ensure_shape(lo, [per, lp, lp, 1]), tf.ensure_shape(hi, [per, patch_size, patch_size, 1])

    end = start_step + steps if steps is not None else np.iinfo(np.int64).max // (100_003 * here)
    ds = tf.data.Dataset.range(start_step * here, end * here).map(batch, num_parallel_calls=2, deterministic=True)
    ds = ds.prefetch(2)
    # tf.data's autotuner cost up to 2x on 2-core machines (notes/cpu-performance.md): fixed small pools.
    opts = tf.data.Options()
    opts.autotune.enabled = False
    opts.threading.private_threadpool_size = 2
    opts.deterministic = True
    return ds.with_options(opts)


# ----------------------------------------------------------------------------- runtime

def configure_runtime(cfg: Train) -> None:
    """Seeds, op determinism, threads, mixed precision: call before building models."""
    import keras
    import tensorflow as tf

    from tensorflow.python.framework import config as tf_config

    keras.utils.set_random_seed(cfg.seed)
    # Keras silently drops XLA while op determinism is on, so jit_compile (the GPU profile) turns it off.
    if cfg.deterministic if cfg.deterministic is not None else not cfg.jit_compile:
        tf.config.experimental.enable_op_determinism()
    else:
        tf_config.disable_op_determinism()
        log.info("op determinism off (train.jit_compile is on): runs are not bit-reproducible")
    policy = "mixed_float16" if cfg.mixed_precision else "float32"
    keras.mixed_precision.set_global_policy(policy)


def make_strategy(name: str):
    """``auto``: MirroredStrategy over all GPUs when more than one is visible, else the default.

    ``mirrored``: MirroredStrategy over all GPUs, or over all logical CPUs when
    there is no GPU (how the tests exercise it).  ``default``: one device.
    ``multiworker``: MultiWorkerMirroredStrategy over the machines of ``TF_CONFIG``
    (:mod:`cardiac_sr.distributed`).
    """
    import tensorflow as tf

    if name == "multiworker":  # the cluster comes from TF_CONFIG (checked by distributed.worker_task)
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        name = "mirrored" if len(gpus) > 1 else "default"
    if name == "default":
        return tf.distribute.get_strategy()
    devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
    return tf.distribute.MirroredStrategy(devices=devices)


@dataclass(frozen=True)
class RunDir:
    """Where one model's training run reads and writes, all under one ``root`` (the repository, for the
    DVC stage): the published model, its dvclive folder, its summary (and timings) and its checkpoint;
    a ``train.init`` model must be a file in ``root/init/``."""
    root: Path
    model: Path
    live: Path
    summary: Path
    checkpoint: Path

    @classmethod
    def under(cls, root: str | Path, name: str, models_dir: str | Path | None = None) -> "RunDir":
        """The pipeline's layout under ``root``: models/<name>.keras (or ``models_dir``), dvclive/<name>/,
        metrics/train/<name>.json, scratch/train/<name>/."""
        root = Path(root)
        return cls(root, Path(models_dir if models_dir is not None else root / MODELS_DIR) / f"{name}.keras",
                   root / LIVE_DIR / name, root / METRICS_DIR / "train" / f"{name}.json",
                   root / CHECKPOINT_DIR / name)


INIT_DIR = "init"  # where train.init models live (under the run root): a dependency of every train stage in dvc.yaml


def init_path(cfg: Train, name: str, root: str | Path = ".") -> Path | None:
    """The ``train.init`` generator to start from (``{model}`` is replaced by the model name), or None."""
    if cfg.init in (None, "", "none"):
        return None
    path = Path(root) / cfg.init.replace("{model}", name)
    folder = Path(root) / INIT_DIR
    if folder.resolve() not in path.resolve().parents:
        raise CardiacSRError(f"params.yaml: train.init {cfg.init.replace('{model}', name)!r} must be a file in {INIT_DIR}/ (a dependency of "
                             f"the train stages, so DVC re-trains when it changes); copy the model there first")
    if not path.is_file():
        raise CardiacSRError(f"train.init {path}: file not found")
    return path


def _architecture(model) -> list:
    """What must agree for weights to carry over: layer types, weight shapes, and the scale."""
    return [(type(layer).__name__, [tuple(w.shape) for w in layer.weights], layer.get_config().get("scale"))
            for layer in model.layers]


def initialise_from(model, path: Path) -> None:
    """Copy the weights of the ``.keras`` generator at ``path`` into ``model`` (fine-tuning)."""
    from .models import load_generator

    try:
        src = load_generator(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable model file is a user error here
        raise CardiacSRError(f"train.init {path}: not a readable .keras model ({type(exc).__name__})") from None
    if _architecture(src) != _architecture(model):
        raise CardiacSRError(f"train.init {path}: its architecture does not match {model.name} (other upsampling, "
                             f"scale, filters or blocks); start from a model trained with the same train params")
    model.set_weights(src.get_weights())


# The code that decides what a checkpoint's weights mean: a change to it starts training over.
CODE_FILES = [Path(__file__).with_name(f) for f in ("train.py", "callbacks.py", "models.py", "losses.py", "distributed.py")]


def fingerprint(cfg: dict, files: list[Path]) -> str:
    """Hash of the training params, the training data files and the training code (for safe resume)."""
    h = hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode())
    for f in files:
        st = Path(f).stat()
        h.update(f"{Path(f).name}:{st.st_size}".encode())
        with open(f, "rb") as fh:  # head + tail is enough to tell datasets apart, and fast
            h.update(fh.read(1 << 20))
            fh.seek(max(0, st.st_size - (1 << 20)))
            h.update(fh.read())
    return h.hexdigest()[:16]


def _bicubic_psnr(lr: np.ndarray, hr: np.ndarray, scale: int) -> float:
    """The bicubic baseline's mean PSNR on the same val slices as val_psnr (for comparison in the logs)."""
    from .degradation import upsample_bicubic
    from .metrics import image_scores

    return float(np.mean([image_scores(h, upsample_bicubic(x, scale))["psnr"] for x, h in zip(lr, hr, strict=True)]))


# ----------------------------------------------------------------------------- the stage, in steps

def learning_rate(cfg: Train):
    """``train.learning_rate`` as Adam takes it: a number (``schedule: constant``) or a half-cosine from it to 0
    over the run's ``epochs x steps_per_epoch`` steps (``cosine``; SGDR without restarts, as BasicSR's
    CosineAnnealingRestartLR with one period).  The optimiser's step count is in the checkpoint, so a resumed
    run continues the curve where it stopped."""
    import keras

    if cfg.schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(cfg.learning_rate, decay_steps=cfg.epochs * cfg.steps_per_epoch)
    return cfg.learning_rate


def build(name: str, cfg: Train, scale: int, strategy):
    """Build and compile the generator in ``strategy``'s scope (keras-io's visible compile)."""
    import keras

    from .losses import make_loss
    from .models import build_generator, generator_kwargs

    loss_name, upsampling = split_model_name(name)
    with strategy.scope():
        model = build_generator(**generator_kwargs(cfg, upsampling, scale), name=name)
        loss = make_loss(loss_name, cfg.perceptual)
        # train.ema: Adam also keeps an exponential moving average of the weights, which becomes the model at
        # the end (model.fit's finalize_variable_values; BasicSR's ema_decay)
        optimizer = keras.optimizers.Adam(learning_rate(cfg), use_ema=cfg.ema > 0, ema_momentum=cfg.ema or 0.99)
        model.compile(optimizer=optimizer, loss=loss, jit_compile=cfg.jit_compile)
        model.optimizer.build(model.trainable_variables)
    return model, loss


def resume_or_init(model, run: RunDir, fp: str, epochs: int, init: Path | None) -> int:
    """Continue from the run's checkpoint when its fingerprint matches (returns the epochs already done),
    else start over from ``init``'s weights or the random ones (returns 0)."""
    from .callbacks import checkpoint_state, restore_checkpoint

    name = model.name
    if checkpoint_state(run.checkpoint).get("epochs_done", 0) >= epochs and not run.model.exists():
        # `dvc repro` removes a stage's outputs before it runs, so a complete checkpoint without its model
        # means the user asked for this run (`dvc repro --force`): train again from scratch.
        log.info("%s: the checkpoint holds all %d epochs but %s is absent (dvc repro --force?): training "
                 "from scratch", name, epochs, run.model)
        shutil.rmtree(run.checkpoint, ignore_errors=True)
    start = restore_checkpoint(run.checkpoint, model, run.live, fp)
    if start:
        log.info("%s: resuming from the checkpoint after epoch %d of %d", name, start, epochs)
    else:
        shutil.rmtree(run.live, ignore_errors=True)
        if init:
            initialise_from(model, init)
            log.info("%s: starting from the weights of %s (train.init)", name, init)
    return start


def fit(model, loss, strategy, cfg: Train, scale: int, data: dict, run: RunDir, fp: str, start: int,
        chief: bool) -> tuple[dict, list[float]]:
    """Train epochs ``start + 1 .. cfg.epochs`` with validation, progress, dvclive logs and a checkpoint
    after each epoch; returns the last epoch's logs and the epoch times.  An interrupt or a diverged loss
    is one line saying what was kept."""
    from dvclive import Live
    from dvclive.keras import DVCLiveCallback

    from .callbacks import Checkpoint, NonFiniteLoss, Progress, StopOnNonFinite, Validation, checkpoint_state

    name, epochs, spe, bs = model.name, cfg.epochs, cfg.steps_per_epoch, cfg.batch_size
    hr, lr, vhr, vlr, vsel = data["hr"], data["lr"], data["vhr"], data["vlr"], data["vsel"]
    has_val = len(vhr) > 0
    train_ds = patch_dataset(hr, lr, scale, cfg.patch_size, bs, cfg.seed, start_step=start * spe)
    val_ds = (patch_dataset(vhr, vlr, scale, cfg.patch_size, bs, cfg.seed + 1, 0, cfg.val_batches).cache()
              if has_val else None)
    stop_after = os.environ.get("CARDIAC_SR_STOP_AFTER_EPOCH")
    live = Live(dir=str(run.live), resume=bool(start), save_dvc_exp=False, dvcyaml=None, report=None)
    if start:
        live.step = start  # dvclive's resume leaves step 0 after one finished epoch; one step per epoch here
    progress = Progress(name, epochs, spe, start)
    callbacks = [StopOnNonFinite()] + ([Validation(vlr[vsel], vhr[vsel], scale)] if has_val else []) + [
        progress, DVCLiveCallback(live=live)]
    if chief:  # the chief alone writes the checkpoint (validation stays: its inference is a collective op)
        callbacks.append(Checkpoint(run.checkpoint, run.live, fp, int(stop_after) if stop_after else None))
    if start >= epochs:  # a complete checkpoint and its model exist (a re-run by hand): the last epoch's values
        model.optimizer.finalize_variable_values(model.trainable_variables)  # the moving average, as fit does
        live.end()
        return checkpoint_state(run.checkpoint).get("last_epoch", {}), []
    try:
        if cfg.strategy == "multiworker":
            history = fit_multiworker(
                model, loss, strategy, lambda parts: patch_dataset(hr, lr, scale, cfg.patch_size, bs, cfg.seed,
                                                                   start_step=start * spe, parts=parts),
                epochs, start, spe, callbacks, list(val_ds) if has_val else None)
        else:
            history = model.fit(train_ds, epochs=epochs, initial_epoch=start, steps_per_epoch=spe,
                                validation_data=val_ds, callbacks=callbacks, verbose=0, shuffle=False).history
    except (KeyboardInterrupt, NonFiniteLoss) as exc:
        state = checkpoint_state(run.checkpoint)
        done = state.get("epochs_done", 0) if state.get("fingerprint") == fp else 0
        kept = (f"the checkpoint after epoch {done} of {epochs} is kept in {run.checkpoint}"
                if done else "no epoch had finished, nothing is kept")
        if isinstance(exc, NonFiniteLoss):
            raise CardiacSRError(f"{name}: training diverged: {exc} (learning rate {cfg.learning_rate}); "
                                 f"no model was published; {kept}") from None
        raise Interrupted(f"{name}: training interrupted; {kept}, re-run to resume" if done else
                          f"{name}: training interrupted; {kept}") from None
    return {k: float(v[-1]) for k, v in history.items()}, progress.epoch_seconds


def blend_with_init(weights: list, init: Path, keep: float) -> list:
    """``train.keep_init``: the weight-space average ``keep x init + (1 - keep) x trained`` (WiSE-FT, Wortsman
    et al., CVPR 2022): a fine-tuned model pulled back toward its start keeps more of what the start knew
    (other sites, other scans) and most of what the fine-tuning added.  The two share an architecture
    (checked when the run started from ``init``)."""
    from .models import load_generator

    start = load_generator(init).get_weights()
    return [keep * w0 + (1.0 - keep) * w for w0, w in zip(start, weights, strict=True)]


def publish(model, cfg: Train, card: Card, path: Path, init: Path | None = None) -> None:
    """Write a clean, uncompiled generator with its card: no loss or optimiser inside, loads in safe mode
    anywhere; refused when a weight is not finite.  With ``train.keep_init`` > 0 the published weights
    are blended with those of ``init`` (:func:`blend_with_init`)."""
    from .models import build_generator, generator_kwargs, save_generator

    clean = build_generator(**generator_kwargs(cfg, split_model_name(card.name)[1], card.scale), name=card.name)
    weights = model.get_weights()
    if cfg.keep_init > 0:
        weights = blend_with_init(weights, init, cfg.keep_init)
    clean.set_weights(weights)
    if not all(np.isfinite(w).all() for w in clean.get_weights()):
        raise CardiacSRError(f"{card.name}: the trained weights are not finite (NaN or inf); no model was published")
    with atomic_file(path, suffix=".keras") as tmp:
        save_generator(clean, tmp, card)


def train_model(name: str, cfg: Train, card: Card, prepared_dir: str | Path, degraded_dir: str | Path,
                run: RunDir) -> dict:
    """Train one of the four models on the prepared and degraded data and publish it with ``card`` in
    ``run``: build and compile, resume or initialise, fit, publish; returns the summary it writes."""
    from .callbacks import fmt_time
    from .distributed import worker_run

    loss_name, upsampling = split_model_name(name)
    scale = card.scale
    if cfg.patch_size % scale:
        raise CardiacSRError(f"params.yaml: train.patch_size {cfg.patch_size} is not a multiple of "
                             f"degrade.scale {scale}")
    worker, run = worker_run(run, name, cfg.strategy)
    configure_runtime(cfg)

    hr, lr = load_pairs(prepared_dir, degraded_dir, "train")
    vhr, vlr = load_pairs(prepared_dir, degraded_dir, "val")
    if not len(hr):
        raise CardiacSRError(f"{prepared_dir}: the train split is empty; name training patients in prepare.split")
    if not len(vhr):
        log.warning("%s: the val split is empty, so this run reports no validation loss or PSNR", name)
    vsel = np.linspace(0, len(vhr) - 1, min(cfg.val_slices, len(vhr))).astype(int)
    init = init_path(cfg, name, run.root)
    if cfg.keep_init > 0 and init is None:
        raise CardiacSRError(f"params.yaml: train.keep_init {cfg.keep_init} needs train.init (the model whose weights "
                             f"it keeps a share of); set train.init or keep_init: 0")
    fp = fingerprint({"name": name, "scale": scale, **cfg.as_dict()}, hr.files + lr.files + ([init] if init else [])
                     + CODE_FILES)

    strategy = make_strategy(cfg.strategy)
    model, loss = build(name, cfg, scale, strategy)
    n_params = int(model.count_params())
    run.live.parent.mkdir(parents=True, exist_ok=True)
    start = resume_or_init(model, run, fp, cfg.epochs, init)
    log.info("%s: %d parameters, %d epochs x %d steps x batch %d, patches %d px, strategy %s, %d replica(s)",
             name, n_params, cfg.epochs, cfg.steps_per_epoch, cfg.batch_size, cfg.patch_size,
             type(strategy).__name__, strategy.num_replicas_in_sync)

    t0 = time.time()
    final, epoch_seconds = fit(model, loss, strategy, cfg, scale,
                               {"hr": hr, "lr": lr, "vhr": vhr, "vlr": vlr, "vsel": vsel}, run, fp, start,
                               chief=worker == 0)
    train_seconds = time.time() - t0
    publish(model, cfg, card, run.model, init)

    summary = {
        "model": name, "loss": loss_name, "upsampling": upsampling, "parameters": n_params,
        "epochs": cfg.epochs, "steps_per_epoch": cfg.steps_per_epoch, "batch_size": cfg.batch_size,
        "patch_size": cfg.patch_size,
        "final": {k: v for k, v in final.items() if k != "epoch_seconds"},  # (in checkpoints of older runs)
        "val_bicubic_psnr": _bicubic_psnr(vlr[vsel], vhr[vsel], scale) if len(vhr) else None,
        "init": cfg.init.replace("{model}", name) if init else None,  # as params.yaml names it
        "keep_init": cfg.keep_init,
    }
    timings = {"resumed_from_epoch": start, "train_seconds_this_run": round(train_seconds, 1),
               "epoch_seconds": round(float(np.mean(epoch_seconds)), 2) if epoch_seconds else None}
    write_json(run.summary, summary)
    write_json(timings_file(run.summary), timings)
    log.info("%s: trained in %s, saved %s", name, fmt_time(train_seconds), run.model)
    return {**summary, **timings}
