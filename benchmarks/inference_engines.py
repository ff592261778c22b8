"""How fast each engine runs one model call of the fp32 path on this CPU (lean-predict issue: "XLA where it
helps, ONNX Runtime if it beats TensorFlow: measure, do not assume").

One 256 x 256 -> 1024 x 1024 image per call, as ``super_resolve`` makes them for a 256 x 256 study, after a
warm-up call; the best and the median of ``--repeats`` calls, and each engine's largest difference from
Keras' ``predict_on_batch`` (today's path, whose bytes predict writes):

* ``keras``: ``model.predict_on_batch`` (cardiac_sr.inference);
* ``keras fp32-fast``: the same call of the fast graph (``predict --precision fp32-fast``: sub-pixel
  up-sampling, the output convolution as a 1x1 convolution and a shifted sum; cardiac_sr.precision);
* ``keras bf16``, ``keras bf16-fast``: the reduced-precision paths, for comparison;
* ``tf.function``: the model called inside one traced function;
* ``xla``: the same with ``jit_compile=True``;
* ``onnxruntime``: ``cardiac-sr export --format onnx`` run by ONNX Runtime's CPU provider, with as many
  intra-op threads as the process may use.

    python benchmarks/inference_engines.py [--model models/mse-NN.keras] [--size 256] [--repeats 3]

Run it on an idle machine: the engines share the cores one after the other.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def timed(call, repeats: int) -> tuple[float, float, np.ndarray]:
    out = np.asarray(call())  # warm-up (tracing, compiling, session start)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = np.asarray(call())
        times.append(time.perf_counter() - t)
    return min(times), float(np.median(times)), out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models/mse-NN.keras")
    parser.add_argument("--size", type=int, default=256, help="LR image side (default 256: a 1024 x 1024 output)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    from cardiac_sr.runtime import start_tensorflow

    start_tensorflow()
    import onnxruntime as ort
    import tensorflow as tf

    from cardiac_sr.inference import load_model
    from cardiac_sr.precision import with_precision
    from cardiac_sr.predict import export

    model, card = load_model(args.model)
    x = np.random.default_rng(0).random((1, args.size, args.size, 1), np.float32)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    traced = tf.function(lambda t: model(t, training=False))
    compiled = tf.function(lambda t: model(t, training=False), jit_compile=True)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export(args.model, Path(tmp) / "model.onnx", "onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = cores, 1
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        variants = {p: with_precision(model, p) for p in ("fp32-fast", "bf16", "bf16-fast")}
        engines = {"keras": lambda: model.predict_on_batch(x),
                   **{f"keras {p}": (lambda m=m: m.predict_on_batch(x)) for p, m in variants.items()},
                   "tf.function": lambda: traced(tf.constant(x)),
                   "xla": lambda: compiled(tf.constant(x)),
                   "onnxruntime": lambda: session.run(None, {name: x})[0]}
        print(f"{card.name}, one {args.size} x {args.size} -> {args.size * card.scale} x {args.size * card.scale} "
              f"image per call, {platform.machine()} with {cores} cores, {args.repeats} calls after a warm-up")
        reference = None
        for engine, call in engines.items():
            best, median, out = timed(call, args.repeats)
            reference = out if reference is None else reference
            diff = float(np.abs(out - reference).max())
            print(f"  {engine:16s} best {best:.3f} s, median {median:.3f} s per image; "
                  f"max |difference| from keras {diff:.1e}{' (bit-identical)' if diff == 0 else ''}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
