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


def detail_sums(reference: np.ndarray, baseline: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Sums (t.p, p.p, t.t) of the true detail t = reference - baseline and the detail the
    method adds, p = test - baseline (both clipped as for PSNR); add them up over images."""
    from .metrics import DATA_RANGE, _pair

    reference, test = _pair(reference, test)
    baseline = np.clip(np.asarray(baseline, np.float64), 0.0, DATA_RANGE)
    t = reference - baseline
    p = test - baseline
    return np.array([np.sum(t * p), np.sum(p * p), np.sum(t * t)])


def detail_agreement(sums: np.ndarray) -> tuple[float | None, float | None]:
    """Correlation of added and true detail, and the least-squares scale of the added detail.

    A scale below 1 means the method adds more detail than the images have (it would do
    better with its residual shrunk), above 1 less.  ``(None, None)`` when it adds none
    (less than 1e-8 of the true detail's energy: float round-off of a baseline twin).
    """
    tp, pp, tt = (float(v) for v in sums)
    if tt <= 0 or pp <= 1e-8 * tt:
        return None, None
    return tp / np.sqrt(pp * tt), tp / pp


def roi_box(mask: np.ndarray, margin: int = 8, min_size: int = 32) -> tuple[slice, slice]:
    """Bounding box (plus ``margin``) of a mask, at least ``min_size`` px a side, inside the image.

    An empty mask gives :func:`centre_box`.
    """
    h, w = mask.shape
    rows, cols = np.nonzero(mask)
    if len(rows) == 0:
        return centre_box((h, w))
    box = []
    for lo, hi, n in ((rows.min(), rows.max() + 1, h), (cols.min(), cols.max() + 1, w)):
        lo, hi = max(0, int(lo) - margin), min(n, int(hi) + margin)
        if hi - lo < min_size:
            centre = (lo + hi) // 2
            lo = max(0, min(n - min_size, centre - min_size // 2))
            hi = min(n, lo + min_size)
        box.append(slice(lo, hi))
    return box[0], box[1]


def centre_box(shape: tuple[int, int], fraction: float = 0.5) -> tuple[slice, slice]:
    """The documented ROI when there is no heart mask: the central ``fraction`` of each side."""
    h, w = shape
    bh, bw = int(round(h * fraction)), int(round(w * fraction))
    return slice((h - bh) // 2, (h - bh) // 2 + bh), slice((w - bw) // 2, (w - bw) // 2 + bw)


def centred_crop(box: tuple[slice, slice], shape: tuple[int, int], size: int) -> tuple[slice, slice]:
    """A ``size`` x ``size`` window centred on ``box``, moved inside the image."""
    out = []
    for s, n in zip(box, shape):
        c = (s.start + s.stop) // 2
        lo = max(0, min(n - size, c - size // 2))
        out.append(slice(lo, lo + min(size, n)))
    return out[0], out[1]


def checkerboard_score(sr: np.ndarray, reference_up: np.ndarray, scale: int = 4) -> float:
    """Periodic up-sampling artefact energy of ``sr`` relative to the bicubic image, in dB.

    A x2/x``scale`` network's artefacts repeat every 2 or ``scale`` output
    pixels: in the spectrum of the residual ``sr - reference_up`` they sit on
    the lines at k/2 and k/``scale`` cycles per pixel (k = 1 .. p-1) along
    either axis.  The score is 10 log10 of the residual's energy on those
    lines over the energy of ``reference_up`` on the same lines.  Content
    detail also lands there, so compare methods on the same data: a clear
    checkerboard raises it by several dB.  ``sr == reference_up`` scores the
    floor, -120 dB.
    """
    diff = np.asarray(sr, np.float64) - np.asarray(reference_up, np.float64)
    h, w = diff.shape
    rows = sorted({(k * h) // p for p in (2, scale) for k in range(1, p)})
    cols = sorted({(k * w) // p for p in (2, scale) for k in range(1, p)})
    mask = np.zeros((h, w), bool)
    mask[rows, :] = True
    mask[:, cols] = True
    num = (np.abs(np.fft.fft2(diff)) ** 2)[mask].sum()
    den = (np.abs(np.fft.fft2(np.asarray(reference_up, np.float64))) ** 2)[mask].sum()
    return float(10 * np.log10((num + 1e-12 * den) / (den + 1e-30)))


def image_scores(reference: np.ndarray, test: np.ndarray, box: tuple[slice, slice] | None = None) -> dict:
    """The per-image scores of ``evaluate`` and ``assess``: PSNR and SSIM on the whole image, and on
    the ROI ``box`` when one is given (``roi_psnr``, ``roi_ssim``)."""
    out = {"psnr": psnr(reference, test), "ssim": ssim(reference, test)}
    if box is not None:
        out.update(roi_psnr=psnr(reference[box], test[box]), roi_ssim=ssim(reference[box], test[box]))
    return out
