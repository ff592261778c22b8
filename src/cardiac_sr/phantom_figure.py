"""The phantom next to real studies (``cardiac-sr phantom-figure``): slices in the same window, intensity
histograms and radial power spectra, so a person can judge how real the default data look."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .fileio import atomic_file


def radial_power_spectrum(image: np.ndarray, spacing_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Azimuthally averaged power spectrum: (spatial frequency in cycles/mm, power)."""
    h, w = image.shape
    power = np.abs(np.fft.fftshift(np.fft.fft2(image - image.mean()))) ** 2 / (h * w)
    fy = np.fft.fftshift(np.fft.fftfreq(h, spacing_mm))
    fx = np.fft.fftshift(np.fft.fftfreq(w, spacing_mm))
    fr = np.hypot(fy[:, None], fx[None, :])
    edges = np.linspace(0, min(np.abs(fy).max(), np.abs(fx).max()), min(h, w) // 2 + 1)
    idx = np.digitize(fr.ravel(), edges) - 1
    ok = (idx >= 0) & (idx < len(edges) - 1)
    sums = np.bincount(idx[ok], power.ravel()[ok], minlength=len(edges) - 1)
    counts = np.bincount(idx[ok], minlength=len(edges) - 1)
    centres = 0.5 * (edges[1:] + edges[:-1])
    return centres, sums / np.maximum(counts, 1)


def phantom_vs_real(real_root: str | Path, out: str | Path, seed: int = 0, n_phantom: int = 3) -> None:
    """Phantom slices next to real ones (same window), intensity histograms, radial power spectra.

    Every volume is normalised as in ``prepare`` (99.5th percentile -> 1), so
    the display window [0, 1] and the histograms are comparable.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .params import Phantom
    from .phantom import PhantomGenerator
    from .dataset import fit_normalisation
    from .dicom import read_dicom

    real = read_dicom(real_root)
    gen = PhantomGenerator(Phantom(), seed=seed)
    phantoms = [gen.study(i) for i in range(n_phantom)]

    def mid_slices(st, k=3):
        norm = fit_normalisation(st.image).apply(st.image)
        s_idx = np.linspace(0.3 * st.n_slices, 0.75 * st.n_slices, k).astype(int)
        return norm, [(norm[s, 0], f"{st.patient_id} slice {s}") for s in s_idx]

    rows = []
    for group in (phantoms[:2], real[:2]):
        for st in group:
            rows.append((st, *mid_slices(st)))
    fig = plt.figure(figsize=(16, 14))
    gs = fig.add_gridspec(5, 4, height_ratios=[1, 1, 1, 1, 1.1])
    for r, (st, _, slices) in enumerate(rows):
        for c, (img, title) in enumerate(slices):
            ax = fig.add_subplot(gs[r, c])
            ax.imshow(img, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(("PHANTOM " if st.patient_id.startswith("phantom") else "REAL ") + title, fontsize=9)
            ax.axis("off")
        ax = fig.add_subplot(gs[r, 3])
        img = slices[1][0]
        h, w = img.shape
        ax.imshow(img[h // 4: 3 * h // 4, w // 4: 3 * w // 4], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title("centre zoom x2 (same window 0..1)", fontsize=9)
        ax.axis("off")
    ax_h = fig.add_subplot(gs[4, :2])
    ax_p = fig.add_subplot(gs[4, 2:])
    bins = np.linspace(0, 1, 101)
    for st, norm, _ in rows:
        is_ph = st.patient_id.startswith("phantom")
        style = dict(color="tab:orange" if is_ph else "tab:blue", alpha=0.8, lw=1.5 if is_ph else 2.5)
        label = ("phantom " if is_ph else "real ") + st.patient_id
        hist, _ = np.histogram(norm, bins=bins, density=True)
        ax_h.plot(0.5 * (bins[1:] + bins[:-1]), hist, label=label, **style)
        spectra = [radial_power_spectrum(norm[s, t], st.spacing[0])
                   for s in range(0, st.n_slices, 2) for t in range(0, st.n_phases, 5)]
        f = spectra[0][0]
        ax_p.loglog(f[1:], np.mean([p for _, p in spectra], axis=0)[1:], label=label, **style)
    ax_h.set_yscale("log")
    ax_h.set_xlabel("normalised intensity (99.5th percentile = 1)")
    ax_h.set_ylabel("density")
    ax_h.set_title("Intensity histograms (whole volumes)")
    ax_h.legend(fontsize=8)
    ax_p.set_xlabel("spatial frequency (cycles/mm)")
    ax_p.set_ylabel("power")
    ax_p.set_title("Radial power spectra (mean over slices and phases)")
    ax_p.axvline(1 / (2 * 4 * real[0].spacing[0]), color="gray", ls="--", lw=1)
    ax_p.text(1 / (2 * 4 * real[0].spacing[0]), ax_p.get_ylim()[0] * 2, " LR Nyquist (x4)", fontsize=8)
    ax_p.legend(fontsize=8)
    fig.suptitle("cardiac-sr phantom (orange) vs real Sunnybrook cine bSSFP (blue), same normalisation and window",
                 fontsize=12)
    fig.tight_layout()
    out = Path(out)
    with atomic_file(out, suffix=out.suffix) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)
