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
from pathlib import Path

import numpy as np

from .card import Card
from .dataset import load_pairs
from .distributed import fit_multiworker, worker_task
from .errors import CardiacSRError, Interrupted
from .fileio import atomic_file, write_json
from .names import DEFAULT_PERCENTILE, split_model_name, timings_file
from .params import Train, section, train_section

log = logging.getLogger(__name__)

def model_config(params: dict, name: str) -> tuple[Train, int]:
    """Model ``name``'s train params (``train`` with its own ``models.<name>`` entry on top) and the scale
    (``degrade.scale``)."""
    cfg = train_section(params, name)
    scale = section(params, "degrade").scale
    if cfg.patch_size % scale:
        raise CardiacSRError(f"params.yaml: train.patch_size {cfg.patch_size} is not a multiple of "
                             f"degrade.scale {scale}")
    return cfg, scale


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


INIT_DIR = Path("init")  # where train.init models live: a dependency of every train stage in dvc.yaml


def init_path(cfg: Train, name: str) -> Path | None:
    """The ``train.init`` generator to start from (``{model}`` is replaced by the model name), or None."""
    if cfg.init in (None, "", "none"):
        return None
    path = Path(cfg.init.replace("{model}", name))
    if INIT_DIR.resolve() not in path.resolve().parents:
        raise CardiacSRError(f"params.yaml: train.init {str(path)!r} must be a file in {INIT_DIR}/ (a dependency of "
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
    from .metrics import psnr

    return float(np.mean([psnr(h, upsample_bicubic(x, scale)) for x, h in zip(lr, hr)]))


# ----------------------------------------------------------------------------- the stage

def model_card(name: str, params: dict) -> Card:
    """What inference needs to use this model as it was trained (:class:`cardiac_sr.card.Card`).

    Params without a ``prepare`` section (a model trained on arrays of one's own) get the default
    normalisation percentile and no training data source."""
    deg = section(params, "degrade")
    prep = section(params, "prepare") if params.get("prepare") else None
    return Card(name, deg.scale, prep.percentile if prep else DEFAULT_PERCENTILE, deg,
                {"source": prep.source if prep else None, "path": prep.path if prep else None})


def train_model(name: str, params: dict, prepared_dir="data/prepared", degraded_dir="data/degraded",
                model_path=None, live_dir=None, summary_path=None, scratch_dir="scratch/train") -> dict:
    """Train one of the four models; write the ``.keras`` file and dvclive logs; return a summary."""
    import keras
    from dvclive import Live
    from dvclive.keras import DVCLiveCallback

    from .callbacks import (Checkpoint, NonFiniteLoss, Progress, StopOnNonFinite, Validation, checkpoint_state,
                            fmt_time, restore_checkpoint)
    from .losses import make_loss
    from .models import build_generator, generator_kwargs, save_generator

    loss_name, upsampling = split_model_name(name)
    cfg, scale = model_config(params, name)
    model_path = Path(model_path or f"models/{name}.keras")
    live_dir = Path(live_dir or f"dvclive/{name}")
    ckpt_dir = Path(scratch_dir) / name
    worker = 0  # multiworker: this machine's index in TF_CONFIG; worker 0 (the chief) writes the outputs
    if cfg.strategy == "multiworker":
        worker = worker_task()[0]
        if worker:  # the other workers keep their model and logs next to the chief's checkpoint
            own = Path(scratch_dir) / f"{name}.worker{worker}"
            model_path, live_dir, summary_path = own / f"{name}.keras", own / "dvclive", own / "summary.json"
    configure_runtime(cfg)

    hr, lr = load_pairs(prepared_dir, degraded_dir, "train")
    vhr, vlr = load_pairs(prepared_dir, degraded_dir, "val")
    if not len(hr):
        raise CardiacSRError(f"{prepared_dir}: the train split is empty; name training patients in prepare.split")
    has_val = len(vhr) > 0
    if not has_val:
        log.warning("%s: the val split is empty, so this run reports no validation loss or PSNR", name)
    vsel = np.linspace(0, len(vhr) - 1, min(cfg.val_slices, len(vhr))).astype(int)
    init = init_path(cfg, name)
    fp = fingerprint({"name": name, "scale": scale, **cfg.as_dict()}, hr.files + lr.files + ([init] if init else [])
                     + CODE_FILES)

    strategy = make_strategy(cfg.strategy)
    with strategy.scope():
        model = build_generator(**generator_kwargs(cfg, upsampling, scale), name=name)
        loss = make_loss(loss_name, cfg.perceptual)
        # train.ema: Adam also keeps an exponential moving average of the weights, which becomes the model at
        # the end (model.fit's finalize_variable_values; BasicSR's ema_decay)
        optimizer = keras.optimizers.Adam(cfg.learning_rate, use_ema=cfg.ema > 0, ema_momentum=cfg.ema or 0.99)
        model.compile(optimizer=optimizer, loss=loss, jit_compile=cfg.jit_compile)
        model.optimizer.build(model.trainable_variables)
    n_params = int(model.count_params())

    epochs, spe, bs = cfg.epochs, cfg.steps_per_epoch, cfg.batch_size
    live_dir.parent.mkdir(parents=True, exist_ok=True)
    state = checkpoint_state(ckpt_dir)
    if state.get("epochs_done", 0) >= epochs and not model_path.exists():
        # `dvc repro` removes a stage's outputs before it runs, so a complete checkpoint without its model
        # means the user asked for this run (`dvc repro --force`): train again from scratch.
        log.info("%s: the checkpoint holds all %d epochs but %s is absent (dvc repro --force?): training "
                 "from scratch", name, epochs, model_path)
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    start = restore_checkpoint(ckpt_dir, model, live_dir, fp)
    if start:
        log.info("%s: resuming from the checkpoint after epoch %d of %d", name, start, epochs)
    else:
        shutil.rmtree(live_dir, ignore_errors=True)
        if init:
            initialise_from(model, init)
            log.info("%s: starting from the weights of %s (train.init)", name, init)
    log.info("%s: %d parameters, %d epochs x %d steps x batch %d, patches %d px, strategy %s, %d replica(s)",
             name, n_params, epochs, spe, bs, cfg.patch_size, type(strategy).__name__,
             strategy.num_replicas_in_sync)

    seed = cfg.seed
    train_ds = patch_dataset(hr, lr, scale, cfg.patch_size, bs, seed, start_step=start * spe)
    val_ds = patch_dataset(vhr, vlr, scale, cfg.patch_size, bs, seed + 1, 0, cfg.val_batches).cache() if has_val else None
    stop_after = os.environ.get("CARDIAC_SR_STOP_AFTER_EPOCH")
    live = Live(dir=str(live_dir), resume=bool(start), save_dvc_exp=False, dvcyaml=None, report=None)
    if start:
        live.step = start  # dvclive's resume leaves step 0 after one finished epoch; one step per epoch here
    progress = Progress(name, epochs, spe, start)
    callbacks = [StopOnNonFinite()] + ([Validation(vlr[vsel], vhr[vsel], scale)] if has_val else []) + [
        progress, DVCLiveCallback(live=live),
        Checkpoint(ckpt_dir, live_dir, fp, int(stop_after) if stop_after else None)]
    if worker:  # the chief alone writes the checkpoint (validation stays: its inference is a collective op)
        callbacks = callbacks[:-1]
    t0 = time.time()
    if start < epochs:
        try:
            if cfg.strategy == "multiworker":
                history = fit_multiworker(
                    model, loss, strategy, lambda parts: patch_dataset(hr, lr, scale, cfg.patch_size, bs, seed,
                                                                       start_step=start * spe, parts=parts),
                    epochs, start, spe, callbacks, list(val_ds) if has_val else None)
            else:
                history = model.fit(train_ds, epochs=epochs, initial_epoch=start, steps_per_epoch=spe,
                                    validation_data=val_ds, callbacks=callbacks, verbose=0, shuffle=False).history
        except (KeyboardInterrupt, NonFiniteLoss) as exc:
            state = checkpoint_state(ckpt_dir)
            done = state.get("epochs_done", 0) if state.get("fingerprint") == fp else 0
            kept = (f"the checkpoint after epoch {done} of {epochs} is kept in {ckpt_dir}"
                    if done else "no epoch had finished, nothing is kept")
            if isinstance(exc, NonFiniteLoss):
                raise CardiacSRError(f"{name}: training diverged: {exc} (learning rate {cfg.learning_rate}); "
                                     f"no model was published; {kept}") from None
            raise Interrupted(f"{name}: training interrupted; {kept}, re-run to resume" if done else
                              f"{name}: training interrupted; {kept}") from None
        final = {k: float(v[-1]) for k, v in history.items()}
    else:  # a complete checkpoint and its model exist (a re-run by hand): report the last epoch's values
        final = checkpoint_state(ckpt_dir).get("last_epoch", {})
        model.optimizer.finalize_variable_values(model.trainable_variables)  # the moving average, as fit does
        live.end()
    train_seconds = time.time() - t0

    # Publish a clean, uncompiled generator: no loss/optimiser inside, loads in safe mode anywhere.
    clean = build_generator(**generator_kwargs(cfg, upsampling, scale), name=name)
    clean.set_weights(model.get_weights())
    if not all(np.isfinite(w).all() for w in clean.get_weights()):
        raise CardiacSRError(f"{name}: the trained weights are not finite (NaN or inf); no model was published")
    with atomic_file(model_path, suffix=".keras") as tmp:
        save_generator(clean, tmp, model_card(name, params))
    summary = {
        "model": name, "loss": loss_name, "upsampling": upsampling, "parameters": n_params,
        "epochs": epochs, "steps_per_epoch": spe, "batch_size": bs, "patch_size": cfg.patch_size,
        "final": {k: v for k, v in final.items() if k != "epoch_seconds"},  # (in checkpoints of older runs)
        "val_bicubic_psnr": _bicubic_psnr(vlr[vsel], vhr[vsel], scale) if has_val else None,
        "init": str(init) if init else None,
    }
    timings = {"resumed_from_epoch": start, "train_seconds_this_run": round(train_seconds, 1),
               "epoch_seconds": round(float(np.mean(progress.epoch_seconds)), 2) if progress.epoch_seconds else None}
    summary_path = Path(summary_path or f"metrics/train/{name}.json")
    write_json(summary_path, summary)
    write_json(timings_file(summary_path), timings)
    log.info("%s: trained in %s, saved %s", name, fmt_time(train_seconds), model_path)
    return {**summary, **timings}
