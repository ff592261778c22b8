"""Benchmark: training throughput of the four models, and the share of the machine's matmul peak.

Prints, for each model at the default patch and batch size (params.yaml):
patches/s, GFLOP per patch (analytic count of the generator's convolutions,
x3 for forward + backward; the perceptual loss adds VGG16 up to block2_conv2:
forward on HR and SR, and backward through SR to the input only, VGG being frozen), the achieved GFLOP/s, and the ratio to the
dense float32 matmul GFLOP/s measured in the same run.

    python benchmarks/train_throughput.py [--steps 30]
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
    import tensorflow as tf

    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    f = tf.function(lambda: tf.matmul(a, b))
    f().numpy()
    t0 = time.perf_counter()
    for _ in range(repeats):
        f().numpy()
    return 2 * n**3 * repeats / (time.perf_counter() - t0) / 1e9


def conv_flops(model, lr_size: int) -> float:
    """Forward FLOPs of a model's convolutions for one (lr_size x lr_size) input."""
    import keras

    model = keras.models.clone_model(model, input_tensors=keras.Input((lr_size, lr_size, 1)))  # concrete shapes
    total = 0.0
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose)):
            k = layer.kernel.shape
            if isinstance(layer, keras.layers.Conv2DTranspose):  # computed on the input grid
                h, w = layer.input.shape[1:3]
            else:
                h, w = layer.output.shape[1:3]
            total += 2.0 * k[0] * k[1] * k[2] * k[3] * h * w
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per model (after 5 warm-up steps)")
    args = parser.parse_args()

    from cardiac_sr.runtime import start_tensorflow

    start_tensorflow()  # as the stages and the CLI: quiet, oneDNN kernels on (cardiac_sr.runtime)

    import keras

    from cardiac_sr.losses import make_loss, feature_extractor
    from cardiac_sr.models import build_generator, generator_kwargs
    from cardiac_sr.params import load_params
    from cardiac_sr.names import MODEL_NAMES
    from cardiac_sr.train import configure_runtime, patch_dataset

    params = load_params(ROOT / "params.yaml")
    peak = matmul_gflops()
    print(f"dense float32 matmul: {peak:.0f} GFLOP/s on {len(os.sched_getaffinity(0))} cores")
    rng = np.random.default_rng(0)
    for name in MODEL_NAMES:
        cfg, scale = params.train_for(name), params.degrade.scale
        configure_runtime(cfg)
        loss_name, up = name.split("-")
        bs, patch = cfg.batch_size, cfg.patch_size
        hr = rng.random((32, 128, 128)).astype(np.float32)
        lr = hr[:, ::scale, ::scale].copy()
        ds = patch_dataset(hr, lr, scale, patch, bs, seed=0)
        model = build_generator(**generator_kwargs(cfg, up, scale))
        model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=make_loss(loss_name, cfg.perceptual),
                      jit_compile=cfg.jit_compile)
        model.fit(ds, steps_per_epoch=5, epochs=1, verbose=0)
        t0 = time.perf_counter()
        model.fit(ds, steps_per_epoch=args.steps, epochs=1, verbose=0)
        rate = args.steps * bs / (time.perf_counter() - t0)
        flops = 3 * conv_flops(model, patch // scale)
        if loss_name == "perceptual":
            vgg = feature_extractor(cfg.perceptual.layer, cfg.perceptual.weights)
            vgg_fwd = _vgg_flops(vgg, patch)
            flops += 3 * vgg_fwd  # forward on HR and SR, backward through SR to its input only (VGG frozen)
        achieved = rate * flops / 1e9
        print(f"{name:>14}: {rate:6.1f} patches/s, {flops / 1e9:5.2f} GFLOP/patch, {achieved:6.1f} GFLOP/s "
              f"= {100 * achieved / peak:4.1f} % of matmul peak (batch {bs}, {patch} px HR patches)")
    return 0


def _vgg_flops(vgg, size: int) -> float:
    import keras

    total, h = 0.0, size
    for layer in vgg.layers:
        if isinstance(layer, keras.layers.MaxPooling2D):
            h //= 2
        if isinstance(layer, keras.layers.Conv2D):
            k = layer.kernel.shape
            total += 2.0 * k[0] * k[1] * k[2] * k[3] * h * h
    return total


if __name__ == "__main__":
    sys.exit(main())
