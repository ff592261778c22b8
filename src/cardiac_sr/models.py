"""The seed's generator (Johnson et al.'s super-resolution network) in Keras 3.

One builder, :func:`build_generator`, makes all four models of the
experiment; ``upsampling`` picks the x2 up-scaling block:

``TS``  transposed convolution, stride 2 (kernel 3 by default: a kernel not
        divisible by the stride is what produces checkerboard artefacts);
``NN``  nearest-neighbour up-sampling followed by a convolution.

Layout (``scale`` 4)::

    LR (H, W, 1)
      -> 9x9 conv 64 [+ BN] + ReLU                         head_block
      -> res_blocks x (conv [+ BN] + ReLU + conv [+ BN], + identity)
      -> 2 x up-scaling block (TS or NN) [+ BN] + ReLU
      -> 9x9 conv to 1 channel                              output_block
      [+ CubicUpsample(LR)]                                 global skip

With ``global_skip`` (default) the output is the project's bicubic baseline
(:func:`cardiac_sr.degradation.upsample_bicubic`, a cubic spline, reproduced
exactly by :class:`CubicUpsample`) plus the network's residual, and the last
convolution starts at zero: an untrained model *is* the baseline, and
training only adds detail.  ``batch_norm`` defaults to off (see README for
the measurement).  ``up_init`` (TS only) starts each transposed convolution
as bilinear interpolation instead of Keras' random ``glorot_uniform``.
``batch_norm=True, global_skip=False, up_init="glorot_uniform"`` is the
seed's network exactly.

Intensities in and out are on the [0, 1] scale; the network is fully
convolutional, so any input size works.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import layers

from .card import MODEL_CARD, Card
from .names import UP_INITS, UPSAMPLINGS


# How many LR pixels either side the cubic-spline kernel reaches: the spline's
# pre-filter decays as 0.268**k, so 16 taps leave an error below 1e-9.
_CUBIC_TAPS = 16


def cubic_phase_filters(scale: int, taps: int = _CUBIC_TAPS) -> np.ndarray:
    """The 1D cubic-spline x``scale`` interpolator as ``scale`` polyphase FIR filters.

    Returns ``g`` of shape (2 * taps + 1, scale) with
    ``out[scale * i + p] = sum_k g[k + taps, p] * x[i + k]``, measured from the
    baseline itself (:func:`cardiac_sr.degradation.upsample_bicubic` applied to an
    impulse), so the two can never disagree.
    """
    from .degradation import upsample_bicubic

    n = 4 * taps + 8
    c = n // 2
    impulse = np.zeros((2, n))
    impulse[:, c] = 1.0
    response = upsample_bicubic(impulse, scale)[0]  # rows are constant: a 1D response
    g = np.zeros((2 * taps + 1, scale))
    for k in range(-taps, taps + 1):
        for p in range(scale):
            g[k + taps, p] = response[scale * (c - k) + p]
    return g


@keras.saving.register_keras_serializable(package="cardiac_sr")
class CubicUpsample(layers.Layer):
    """Exact, differentiable twin of the project's bicubic baseline, for any input size.

    Separable: each axis is mirror-extended by ``taps`` pixels (the boundary
    rule of ``skimage.transform.resize(mode="reflect")``), filtered with the
    ``scale`` polyphase filters of :func:`cubic_phase_filters`, and the phases
    are interleaved.  Inputs need at least 2 pixels per axis.
    """

    def __init__(self, scale: int = 4, **kwargs):
        super().__init__(**kwargs)
        self.scale = int(scale)
        g = cubic_phase_filters(self.scale).astype("float32")
        self._taps = (g.shape[0] - 1) // 2
        self._rows_kernel = g[:, None, None, :]   # (2T+1, 1, 1, scale): filter along H
        self._cols_kernel = g[None, :, None, :]   # (1, 2T+1, 1, scale): filter along W

    def _mirror_index(self, n):
        import tensorflow as tf

        i = tf.range(-self._taps, n + self._taps)
        period = 2 * (n - 1)
        # shift to non-negative before the modulo: ONNX's Mod differs from TF's floormod for negatives
        m = tf.math.floormod(i + period * (self._taps + 1), period)
        return tf.where(m < n, m, period - m)

    def call(self, x):
        import tensorflow as tf

        x = tf.cast(x, "float32")
        s = self.scale
        b, h, w = tf.shape(x)[0], tf.shape(x)[1], tf.shape(x)[2]
        # along H
        y = tf.gather(x, self._mirror_index(h), axis=1)
        y = tf.nn.conv2d(y, tf.constant(self._rows_kernel), strides=1, padding="VALID")  # (B, H, W, s)
        y = tf.reshape(tf.transpose(y, [0, 1, 3, 2]), [b, h * s, w, 1])
        # along W
        y = tf.gather(y, self._mirror_index(w), axis=2)
        y = tf.nn.conv2d(y, tf.constant(self._cols_kernel), strides=1, padding="VALID")  # (B, sH, W, s)
        return tf.reshape(y, [b, h * s, w * s, 1])

    def compute_output_shape(self, input_shape):
        def up(d):
            return None if d is None else d * self.scale
        return (input_shape[0], up(input_shape[1]), up(input_shape[2]), 1)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


@keras.saving.register_keras_serializable(package="cardiac_sr")
class BilinearUpsampleInit(keras.initializers.Initializer):
    """Transposed-convolution kernel that starts as per-channel bilinear x2 interpolation.

    Channel ``c`` in gives channel ``c`` out through the separable tent filter
    of FCN's bilinear initialisation (kernel 3: [0.5, 1, 0.5]), so the ``TS``
    block starts smooth, without the checkerboard a random kernel 3 / stride 2
    deconvolution starts with.  Measured on the phantom (README): with a pure
    VGG feature loss the random start drifts into a checkerboard below
    bicubic, this start does not.
    """

    def __call__(self, shape, dtype=None):
        kh, kw, c_out, c_in = shape
        taps = [_tent(kh), _tent(kw)]
        kernel = np.zeros(shape, "float32")
        for c in range(min(c_out, c_in)):
            kernel[:, :, c, c] = np.outer(*taps)
        return keras.ops.convert_to_tensor(kernel, dtype=dtype)


def _tent(size: int) -> np.ndarray:
    """FCN's 1D bilinear up-sampling filter of ``size`` taps for stride 2."""
    factor = (size + 1) // 2
    centre = factor - 1 if size % 2 == 1 else factor - 0.5
    return 1 - np.abs(np.arange(size) - centre) / factor


def _norm_relu(x, batch_norm: bool, name: str):
    if batch_norm:
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def head_block(x, filters: int, kernel: int, batch_norm: bool):
    """Wide first convolution (9x9 in the seed) that sees the LR context."""
    x = layers.Conv2D(filters, kernel, padding="same", name="head_conv")(x)
    return _norm_relu(x, batch_norm, "head")


def residual_block(x, filters: int, kernel: int, batch_norm: bool, index: int):
    """conv [+ BN] + ReLU + conv [+ BN], plus the block's input."""
    name = f"res{index}"
    skip = x
    x = layers.Conv2D(filters, kernel, padding="same", name=f"{name}_conv1")(x)
    x = _norm_relu(x, batch_norm, f"{name}_1")
    x = layers.Conv2D(filters, kernel, padding="same", name=f"{name}_conv2")(x)
    if batch_norm:
        x = layers.BatchNormalization(name=f"{name}_2_bn")(x)
    return layers.Add(name=f"{name}_add")([skip, x])


def upsample_block_ts(x, filters: int, kernel: int, batch_norm: bool, index: int, init: str = "bilinear"):
    """x2 by a stride-2 transposed convolution (the seed's ``TS``), ``init``: bilinear or glorot_uniform."""
    name = f"up{index}"
    kernel_init = BilinearUpsampleInit() if init == "bilinear" else init
    x = layers.Conv2DTranspose(filters, kernel, strides=2, padding="same", kernel_initializer=kernel_init,
                               name=f"{name}_tconv")(x)
    return _norm_relu(x, batch_norm, name)


def upsample_block_nn(x, filters: int, kernel: int, batch_norm: bool, index: int, init: str = "bilinear"):
    """x2 by nearest-neighbour repetition, then a convolution (the seed's ``NN``; ``init`` is for TS only)."""
    name = f"up{index}"
    x = layers.UpSampling2D(2, interpolation="nearest", name=f"{name}_nearest")(x)
    x = layers.Conv2D(filters, kernel, padding="same", name=f"{name}_conv")(x)
    return _norm_relu(x, batch_norm, name)


def output_block(x, kernel: int, zero_init: bool):
    """9x9 convolution to one channel, in float32 (also under mixed precision)."""
    init = "zeros" if zero_init else "glorot_uniform"
    return layers.Conv2D(1, kernel, padding="same", kernel_initializer=init,
                         dtype="float32", name="output_conv")(x)


def build_generator(upsampling: str = "NN", scale: int = 4, filters: int = 64, res_blocks: int = 4,
                    head_kernel: int = 9, kernel: int = 3, up_kernel: int = 3, output_kernel: int = 9,
                    batch_norm: bool = False, global_skip: bool = True, up_init: str = "bilinear",
                    name: str | None = None) -> keras.Model:
    """Build one generator; see the module docstring for the layout."""
    if upsampling not in UPSAMPLINGS:
        raise ValueError(f"unknown upsampling {upsampling!r}; valid values: {', '.join(UPSAMPLINGS)}")
    if up_init not in UP_INITS:
        raise ValueError(f"unknown up_init {up_init!r}; valid values: {', '.join(UP_INITS)}")
    n_up = int(round(math.log2(scale)))
    if 2 ** n_up != scale or n_up < 1:
        raise ValueError(f"scale must be a power of two >= 2, got {scale}")
    upsample_block = upsample_block_ts if upsampling == "TS" else upsample_block_nn

    lr = keras.Input(shape=(None, None, 1), name="lr")
    x = head_block(lr, filters, head_kernel, batch_norm)
    for i in range(res_blocks):
        x = residual_block(x, filters, kernel, batch_norm, i + 1)
    for i in range(n_up):
        x = upsample_block(x, filters, up_kernel, batch_norm, i + 1, up_init)
    x = output_block(x, output_kernel, zero_init=global_skip)
    if global_skip:
        x = layers.Add(name="global_skip", dtype="float32")([CubicUpsample(scale, name="baseline")(lr), x])
    return keras.Model(lr, x, name=name or f"generator-{upsampling}")


def generator_kwargs(cfg, upsampling: str, scale: int) -> dict:
    """The :func:`build_generator` arguments from a model's train params (:class:`cardiac_sr.params.Train`)."""
    keys = ("filters", "res_blocks", "head_kernel", "kernel", "up_kernel", "output_kernel",
            "batch_norm", "global_skip", "up_init")
    return {"upsampling": upsampling, "scale": scale, **{k: getattr(cfg, k) for k in keys}}


def load_generator(path) -> keras.Model:
    """Load a trained generator in Keras' safe mode (no code from the file is run)."""
    return keras.saving.load_model(path, compile=False, safe_mode=True)


# ----------------------------------------------------------------------------- saving
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip entry can carry: no clock in the bytes


def save_generator(model, path, card: Card) -> None:
    """Save ``model`` as a ``.keras`` file at ``path`` with its ``card`` inside (:mod:`cardiac_sr.card`), byte
    for byte the same for the same weights: Keras' own archive is rewritten with fixed entry dates, its
    ``date_saved`` left out and the card added last (so ``dvc.lock``'s md5 of a model is a fact anyone can
    check)."""
    import json
    import re
    import zipfile

    model.save(path)
    with zipfile.ZipFile(path) as zf:
        members = [(info.filename, zf.read(info)) for info in zf.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members + [(MODEL_CARD, (json.dumps(card.to_json(), indent=2, sort_keys=True) + "\n").encode())]:
            if name == "metadata.json":
                meta = json.loads(data)
                meta.pop("date_saved", None)
                data = json.dumps(meta, sort_keys=True).encode()
            elif name == "config.json":  # objects shared by layers are keyed by id(): number them in order
                ids: dict[str, str] = {}
                data = re.sub(rb'"shared_object_id": (\d+)',
                              lambda m: b'"shared_object_id": ' + ids.setdefault(m.group(1), str(len(ids) + 1)).encode(),
                              data)
            info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
