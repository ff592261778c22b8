import numpy as np
import pytest
from scipy import ndimage

from cardiac_sr.degradation import (
    add_rician_noise, blur_bicubic, degrade_image, gaussian_blur, kspace_downsample, kspace_window,
    upsample_bicubic, upsample_nearest, zerofill,
)
from cardiac_sr.errors import CardiacSRError
from cardiac_sr.params import Degrade


@pytest.fixture
def image():
    rng = np.random.default_rng(0)
    return ndimage.gaussian_filter(rng.random((256, 256)), 2)


def _independent_blur(x, sigma):
    """Separable convolution with a sampled, normalised Gaussian; symmetric (half-sample) padding."""
    r = int(4 * sigma + 0.5)
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    p = np.pad(x, r, mode="symmetric")
    rows = np.apply_along_axis(lambda v: np.convolve(v, k, mode="valid"), 1, p)
    return np.apply_along_axis(lambda v: np.convolve(v, k, mode="valid"), 0, rows)


def test_blur_matches_independent_convolution(image):
    np.testing.assert_allclose(gaussian_blur(image, 1.0), _independent_blur(image, 1.0), atol=1e-12)


def test_blur_bicubic_shape_and_independent_computation(image):
    lr = blur_bicubic(image, 4, 1.0)
    assert lr.shape == (64, 64)
    # cubic-spline sampling at the centres of the 4x4 HR blocks, computed another way
    c = (np.arange(64) + 0.5) * 4 - 0.5
    ref = ndimage.map_coordinates(_independent_blur(image, 1.0), np.meshgrid(c, c, indexing="ij"), order=3, mode="mirror")
    np.testing.assert_allclose(lr, ref, atol=1e-10)


def test_bicubic_upsampling_shape_and_independent_computation(image):
    lr = blur_bicubic(image, 4, 1.0)
    up = upsample_bicubic(lr, 4)
    assert up.shape == (256, 256)
    c = (np.arange(256) + 0.5) / 4 - 0.5
    ref = ndimage.map_coordinates(lr, np.meshgrid(c, c, indexing="ij"), order=3, mode="mirror")
    np.testing.assert_allclose(up, ref, atol=1e-10)
    assert np.abs(up - image).mean() < np.abs(upsample_nearest(lr, 4) - image).mean()


def _band_limited(y, x):
    return 2 + np.cos(2 * np.pi * 3 * x) + 0.5 * np.sin(2 * np.pi * 5 * y) + 0.3 * np.cos(2 * np.pi * (7 * x + 4 * y))


def test_kspace_keeps_band_limited_content_exactly_at_the_lr_pixel_centres():
    hr = _band_limited(*np.mgrid[:256, :256] / 256.0)
    lr = kspace_downsample(hr, 4)
    assert lr.shape == (64, 64)
    # LR pixel n is the centre of HR pixels 4n..4n+3: HR coordinate 4n + 1.5 (as the bicubic baseline)
    centres = (4 * np.arange(64) + 1.5) / 256.0
    np.testing.assert_allclose(lr, _band_limited(*np.meshgrid(centres, centres, indexing="ij")), atol=1e-10)
    # and zero-filling brings it back exactly, on the HR grid
    np.testing.assert_allclose(zerofill(lr, 4), hr, atol=1e-10)


def test_kspace_and_blur_bicubic_share_one_pixel_grid(image):
    """Both degradations put LR pixel n at HR coordinate 4n + 1.5: the bicubic baseline, the models'
    skip and predict's output geometry assume it.  The k-space LR image, brought back with bicubic, fits
    the HR image best unshifted (the FFT crop alone puts it 1.5 HR pixels off)."""
    hr = gaussian_blur(image, 2.0)  # nearly band-limited to the LR band
    up = upsample_bicubic(kspace_downsample(hr, 4), 4)
    core = (slice(24, -24), slice(24, -24))
    errors = {s: np.abs(ndimage.shift(up, (s, s), order=3, mode="nearest") - hr)[core].mean()
              for s in (-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5)}
    assert min(errors, key=errors.get) == 0.0, errors
    np.testing.assert_allclose(kspace_downsample(hr, 4), blur_bicubic(hr, 4, 0.0), atol=0.05 * hr.max())


def test_kspace_removes_content_beyond_the_lr_band():
    y, x = np.mgrid[:256, :256] / 256.0
    hr = 1 + 0.5 * np.cos(2 * np.pi * 60 * x)  # 60 cycles > LR Nyquist (32)
    np.testing.assert_allclose(kspace_downsample(hr, 4), 1.0, atol=1e-10)


def test_kspace_windows():
    assert kspace_window(8, "none").tolist() == [1.0] * 8
    hann = kspace_window(64, "hann")
    assert hann.max() <= 1 and hann[0] < 0.01 and hann[32] > 0.99
    tukey = kspace_window(64, "tukey")
    assert tukey[20:44].min() == 1.0 and tukey[0] < 0.05
    with pytest.raises(CardiacSRError, match="degrade.window"):
        kspace_window(8, "kaiser")
    smooth = kspace_downsample(np.pad(np.ones((64, 64)), 96), 4, "hann")
    sharp = kspace_downsample(np.pad(np.ones((64, 64)), 96), 4, "none")
    assert smooth.max() < sharp.max()  # apodisation removes Gibbs overshoot


def test_rician_noise_is_seeded_and_positive(image):
    a = add_rician_noise(image, 0.05, np.random.default_rng(1))
    b = add_rician_noise(image, 0.05, np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    assert (a >= 0).all()
    zero = add_rician_noise(np.zeros((64, 64)), 0.1, np.random.default_rng(2))
    assert zero.mean() == pytest.approx(0.1 * np.sqrt(np.pi / 2), rel=0.05)  # Rayleigh floor


def test_unknown_method_and_bad_scale(image):
    with pytest.raises(CardiacSRError, match="degrade.method"):
        degrade_image(image, Degrade.of({"method": "sinc", "scale": 4}, "degrade"))
    with pytest.raises(CardiacSRError, match="multiple"):
        blur_bicubic(image[:255], 4)
