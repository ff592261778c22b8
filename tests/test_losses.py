"""Losses: the perceptual loss and the offline VGG16 weights."""

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import ndimage

from cardiac_sr.errors import CardiacSRError
from cardiac_sr.losses import PerceptualLoss, hed_weights_path, make_loss, vgg16
from cardiac_sr.models import build_generator


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    x = ndimage.gaussian_filter(rng.random((2, 48, 48)), (0, 1.5, 1.5))
    return ((x - x.min()) / np.ptp(x)).astype("float32")[..., None]


def test_hed_weights_are_mapped_onto_vgg16():
    vgg = vgg16("hed")
    with h5py.File(hed_weights_path()) as f:
        np.testing.assert_array_equal(vgg.get_layer("block1_conv1").kernel.numpy(),
                                      f["block1/layers/conv2d/vars/0"][()])
        np.testing.assert_array_equal(vgg.get_layer("block5_conv3").bias.numpy(),
                                      f["block5/layers/conv2d_2/vars/1"][()])
    assert not vgg.trainable


def test_perceptual_is_zero_for_identical_images_and_grows_with_blur(images):
    loss = make_loss("perceptual")
    assert float(loss(images, images)) == 0.0
    values = [float(loss(images, ndimage.gaussian_filter(images, (0, s, s, 0)))) for s in (0.5, 1.0, 2.0)]
    assert 0 < values[0] < values[1] < values[2]


def test_pixel_weight_adds_mse(images):
    blurred = ndimage.gaussian_filter(images, (0, 1, 1, 0))
    base = float(PerceptualLoss()(images, blurred))
    mse = float(np.mean((images - blurred) ** 2))
    assert float(PerceptualLoss(pixel_weight=1000.0)(images, blurred)) == pytest.approx(base + 1000 * mse, rel=1e-4)


def test_gradients_reach_the_generator_and_never_change_vgg(images):
    model = build_generator("NN", filters=8, res_blocks=1, global_skip=False)
    loss = make_loss("perceptual")
    vgg_before = [w.numpy().copy() for w in loss.features.weights]
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)
    lr = images[:, ::4, ::4]
    with tf.GradientTape() as tape:
        value = loss(images, model(lr, training=True))
    grads = tape.gradient(value, model.trainable_variables)
    assert all(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)
    model.fit(lr, images, epochs=1, batch_size=2, verbose=0)
    for before, after in zip(vgg_before, loss.features.weights, strict=True):
        np.testing.assert_array_equal(before, after.numpy())


def test_mse_is_a_loss_object():
    loss = make_loss("mse")
    assert isinstance(loss, keras.losses.Loss)  # a loss object (serialisable), not a bare function
    y = np.zeros((2, 8, 8, 1), np.float32)
    assert float(loss(y, y + 0.1)) == pytest.approx(0.01, rel=1e-5)  # and it is the mean squared error
    with pytest.raises(CardiacSRError, match="valid values: perceptual, mse"):
        make_loss("l1")


def test_wrong_weights_files_fail_clearly(tmp_path):
    with pytest.raises(CardiacSRError, match="file not found"):
        vgg16(str(tmp_path / "missing.weights.h5"))
    bad = tmp_path / "bad.weights.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(CardiacSRError, match="bad.weights.h5"):
        vgg16(str(bad))
    other = tmp_path / "other.weights.h5"
    build_generator("TS", filters=4, res_blocks=1).save_weights(other)
    with pytest.raises(CardiacSRError, match="does not fit VGG16"):
        vgg16(str(other))
    with pytest.raises(CardiacSRError, match="unknown VGG16 layer"):
        PerceptualLoss(layer="block9_conv9")


def test_weights_from_a_keras_file(tmp_path):
    path = tmp_path / "vgg.weights.h5"
    vgg16("hed").save_weights(path)
    vgg = vgg16(str(path))
    np.testing.assert_array_equal(vgg.get_layer("block2_conv2").kernel.numpy(),
                                  vgg16("hed").get_layer("block2_conv2").kernel.numpy())
