"""Image-quality metrics, with the BasicSR / scikit-image conventions.

* Intensities on the [0, 1] scale of ``prepare``; predictions are clipped to
  [0, 1] before scoring (as a display or a DICOM writer would).
* ``data_range=1`` is always passed explicitly.
* SSIM is the Gaussian-weighted SSIM of Wang et al. (sigma 1.5,
  ``use_sample_covariance=False``), as ``skimage.metrics.structural_similarity``
  computes it with those options.
* Temporal PSNR (cine): :func:`temporal_psnr` of consecutive phases of one
  slice, on the same scale and clipping.
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

DATA_RANGE = 1.0


def _pair(reference: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    reference = np.asarray(reference, np.float64)
    test = np.clip(np.asarray(test, np.float64), 0.0, DATA_RANGE)
    if reference.shape != test.shape:
        raise ValueError(f"shapes differ: reference {reference.shape}, test {test.shape}")
    return reference, test


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    """PSNR in dB on [0, 1] intensities (``data_range=1``)."""
    reference, test = _pair(reference, test)
    if np.array_equal(reference, test):
        return float("inf")
    return float(peak_signal_noise_ratio(reference, test, data_range=DATA_RANGE))


def ssim(reference: np.ndarray, test: np.ndarray) -> float:
    """Gaussian SSIM (sigma 1.5) on [0, 1] intensities (``data_range=1``)."""
    reference, test = _pair(reference, test)
    return float(structural_similarity(reference, test, data_range=DATA_RANGE, gaussian_weights=True,
                                       sigma=1.5, use_sample_covariance=False))


def temporal_psnr(reference: np.ndarray, reference_next: np.ndarray, test: np.ndarray, test_next: np.ndarray) -> float:
    """Temporal PSNR (dB) of one pair of consecutive cine frames: how well the test's frame-to-frame
    change matches the reference's.

    ``10 log10(1 / mean(((test_next - test) - (reference_next - reference))**2))`` with the test
    frames clipped to [0, 1] as for :func:`psnr` (peak 1, the ``data_range``).  An error that is the
    same in both frames cancels; detail that appears in one phase and not the next (flicker) does
    not.  Higher is more consistent; a method equal to the reference up to a constant scores inf.
    """
    reference, test = _pair(reference, test)
    reference_next, test_next = _pair(reference_next, test_next)
    mse = float(np.mean(((test_next - test) - (reference_next - reference)) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(DATA_RANGE**2 / mse))
