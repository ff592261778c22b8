"""Faster inference: ``cardiac-sr predict --precision bf16 | fp32-fast | bf16-fast`` (and ``assess``, to
measure what each costs).  ``fp32`` (the default) is the exact path, bit-identical to the model as trained.

``bf16`` clones the generator with Keras' ``mixed_bfloat16`` policy: its convolutions run in bfloat16
(oneDNN's AVX512-BF16 / AMX kernels where the CPU has them) with float32 weights, while the bicubic
path of the global skip (``baseline``) and the final sum (``global_skip``) stay float32, so bfloat16's
8-bit mantissa rounds only the small learnt detail, never the image itself.  Its cost in quality is
measured with ``assess`` on the Sunnybrook studies (docs/operations.md).

``-fast`` computes the same function with a graph that suits a CPU better (:func:`fast_graph`):

* each NN up-sampling block, nearest-neighbour x2 then a k x k convolution, as its sub-pixel equivalent
  at the lower resolution (Shi et al., CVPR 2016): each of the four output phases of ``conv(nearest(x))``
  is a convolution of ``x`` whose (k+1)/2 x (k+1)/2 taps are sums of the k x k kernel's, so one
  convolution with 4x the filters and 4/9 of the taps (k = 3), its ReLU, then a pixel shuffle: 2.25x
  fewer multiply-adds in the two largest layers;
* the output convolution, k x k to one channel (a shape oneDNN runs at a small fraction of its speed:
  about a third of the exact model's time at 1024 x 1024), as a 1x1 convolution to k^2 channels, one per
  tap, and the sum of the k^2 shifted planes.

Equal in exact arithmetic; the sums run in another order, so ``fp32-fast`` differs from ``fp32`` by
float32 rounding only (about 1e-6 of the image range: tests/test_precision.py; PSNR on the Sunnybrook
studies in docs/operations.md) and is not bit-identical, hence opt-in.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp32-fast", "bf16", "bf16-fast")
FLOAT32_LAYERS = ("baseline", "global_skip")  # the image path: bicubic of the input and the sum


def cpu_has_bf16() -> bool | None:
    """Whether this CPU has bfloat16 instructions (``avx512_bf16`` or AMX); None where it cannot be told."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    return "avx512_bf16" in flags or "amx_bf16" in flags


def with_precision(model, precision: str):
    """``model`` itself for ``fp32``; for ``bf16`` :func:`bfloat16`; with ``-fast``, that model's
    :func:`fast_graph`.  The outputs are float32."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    base, _, fast = precision.partition("-")
    if base == "bf16":
        model = bfloat16(model)
    return fast_graph(model) if fast else model


def bfloat16(model):
    """A clone of ``model`` with the same weights whose layers compute in bfloat16, except
    :data:`FLOAT32_LAYERS`."""
    import keras

    if cpu_has_bf16() is False:
        log.warning("--precision bf16: this CPU has no bfloat16 instructions (avx512_bf16/amx); TensorFlow "
                    "emulates them and this will likely be slower than fp32")

    def clone(layer):
        config = layer.get_config()
        config["dtype"] = "float32" if layer.name in FLOAT32_LAYERS else "mixed_bfloat16"
        return layer.__class__.from_config(config)

    reduced = keras.models.clone_model(model, clone_function=clone)
    reduced.set_weights(model.get_weights())
    log.info("precision bf16: convolutions in bfloat16, the bicubic path and the output sum in float32")
    return reduced


# ----------------------------------------------------------------------------- the fast graph

def _phase_window(a: int, radius: int) -> tuple[int, int]:
    """The low-resolution rows (first, last offset from i) that output row 2i + a of nearest x2 followed by a
    (2 radius + 1)-tap convolution reads: row 2i + a + d comes from row floor((2i + a + d) / 2)."""
    return (a - radius) // 2, (a + radius) // 2


def subpixel_kernel(kernel: np.ndarray) -> np.ndarray:
    """The (L, L, C, 4F) kernel of the sub-pixel convolution equal to nearest x2 + ``kernel`` (k, k, C, F),
    L = (k + 1) / 2: output channels ``(2a + b) F + f`` are output phase (a, b) (row 2i + a, column 2j + b),
    tap (t, u) of phase (a, b) reads input row i + first_a + t, column j + first_b + u."""
    k, k2, c, f = kernel.shape
    if k != k2 or k % 2 != 1:
        raise ValueError(f"the sub-pixel rewrite needs an odd square kernel, got {k} x {k2}")
    radius = k // 2
    length = radius + 1
    out = np.zeros((length, length, c, 4 * f), np.float64)
    for a in range(2):
        for b in range(2):
            first_a, first_b = _phase_window(a, radius)[0], _phase_window(b, radius)[0]
            for dy in range(-radius, radius + 1):
                for dx in range(-radius, radius + 1):
                    t, u = (a + dy) // 2 - first_a, (b + dx) // 2 - first_b
                    out[t, u, :, (2 * a + b) * f:(2 * a + b + 1) * f] += kernel[dy + radius, dx + radius]
    return out.astype(kernel.dtype)


def _subpixel_layer_class():
    import keras

    class SubpixelConv(keras.layers.Layer):
        """Nearest x2 + a 'same' k x k convolution, computed at the input's resolution: zero padding, then per
        output row phase a valid (k+1)/2 x (k+1)/2 convolution to 2F channels (its two column phases), each
        phase's window cut out; the pixel shuffle interleaves the four."""

        def __init__(self, filters: int, kernel_size: int, relu: bool, **kwargs):
            super().__init__(**kwargs)
            self.filters, self.kernel_size, self.relu = filters, kernel_size, relu
            radius = kernel_size // 2
            self.windows = [_phase_window(a, radius) for a in range(2)]
            self.pad = (-min(w[0] for w in self.windows), max(w[1] for w in self.windows))

        def build(self, input_shape):
            length = self.kernel_size // 2 + 1
            self.kernel = self.add_weight(shape=(length, length, input_shape[-1], 4 * self.filters),
                                          initializer="zeros", name="kernel", trainable=False)
            self.bias = self.add_weight(shape=(4 * self.filters,), initializer="zeros", name="bias",
                                        trainable=False)

        def call(self, x):
            import tensorflow as tf  # conv + bias_add + relu: the pattern TensorFlow fuses into one oneDNN call

            lo, hi = self.pad
            padded = tf.pad(x, [[0, 0], [lo, hi], [lo, hi], [0, 0]])
            shape = tf.shape(x)
            h, w, f = shape[1], shape[2], self.filters
            starts = [first + lo for first, _ in self.windows]
            rows, done = [], []
            for a in range(2):  # one output row phase after the other: half the feature maps alive at a time
                with tf.control_dependencies(done):
                    y = tf.nn.bias_add(tf.nn.conv2d(padded, self.kernel[..., 2 * a * f:2 * (a + 1) * f], 1, "VALID"),
                                       self.bias[2 * a * f:2 * (a + 1) * f])
                if self.relu:  # before the shuffle: the same values, on the smaller maps
                    y = tf.nn.relu(y)
                rows.append(tf.stack([y[:, starts[a]:starts[a] + h, starts[b]:starts[b] + w, b * f:(b + 1) * f]
                                      for b in range(2)], axis=3))  # (B, H, W, 2 columns, F)
                done = [rows[-1]]
            return tf.reshape(tf.stack(rows, axis=2), (shape[0], 2 * h, 2 * w, f))  # (B, H, 2, W, 2, F) -> 2H x 2W

        def compute_output_shape(self, input_shape):
            b, h, w, _ = input_shape
            return (b, None if h is None else 2 * h, None if w is None else 2 * w, self.filters)

    return SubpixelConv


def _shift_sum_layer_class():
    import keras

    class ShiftSumConv(keras.layers.Layer):
        """A 'same' k x k convolution to one channel as a 1x1 convolution to k^2 channels (one per tap: a
        well-shaped matrix product) and the sum of the k^2 planes, each shifted by its tap's offset."""

        def __init__(self, kernel_size: int, rows_per_pass: int = 3, **kwargs):
            super().__init__(**kwargs)
            self.kernel_size, self.rows_per_pass = kernel_size, rows_per_pass

        def build(self, input_shape):
            k = self.kernel_size
            self.kernel = self.add_weight(shape=(1, 1, input_shape[-1], k * k), initializer="zeros", name="kernel",
                                          trainable=False)
            self.bias = self.add_weight(shape=(1,), initializer="zeros", name="bias", trainable=False)

        def call(self, x):
            import tensorflow as tf

            k, r = self.kernel_size, self.kernel_size // 2
            shape = tf.shape(x)
            b, h, w = shape[0], shape[1], shape[2]
            padded = tf.pad(x, [[0, 0], [r, r], [r, r], [0, 0]])
            out = None
            for first in range(0, k, self.rows_per_pass):  # a few kernel rows at a time: k^2 planes never all alive
                rows = range(first, min(k, first + self.rows_per_pass))
                with tf.control_dependencies([] if out is None else [out]):
                    z = tf.nn.conv2d(padded, self.kernel[..., first * k:(rows[-1] + 1) * k], 1, "VALID")
                z = tf.reshape(tf.transpose(z, (3, 0, 1, 2)), (len(rows), k, b, h + 2 * r, w + 2 * r))
                across = tf.add_n([z[:, dx, :, :, dx:dx + w] for dx in range(k)])   # per kernel row: B, H + 2r, W
                part = tf.add_n([across[i, :, dy:dy + h] for i, dy in enumerate(rows)])
                out = part if out is None else out + part
            return out[..., None] + self.bias

        def compute_output_shape(self, input_shape):
            return (*input_shape[:3], 1)

    return ShiftSumConv


def _next_layer(model, name: str):
    """The one layer that takes ``name``'s output, or None."""
    outputs = model.get_layer(name).output
    users = [layer for layer in model.layers if any(t is outputs for t in _inputs(layer))]
    return users[0] if len(users) == 1 else None


def _plain_relu(layer) -> bool:
    import keras

    if not isinstance(layer, keras.layers.ReLU):
        return False
    config = layer.get_config()
    return config.get("max_value") is None and not config.get("negative_slope") and not config.get("threshold")


def _inputs(layer) -> list:
    try:
        inputs = layer.input
    except (AttributeError, ValueError):
        return []
    return list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]


def fast_graph(model):
    """A clone of the generator ``model`` whose NN up-sampling blocks (``up<i>_nearest`` + ``up<i>_conv``
    [+ ``up<i>_relu``]) are sub-pixel convolutions at the lower resolution and whose ``output_conv`` is a
    1x1 convolution and a shifted sum (module docstring), in the layers' own dtypes.  The same function up
    to rounding."""
    import keras

    nearest = {layer.name for layer in model.layers if isinstance(layer, keras.layers.UpSampling2D)}
    convs = {name.replace("_nearest", "_conv") for name in nearest}
    out = model.get_layer("output_conv")
    for name in nearest:
        layer = model.get_layer(name)
        if tuple(layer.size) != (2, 2) or layer.interpolation != "nearest":
            raise ValueError(f"{name}: the sub-pixel rewrite handles nearest x2 only")
    for name in convs:
        layer = model.get_layer(name)
        if tuple(layer.strides) != (1, 1) or layer.padding != "same" or tuple(layer.dilation_rate) != (1, 1) \
                or layer.activation is not keras.activations.linear:
            raise ValueError(f"{name}: the sub-pixel rewrite handles a 'same', stride-1, linear convolution only")
    if out.filters != 1 or tuple(out.strides) != (1, 1) or out.padding != "same" or out.kernel_size[0] % 2 != 1 \
            or out.kernel_size[0] != out.kernel_size[1] or out.activation is not keras.activations.linear:
        raise ValueError("output_conv: the shifted-sum rewrite handles a 'same', odd, square, linear convolution "
                         "to one channel only")
    # a ReLU right after the convolution (no batch norm between) is applied before the pixel shuffle
    relu_after = {name: _next_layer(model, name) for name in convs}
    relu_after = {name: layer for name, layer in relu_after.items() if _plain_relu(layer)}
    fused = {layer.name for layer in relu_after.values()}
    SubpixelConv, ShiftSumConv = _subpixel_layer_class(), _shift_sum_layer_class()

    def clone(layer):
        if layer is out:
            return ShiftSumConv(out.kernel_size[0], name=out.name, dtype=out.dtype_policy)
        if layer.name in nearest or layer.name in fused:
            return keras.layers.Identity(name=layer.name, dtype=layer.dtype_policy)
        if layer.name in convs:
            return SubpixelConv(layer.filters, layer.kernel_size[0], relu=layer.name in relu_after,
                                name=layer.name, dtype=layer.dtype_policy)
        return layer.__class__.from_config(layer.get_config())

    fast = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        if layer.name in convs:
            kernel, bias = layer.get_weights()
            fast.get_layer(layer.name).set_weights([subpixel_kernel(kernel), np.tile(bias, 4)])
        elif layer is out:
            kernel, bias = layer.get_weights()   # (k, k, C, 1) -> (1, 1, C, k^2), tap dy * k + dx
            k, _, c, _ = kernel.shape
            fast.get_layer(layer.name).set_weights([kernel[..., 0].transpose(2, 0, 1).reshape(1, 1, c, k * k), bias])
        elif layer.weights:
            fast.get_layer(layer.name).set_weights(layer.get_weights())
    log.info("fast graph: %d nearest-neighbour up-sampling blocks as sub-pixel convolutions, the output "
             "convolution as a 1x1 convolution and a shifted sum", len(nearest))
    return fast
