"""The train stage: data pipeline, determinism, resume after a kill, tf.distribute, logs."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from cardiac_sr.dataset import load_pairs
from cardiac_sr.degradation import blur_bicubic
from cardiac_sr.errors import CardiacSRError, Interrupted
from cardiac_sr.models import load_generator
from cardiac_sr.names import split_model_name
from cardiac_sr.params import Params
from cardiac_sr.train import patch_dataset

from conftest import ROOT, TINY_TRAIN, train_tiny


def _train(tmp_path, tiny_data, params, name="mse-TS", tag="run"):
    prepared, degraded = tiny_data
    out = tmp_path / tag
    return out, train_tiny(name, params, prepared, degraded, out)


def _weights(path):
    return load_generator(path).get_weights()


def test_patches_are_aligned_seeded_and_resumable(tiny_data):
    hr, lr = load_pairs(*tiny_data, "train")
    batches = list(patch_dataset(hr, lr, 4, 32, 3, seed=9, start_step=0, steps=3))
    again = list(patch_dataset(hr, lr, 4, 32, 3, seed=9, start_step=2, steps=1))
    np.testing.assert_array_equal(batches[2][1], again[0][1])
    lo, hi = (np.asarray(t) for t in batches[0])
    assert lo.shape == (3, 8, 8, 1) and hi.shape == (3, 32, 32, 1)
    # the pair is aligned: degrading the HR patch gives the LR patch away from its border
    # (flips/rot90 commute with the degradation)
    deg = blur_bicubic(hi[0, ..., 0], 4)
    assert np.abs(deg[2:-2, 2:-2] - lo[0, 2:-2, 2:-2, 0]).max() < 0.02


def _in_memory_patch_dataset(hr, lr, scale, patch_size, batch_size, seed, start_step, steps):
    """The training input pipeline before the dataset was sharded (arrays in tf.constants, patches cut,
    rotated and flipped with TensorFlow ops): the reference the streaming pipeline must equal."""
    import tensorflow as tf

    n, h, w = lr.shape
    lp = patch_size // scale
    hr_t, lr_t = tf.constant(np.asarray(hr)[..., None]), tf.constant(np.asarray(lr)[..., None])

    def one_patch(step, j):
        s = tf.stack([tf.cast(seed, tf.int64), step * 100_003 + j])
        r = tf.random.stateless_uniform([5], seed=s, minval=0, maxval=1 << 30, dtype=tf.int64)
        i, y, x = r[0] % n, r[1] % (h - lp + 1), r[2] % (w - lp + 1)
        lo = lr_t[i, y:y + lp, x:x + lp]
        hi = hr_t[i, y * scale:(y + lp) * scale, x * scale:(x + lp) * scale]
        k = tf.cast(r[3] % 4, tf.int32)
        lo, hi = tf.image.rot90(lo, k), tf.image.rot90(hi, k)
        flip = r[4] % 2 == 1
        lo = tf.cond(flip, lambda: tf.image.flip_left_right(lo), lambda: lo)
        hi = tf.cond(flip, lambda: tf.image.flip_left_right(hi), lambda: hi)
        return lo, hi

    def batch(step):
        js = tf.range(batch_size, dtype=tf.int64)
        return tf.map_fn(lambda j: one_patch(step, j), js, fn_output_signature=(tf.float32, tf.float32))

    return tf.data.Dataset.range(start_step, start_step + steps).map(batch)


def test_streamed_patches_equal_the_in_memory_pipeline(tiny_data):
    """Patches read from the memory-mapped shards are bit-identical to the old in-memory pipeline's, for
    every rotation and flip (so the same params still give the same weights)."""
    hr, lr = load_pairs(*tiny_data, "train")
    assert type(hr).__name__ == "ShardedArray" and not isinstance(hr, np.ndarray)  # memory-mapped, not loaded
    streamed = list(patch_dataset(hr, lr, 4, 32, 8, seed=3, start_step=5, steps=6))
    reference = list(_in_memory_patch_dataset(hr, lr, 4, 32, 8, seed=3, start_step=5, steps=6))
    for (lo, hi), (lo_ref, hi_ref) in zip(streamed, reference, strict=True):
        np.testing.assert_array_equal(lo.numpy(), lo_ref.numpy())
        np.testing.assert_array_equal(hi.numpy(), hi_ref.numpy())
    # 48 draws: every one of the 8 rotations/flips occurs, so the comparison covers them all
    import tensorflow as tf

    draws = [tf.random.stateless_uniform([5], seed=[3, step * 100_003 + j], minval=0, maxval=1 << 30,
                                         dtype=tf.int64).numpy() for step in range(5, 11) for j in range(8)]
    assert len({(int(d[3] % 4), int(d[4] % 2)) for d in draws}) == 8


def test_training_is_deterministic_and_logs(tmp_path, tiny_data, tiny_params, caplog):
    caplog.set_level("INFO")
    a, summary = _train(tmp_path, tiny_data, tiny_params, tag="a")
    b, _ = _train(tmp_path, tiny_data, tiny_params, tag="b")
    for x, y in zip(_weights(a / "mse-TS.keras"), _weights(b / "mse-TS.keras"), strict=True):
        np.testing.assert_array_equal(x, y)
    assert (a / "mse-TS.keras").read_bytes() == (b / "mse-TS.keras").read_bytes()  # the md5 dvc.lock records
    assert any("ETA" in r.message and "step 3/3" in r.message for r in caplog.records)
    assert summary["parameters"] > 0 and summary["epochs"] == 2 and summary["epoch_seconds"] > 0
    rows = (a / "dvclive" / "mse-TS" / "plots" / "metrics" / "eval" / "psnr.tsv").read_text().splitlines()
    assert rows[0].split("\t") == ["step", "psnr"] and len(rows) == 3  # dvclive: val_psnr -> eval/psnr
    metrics = json.loads((a / "dvclive" / "mse-TS" / "metrics.json").read_text())
    assert {"loss"} <= set(metrics["train"]) and {"loss", "psnr", "ssim"} <= set(metrics["eval"])
    # no timing in a file DVC compares as metrics: dvclive's metrics.json and metrics/train/<model>.json
    assert "epoch_seconds" not in metrics["train"]
    saved = json.loads((a / "summary.json").read_text())
    assert not {"epoch_seconds", "train_seconds_this_run", "resumed_from_epoch"} & set(saved)
    assert "epoch_seconds" not in saved["final"]
    assert json.loads((a / "summary.timings.json").read_text())["epoch_seconds"] > 0


def test_interrupted_training_resumes(tmp_path, tiny_data, tiny_params, monkeypatch):
    full, _ = _train(tmp_path, tiny_data, tiny_params, tag="full")
    monkeypatch.setenv("CARDIAC_SR_STOP_AFTER_EPOCH", "1")
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path, tiny_data, tiny_params, tag="killed")
    assert not (tmp_path / "killed" / "mse-TS.keras").exists()
    monkeypatch.delenv("CARDIAC_SR_STOP_AFTER_EPOCH")
    _, summary = _train(tmp_path, tiny_data, tiny_params, tag="killed")
    assert summary["resumed_from_epoch"] == 1
    for x, y in zip(_weights(full / "mse-TS.keras"), _weights(tmp_path / "killed" / "mse-TS.keras"), strict=True):
        np.testing.assert_allclose(x, y, atol=1e-6)
    rows = (tmp_path / "killed" / "dvclive" / "mse-TS" / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()
    assert [r.split("\t")[0] for r in rows[1:]] == ["0", "1"]  # the log continues; no epoch twice
    # other params: the checkpoint is not used
    tiny_params["learning_rate"] = 0.002
    tiny_params["train"]["learning_rate"] = 0.002
    _, summary = _train(tmp_path, tiny_data, tiny_params, tag="killed")
    assert summary["resumed_from_epoch"] == 0


def test_cosine_schedule_decays_to_zero_and_survives_resume(tmp_path, tiny_data, tiny_params, monkeypatch):
    """train.schedule: cosine: the rate falls from learning_rate to 0 over epochs x steps (half of it half-way),
    training with it differs from the constant rate, and a resumed run continues the curve (same weights as
    the uninterrupted run, which it would not be if the step count restarted at 0)."""
    from cardiac_sr.params import Train
    from cardiac_sr.train import learning_rate

    cfg = Train.of({**tiny_params["train"], "schedule": "cosine", "learning_rate": 0.002}, "train")
    curve = learning_rate(cfg)
    steps = cfg.epochs * cfg.steps_per_epoch
    assert [float(curve(s)) for s in (0, steps / 2, steps)] == pytest.approx([0.002, 0.001, 0.0], abs=1e-9)
    assert learning_rate(Train.of(tiny_params["train"], "train")) == 0.001  # constant: the number itself
    constant, _ = _train(tmp_path, tiny_data, tiny_params, tag="constant")
    tiny_params["train"]["schedule"] = "cosine"
    full, _ = _train(tmp_path, tiny_data, tiny_params, tag="full")
    assert any(not np.array_equal(a, b) for a, b in zip(_weights(full / "mse-TS.keras"),
                                                           _weights(constant / "mse-TS.keras")))
    monkeypatch.setenv("CARDIAC_SR_STOP_AFTER_EPOCH", "1")
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path, tiny_data, tiny_params, tag="killed")
    monkeypatch.delenv("CARDIAC_SR_STOP_AFTER_EPOCH")
    _, summary = _train(tmp_path, tiny_data, tiny_params, tag="killed")
    assert summary["resumed_from_epoch"] == 1
    for x, y in zip(_weights(full / "mse-TS.keras"), _weights(tmp_path / "killed" / "mse-TS.keras"), strict=True):
        np.testing.assert_allclose(x, y, atol=1e-6)


def test_weight_moving_average_is_published_and_survives_resume(tmp_path, tiny_data, tiny_params, monkeypatch):
    """train.ema: the published model is the moving average of the weights (not the last step's weights),
    also after a resume and on a re-run of a finished stage."""
    plain, _ = _train(tmp_path, tiny_data, tiny_params, tag="plain")
    tiny_params["train"]["ema"] = 0.5
    ema, _ = _train(tmp_path, tiny_data, tiny_params, tag="ema")
    published, last = _weights(ema / "mse-TS.keras"), _weights(plain / "mse-TS.keras")
    # the raw trajectory is the same (the average is only kept beside it) ...
    state = np.load(ema / "scratch" / "mse-TS" / "optimizer.npz")
    ckpt = load_generator(plain / "mse-TS.keras")
    ckpt.load_weights(ema / "scratch" / "mse-TS" / "model.weights.h5")
    for a, b in zip(ckpt.get_weights(), last, strict=True):
        np.testing.assert_array_equal(a, b)
    # ... and what is published is the average: other weights, which the optimiser state holds
    assert any(not np.array_equal(a, b) for a, b in zip(published, last))
    averages = [state[k] for k in state.files if state[k].shape in {w.shape for w in published}]
    assert any(np.array_equal(published[-2], a) for a in averages if a.shape == published[-2].shape)
    # a kill after epoch 1 and a resume publish the same average; so does a re-run of the finished stage
    monkeypatch.setenv("CARDIAC_SR_STOP_AFTER_EPOCH", "1")
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path, tiny_data, tiny_params, tag="killed")
    monkeypatch.delenv("CARDIAC_SR_STOP_AFTER_EPOCH")
    for tag in ("killed", "killed"):  # resume, then a re-run with everything done
        _train(tmp_path, tiny_data, tiny_params, tag=tag)
        for a, b in zip(published, _weights(tmp_path / tag / "mse-TS.keras"), strict=True):
            np.testing.assert_allclose(a, b, atol=1e-6)


def test_perceptual_model_trains(tmp_path, tiny_data, tiny_params):
    tiny_params["train"]["epochs"] = 1
    out, summary = _train(tmp_path, tiny_data, tiny_params, name="perceptual-NN")
    assert summary["loss"] == "perceptual" and np.isfinite(summary["final"]["loss"])
    assert (out / "perceptual-NN.keras").is_file()


def test_mirrored_strategy_on_two_logical_cpus(tmp_path, tiny_data):
    prepared, degraded = tiny_data
    script = textwrap.dedent(f"""
        import logging; logging.basicConfig(level=logging.INFO)
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import sys; sys.path.insert(0, {str(ROOT / 'tests')!r})
        from conftest import TINY_DEGRADE, TINY_TRAIN, train_tiny
        params = {{"degrade": TINY_DEGRADE, "train": dict(TINY_TRAIN, strategy="mirrored", epochs=1)}}
        train_tiny("mse-NN", params, {str(prepared)!r}, {str(degraded)!r}, {str(tmp_path)!r})
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MirroredStrategy, 2 replica(s)" in proc.stderr
    assert (tmp_path / "mse-NN.keras").is_file()


_WORKER = textwrap.dedent("""
    import json, logging, sys
    logging.basicConfig(level=logging.INFO)
    from cardiac_sr.runtime import start_tensorflow
    start_tensorflow()
    sys.path.insert(0, sys.argv[5])
    from conftest import train_tiny
    params, prepared, degraded, out = json.loads(sys.argv[1]), *sys.argv[2:5]
    train_tiny("mse-TS", params, prepared, degraded, out)
""")


def _free_ports(n):
    import socket

    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_multiworker_training_on_two_local_workers(tmp_path, tiny_data, tiny_params):
    """train.strategy multiworker: two worker processes on localhost (TF_CONFIG) train together, end with
    identical weights, and match a single-process run of the same params (they saw the same batches)."""
    tiny_params["train"]["ema"] = 0.5  # and the published weights are the moving average, as with model.fit
    params = dict(tiny_params, train=dict(tiny_params["train"], strategy="multiworker"))
    hosts = [f"localhost:{p}" for p in _free_ports(2)]
    out = tmp_path / "mw"
    procs = []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": {"worker": hosts},
                                                     "task": {"type": "worker", "index": index}}))
        procs.append(subprocess.Popen([sys.executable, "-c", _WORKER, json.dumps(params), *map(str, tiny_data),
                                       str(out), str(ROOT / "tests")], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    assert "num_workers = 2" in logs[0] and "2 replica(s)" in logs[0]
    chief, other = _weights(out / "mse-TS.keras"), _weights(out / "scratch" / "mse-TS.worker1" / "mse-TS.keras")
    for a, b in zip(chief, other, strict=True):
        np.testing.assert_array_equal(a, b)
    assert (out / "dvclive" / "mse-TS" / "metrics.json").is_file() and json.loads((out / "summary.json").read_text())["epochs"] == 2
    single, _ = _train(tmp_path, tiny_data, tiny_params, tag="single")
    for a, b in zip(chief, _weights(single / "mse-TS.keras"), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)  # the sum of two half-batch gradients: round-off only


def test_multiworker_needs_tf_config(tiny_data, tiny_params, tmp_path, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    params = dict(tiny_params, train=dict(tiny_params["train"], strategy="multiworker"))
    with pytest.raises(CardiacSRError, match="needs the TF_CONFIG environment variable"):
        _train(tmp_path, tiny_data, params)
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {}}')
    with pytest.raises(CardiacSRError, match="TF_CONFIG: not a worker cluster spec"):
        _train(tmp_path, tiny_data, params)


def test_batch_parts_of_all_replicas_make_the_single_batch(tiny_data):
    hr, lr = load_pairs(*tiny_data, "train")
    whole = list(patch_dataset(hr, lr, 4, 32, 8, seed=2, start_step=1, steps=2))
    worker0 = list(patch_dataset(hr, lr, 4, 32, 8, seed=2, start_step=1, steps=2, parts=(0, 4, 2)))
    worker1 = list(patch_dataset(hr, lr, 4, 32, 8, seed=2, start_step=1, steps=2, parts=(2, 4, 2)))
    for k in range(2):  # per step: worker 0 yields parts 0 and 1, worker 1 parts 2 and 3 (2 patches each)
        joined = np.concatenate([worker0[2 * k][1], worker0[2 * k + 1][1], worker1[2 * k][1], worker1[2 * k + 1][1]])
        np.testing.assert_array_equal(joined, whole[k][1])
    with pytest.raises(CardiacSRError, match="not a multiple of the 3 replicas"):
        patch_dataset(hr, lr, 4, 32, 8, seed=2, parts=(0, 3, 1))


def test_config_errors(tiny_params):
    with pytest.raises(CardiacSRError, match="valid values: perceptual-TS"):
        split_model_name("mse-XX")
    del tiny_params["train"]["epochs"]
    with pytest.raises(CardiacSRError, match="train.epochs"):
        Params.of(tiny_params)
    tiny_params["train"]["epochs"] = 1
    tiny_params["train"]["patch_size"] = 30
    with pytest.raises(CardiacSRError, match="multiple of"):  # refused before any data is read
        train_tiny("mse-TS", tiny_params, "nowhere", "nowhere", "nowhere")
    tiny_params["train"]["patch_size"] = 32
    tiny_params["models"] = {"mse-TS": {"epochs": 7}}
    assert Params.of(tiny_params).train_for("mse-TS").epochs == 7


def test_gpu_profile_code_path_runs_on_cpu(tmp_path, tiny_data, tiny_params):
    """Mixed precision + XLA (the GPU profile's switches) train and save a float32-output model."""
    import keras

    import warnings

    tiny_params["train"].update(epochs=1, mixed_precision=True, jit_compile=True)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out, summary = _train(tmp_path, tiny_data, tiny_params, name="mse-NN")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert not [w for w in caught if "jit_compile" in str(w.message)]  # XLA really on
    assert np.isfinite(summary["final"]["loss"])
    y = load_generator(out / "mse-NN.keras").predict_on_batch(np.zeros((1, 8, 8, 1), np.float32))
    assert y.dtype == np.float32


@pytest.mark.parametrize("key, value, message", [
    ("steps_per_epoch", 0, r"'train.steps_per_epoch' must be in \[1, 1000000\], got 0"),
    ("epochs", 0, r"'train.epochs' must be in \[1, 100000\], got 0"),
    ("epochs", -3, r"'train.epochs' must be in \[1, 100000\], got -3"),
    ("batch_size", 0, r"'train.batch_size' must be in \[1, 1024\], got 0"),
    ("learning_rate", "abc", r"'train.learning_rate' must be a number, got 'abc'"),
    ("learning_rate", -0.001, r"'train.learning_rate' must be in \[0, 1\], got -0.001"),
    ("patch_size", 32.5, r"'train.patch_size' must be an integer, got 32.5"),
])
def test_bad_numeric_train_params_are_refused_before_training(tiny_params, key, value, message):
    """steps_per_epoch 0 used to hang, epochs 0 to publish an untrained model, batch_size 0 to crash in TF."""
    tiny_params["train"][key] = value
    with pytest.raises(CardiacSRError, match=message):
        Params.of(tiny_params)
    tiny_params["train"][key] = TINY_TRAIN[key]
    tiny_params["models"] = {"mse-TS": {key: value}}  # a per-model override is named as such
    with pytest.raises(CardiacSRError, match=message.replace("train.", "models.mse-TS.")):
        Params.of(tiny_params)


def test_ctrl_c_in_training_says_which_checkpoint_is_kept(tmp_path, tiny_data, tiny_params, monkeypatch):
    monkeypatch.setenv("CARDIAC_SR_STOP_AFTER_EPOCH", "1")
    with pytest.raises(Interrupted, match=r"mse-TS: training interrupted; the checkpoint after epoch 1 of 2 is "
                                          r"kept in .*scratch.*mse-TS, re-run to resume"):
        _train(tmp_path, tiny_data, tiny_params)


def test_ctrl_c_in_a_stage_prints_one_line_and_exits_130(tmp_path):
    """stages/_common.run: an interrupt is one line on stderr and exit status 130, not a traceback."""
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT / 'stages')!r})
        from _common import run
        from cardiac_sr.errors import Interrupted
        def stage(params):
            raise Interrupted("mse-NN: training interrupted; the checkpoint after epoch 3 of 10 is kept")
        run(stage)
    """)
    (tmp_path / "params.yaml").write_text("degrade: {method: blur_bicubic, scale: 4}\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 130
    assert proc.stderr.strip() == "mse-NN: training interrupted; the checkpoint after epoch 3 of 10 is kept"


def test_complete_checkpoint_reports_last_epoch_and_force_retrains(tmp_path, tiny_data, tiny_params, caplog):
    caplog.set_level("INFO")
    out, first = _train(tmp_path, tiny_data, tiny_params)
    # a re-run by hand with the model present: nothing to train, but the last epoch's numbers are reported
    _, again = _train(tmp_path, tiny_data, tiny_params)
    assert again["resumed_from_epoch"] == 2 and again["train_seconds_this_run"] < 5
    assert again["final"] == pytest.approx(first["final"]) and "loss" in again["final"]
    # `dvc repro --force` removes the model first: a complete checkpoint without its model trains from scratch
    before = _weights(out / "mse-TS.keras")
    (out / "mse-TS.keras").unlink()
    _, forced = _train(tmp_path, tiny_data, tiny_params)
    assert forced["resumed_from_epoch"] == 0 and forced["train_seconds_this_run"] > 0
    assert any("training from scratch" in r.message for r in caplog.records)
    for x, y in zip(before, _weights(out / "mse-TS.keras"), strict=True):  # the same params retrain to the same weights
        np.testing.assert_array_equal(x, y)


def test_a_code_change_invalidates_the_checkpoint(tmp_path, tiny_data):
    from cardiac_sr import train

    prepared, degraded = tiny_data
    hr, lr = load_pairs(prepared, degraded, "train")
    files = hr.files + lr.files
    code = tmp_path / "losses.py"
    code.write_text("x = 1\n")
    a = train.fingerprint({"epochs": 1}, files + [code])
    code.write_text("x = 2\n")
    assert train.fingerprint({"epochs": 1}, files + [code]) != a
    assert {p.name for p in train.CODE_FILES} == {"train.py", "callbacks.py", "models.py", "losses.py", "distributed.py"}
    assert all(p.is_file() for p in train.CODE_FILES)


def test_a_diverging_run_stops_in_one_line_keeps_the_last_finite_checkpoint_and_publishes_nothing(
        tmp_path, tiny_data, tiny_params, monkeypatch):
    import keras

    import cardiac_sr.losses

    monkeypatch.setenv("CARDIAC_SR_STOP_AFTER_EPOCH", "1")  # epoch 1 trains normally and is checkpointed
    with pytest.raises(Interrupted):
        _train(tmp_path, tiny_data, tiny_params)
    monkeypatch.delenv("CARDIAC_SR_STOP_AFTER_EPOCH")
    # then the loss turns infinite (as a learning rate far too high makes it)
    monkeypatch.setattr(cardiac_sr.losses, "make_loss",
                        lambda *a: lambda y, p: keras.ops.mean(keras.ops.square(y - p)) / 0.0)
    with pytest.raises(CardiacSRError) as err:
        _train(tmp_path, tiny_data, tiny_params)
    message = str(err.value)
    assert "training diverged: the loss became inf in epoch 2, step 1" in message and "\n" not in message
    assert "no model was published" in message and "checkpoint after epoch 1 of 2 is kept" in message
    assert not (tmp_path / "run" / "mse-TS.keras").exists()
    state = json.loads((tmp_path / "run" / "scratch" / "mse-TS" / "state.json").read_text())
    assert state["epochs_done"] == 1
