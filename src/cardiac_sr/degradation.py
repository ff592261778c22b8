"""Degradation and the baselines: how a high-resolution slice becomes the low-resolution model input.

Methods (``degrade.method``):

``blur_bicubic`` (default, the seed's)
    Gaussian blur with ``blur_sigma`` (HR pixels), then cubic down-sampling by
    ``scale`` with ``skimage.transform.resize(order=3)``.
``kspace``
    Keep the central 1/scale of k-space in each direction, optionally
    apodised by a ``window`` (hann or tukey), and reconstruct the magnitude:
    the way a lower-resolution MR acquisition really loses detail.

Optional Rician noise (``noise_sigma`` > 0, on the [0, 1] scale) is added to
the LR images with a seeded generator.

Baselines: :func:`upsample_bicubic` is *the* bicubic baseline of the project
(``skimage.transform.resize(order=3)``, cubic spline); the models' global
skip and the evaluation use exactly this function.  :func:`zerofill` is
Fourier zero-padding, the standard MR reference for the ``kspace`` method.

The ``degrade`` stage (:mod:`cardiac_sr.degrade`), the external test set, the
models' skip connection, evaluation and ``cardiac-sr assess`` all use these
functions.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.transform import resize
from tqdm import tqdm

from .errors import CardiacSRError
from .names import WINDOWS
from .params import Degrade, choice


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """2D Gaussian blur (sigma in pixels, reflect boundary) of one image."""
    if sigma <= 0:
        return np.asarray(image, np.float64)
    return ndimage.gaussian_filter(np.asarray(image, np.float64), sigma, mode="reflect", truncate=4.0)


def resize_cubic(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Cubic-spline resize of one 2D image (``skimage.transform.resize(order=3)``)."""
    return resize(np.asarray(image, np.float64), shape, order=3, mode="reflect",
                  anti_aliasing=False, preserve_range=True, clip=False)


def _check_scale(shape, scale: int):
    if scale < 1 or int(scale) != scale:
        raise CardiacSRError(f"degrade.scale must be a positive integer, got {scale}")
    if shape[-2] % scale or shape[-1] % scale:
        raise CardiacSRError(f"image size {shape[-2:]} is not a multiple of degrade.scale {scale}")


def blur_bicubic(hr: np.ndarray, scale: int, sigma: float = 1.0) -> np.ndarray:
    """The seed's degradation of one HR image: Gaussian blur, then cubic x``scale`` down-sampling."""
    _check_scale(hr.shape, scale)
    h, w = hr.shape[-2:]
    return resize_cubic(gaussian_blur(hr, sigma), (h // scale, w // scale))


def kspace_window(n: int, kind: str) -> np.ndarray:
    """1D apodisation window over ``n`` centred k-space samples."""
    if kind == "none":
        return np.ones(n)
    x = (np.arange(n) + 0.5) / n  # 0..1 across the kept samples
    if kind == "hann":
        return 0.5 - 0.5 * np.cos(2 * np.pi * x)
    if kind == "tukey":  # flat centre, cosine tapers over the outer 25 % on each side
        alpha = 0.5
        w = np.ones(n)
        lo, hi = x < alpha / 2, x > 1 - alpha / 2
        w[lo] = 0.5 * (1 - np.cos(2 * np.pi * x[lo] / alpha))
        w[hi] = 0.5 * (1 - np.cos(2 * np.pi * (1 - x[hi]) / alpha))
        return w
    choice(kind, WINDOWS, "degrade.window")


def _centre_shift(k: np.ndarray, n_full: tuple[int, int], start: tuple[int, int], shift: float) -> np.ndarray:
    """Multiply a centred (fftshifted) block of a spectrum by the linear phase that moves the image by
    ``shift`` pixels of the ``n_full`` grid: ``image'[x] = image[x + shift]`` (a band-limited shift).
    ``start`` is the block's first row and column inside the full centred spectrum."""
    for axis in (0, 1):
        n, m = n_full[axis], k.shape[axis]
        freq = start[axis] + np.arange(m) - n // 2  # signed frequency index of each kept sample
        ramp = np.exp(2j * np.pi * freq * shift / n)
        k = k * (ramp[:, None] if axis == 0 else ramp[None, :])
    return k


def kspace_downsample(hr: np.ndarray, scale: int, window: str = "none") -> np.ndarray:
    """Keep the central 1/``scale`` of k-space (optionally windowed); magnitude at the LR size.

    The LR samples are centred as in every other path of the project (the bicubic baseline, the
    models' skip, ``predict``'s geometry): LR pixel ``n`` sits at HR coordinate ``scale * n +
    (scale - 1) / 2``, the centre of the ``scale`` HR pixels it covers.  The plain FFT crop puts it
    at ``scale * n`` instead (1.5 HR pixels off at x4); a linear phase ramp moves it."""
    _check_scale(hr.shape, scale)
    h, w = hr.shape[-2:]
    lh, lw = h // scale, w // scale
    k = np.fft.fftshift(np.fft.fft2(np.asarray(hr, np.float64)))
    r0, c0 = (h - lh) // 2, (w - lw) // 2
    k = _centre_shift(k[r0:r0 + lh, c0:c0 + lw], (h, w), (r0, c0), (scale - 1) / 2)
    k = k * np.outer(kspace_window(lh, window), kspace_window(lw, window))
    return np.abs(np.fft.ifft2(np.fft.ifftshift(k))) / scale**2


def upsample_bicubic(lr: np.ndarray, scale: int) -> np.ndarray:
    """The project's bicubic baseline: cubic-spline x``scale`` up-sampling of one LR image."""
    h, w = lr.shape[-2:]
    return resize_cubic(lr, (h * scale, w * scale))


def upsample_nearest(lr: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour x``scale`` up-sampling (pixel replication) of one LR image."""
    return np.repeat(np.repeat(np.asarray(lr, np.float64), scale, axis=-2), scale, axis=-1)


def zerofill(lr: np.ndarray, scale: int) -> np.ndarray:
    """Fourier zero-padding x``scale`` of one LR image (the MR reference interpolation), on the
    project's pixel-centre grid (the inverse of :func:`kspace_downsample` for band-limited images)."""
    h, w = lr.shape[-2:]
    k = np.fft.fftshift(np.fft.fft2(np.asarray(lr, np.float64)))
    big = np.zeros((h * scale, w * scale), complex)
    r0, c0 = (h * scale - h) // 2, (w * scale - w) // 2
    big[r0:r0 + h, c0:c0 + w] = _centre_shift(k, big.shape, (r0, c0), -(scale - 1) / 2)
    return np.abs(np.fft.ifft2(np.fft.ifftshift(big))) * scale**2


def add_rician_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of the image plus complex Gaussian noise of std ``sigma`` per channel."""
    if sigma <= 0:
        return image
    n = rng.standard_normal((2,) + image.shape) * sigma
    return np.sqrt((image + n[0]) ** 2 + n[1] ** 2)


def degrade_image(hr: np.ndarray, params: Degrade) -> np.ndarray:
    """One HR image -> LR with the ``degrade`` params (noise excluded)."""
    if params.method == "kspace":
        return kspace_downsample(hr, params.scale, params.window)
    return blur_bicubic(hr, params.scale, params.blur_sigma)


def degrade_slices(hr, params: Degrade, rng: np.random.Generator, lr_out, up_out, name: str = "",
                   chunk: int = 256) -> None:
    """HR slices (N, H, W), a NumPy or sharded array, -> LR (N, H/s, W/s) in [0, 1] and their bicubic
    baseline (N, H, W), float32, appended chunk by chunk to ``lr_out`` and ``up_out`` (anything with an
    ``append(array)`` method, such as :class:`cardiac_sr.dataset.ShardWriter`): memory stays bounded by
    ``chunk`` slices.  The noise is drawn slice after slice from ``rng``, whatever the chunk size."""
    scale, sigma_noise = params.scale, params.noise_sigma
    n, h, w = hr.shape
    _check_scale(hr.shape, scale)
    bar = tqdm(total=n, desc=f"degrade {name}", mininterval=2)
    for start in range(0, n, chunk):
        block = hr[start:start + chunk]
        lr = np.zeros((len(block), h // scale, w // scale), np.float32)
        up = np.zeros((len(block), h, w), np.float32)
        for i, x in enumerate(block):
            lr[i] = np.clip(add_rician_noise(degrade_image(x, params), sigma_noise, rng), 0.0, 1.0)
            up[i] = upsample_bicubic(lr[i], scale)
        lr_out.append(lr)
        up_out.append(up)
        bar.update(len(block))
    bar.close()
