"""Training across machines: ``train.strategy: multiworker``.

TensorFlow's own multi-worker engine, ``tf.distribute.MultiWorkerMirroredStrategy``,
configured by the standard ``TF_CONFIG`` environment variable on each machine
(README "Training across machines").  Keras 3's ``model.fit`` does not run under
it (keras-team/keras#20585, docs/multiworker.md), so :func:`fit_multiworker`
is the training loop instead: a ``tf.function`` step run on every replica by
``strategy.run`` over ``strategy.distribute_datasets_from_function``, with the
Keras callbacks driven by hand.  Each replica reads its own part of every
batch (:func:`cardiac_sr.train.patch_dataset` ``parts``), so together the
replicas see exactly the batches of a single-process run; gradients are summed
across replicas (Keras losses already divide by the replica count), and every
worker ends with the same weights.  The chief (worker 0) alone writes the
model, the checkpoints and the dvclive logs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os

import numpy as np

from .errors import CardiacSRError

log = logging.getLogger("cardiac_sr.train")


def worker_task() -> tuple[int, int]:
    """(this worker's index, number of workers) from ``TF_CONFIG``, with a clear error when it is unusable."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise CardiacSRError("train.strategy multiworker needs the TF_CONFIG environment variable on every worker "
                             "(README: Training across machines)")
    try:
        cfg = json.loads(raw)
        workers = cfg["cluster"]["worker"]
        task = cfg["task"]
        if task["type"] not in ("worker", "chief"):
            raise ValueError(f"task type {task['type']!r}")
        index = int(task["index"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CardiacSRError(f"TF_CONFIG: not a worker cluster spec ({exc}); expected "
                             '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": N}}') from None
    if not 0 <= index < len(workers):
        raise CardiacSRError(f"TF_CONFIG: task index {index} is not one of the {len(workers)} workers")
    return index, len(workers)


def worker_run(run, name: str, strategy: str):
    """(this worker's index, where it writes): worker 0 of a ``multiworker`` cluster (the chief), or the one
    process of any other strategy, writes ``run``'s outputs; the other workers keep their model, logs and
    summary next to the chief's checkpoint (``scratch/train/<name>.worker<N>/``) and read its checkpoint."""
    if strategy != "multiworker":
        return 0, run
    worker = worker_task()[0]
    if not worker:
        return 0, run
    own = run.checkpoint.parent / f"{name}.worker{worker}"
    return worker, dataclasses.replace(run, model=own / f"{name}.keras", live=own / "dvclive",
                                       summary=own / "summary.json")


def fit_multiworker(model, loss, strategy, make_dataset, epochs: int, initial_epoch: int, steps_per_epoch: int,
                    callbacks: list, val_batches=None) -> dict:
    """Train ``model`` (built and compiled in ``strategy.scope()``) for epochs ``initial_epoch + 1 .. epochs``.

    ``make_dataset(parts)`` returns the tf.data of this worker's batch parts (see ``patch_dataset``);
    ``val_batches``: fixed (LR, HR) batches whose mean loss is ``val_loss``.  Returns the history
    (``{metric: [one value per epoch]}``) as ``model.fit`` does.
    """
    import keras
    import tensorflow as tf

    replicas = strategy.num_replicas_in_sync

    def dataset_fn(ctx):
        here = replicas // ctx.num_input_pipelines
        return make_dataset((ctx.input_pipeline_id * here, replicas, here))

    batches = iter(strategy.distribute_datasets_from_function(dataset_fn))
    optimizer = model.optimizer

    @tf.function
    def train_step(iterator):
        def step(lo, hi):
            with tf.GradientTape() as tape:
                value = loss(hi, model(lo, training=True))  # already divided by the replica count
            grads = tape.gradient(value, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return value

        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(step, args=next(iterator)), axis=None)

    cbs = keras.callbacks.CallbackList(callbacks, model=model)
    history: dict[str, list] = {}
    cbs.on_train_begin()
    for epoch in range(initial_epoch, epochs):
        cbs.on_epoch_begin(epoch)
        total = 0.0
        for b in range(steps_per_epoch):
            total += float(train_step(batches))
            cbs.on_train_batch_end(b, {"loss": total / (b + 1)})
        logs = {"loss": total / steps_per_epoch}
        if val_batches is not None:  # local, outside the strategy: every worker holds the same weights
            logs["val_loss"] = float(np.mean([float(loss(hi, model(lo, training=False))) for lo, hi in val_batches]))
        cbs.on_epoch_end(epoch, logs)
        for k, v in logs.items():
            history.setdefault(k, []).append(v)
    optimizer.finalize_variable_values(model.trainable_variables)  # train.ema: the moving average, as fit does
    cbs.on_train_end()
    return history
