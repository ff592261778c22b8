"""``cardiac-sr phantom-figure``: the phantom next to the real Sunnybrook studies."""

from cardiac_sr.phantom_figure import phantom_vs_real, radial_power_spectrum

import numpy as np


def test_radial_power_spectrum_of_a_sinusoid_peaks_at_its_frequency():
    x = np.arange(64) * 1.5  # mm
    image = np.sin(2 * np.pi * 0.1 * x)[None, :] * np.ones((64, 1))  # 0.1 cycles/mm along the columns
    freq, power = radial_power_spectrum(image, 1.5)
    assert abs(freq[np.argmax(power)] - 0.1) < freq[1] - freq[0]


def test_phantom_figure_shows_the_phantom_next_to_real_studies(sunnybrook, tmp_path):
    out = tmp_path / "phantom_vs_real.png"
    phantom_vs_real(sunnybrook, out, n_phantom=2)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 100_000
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # written atomically, nothing else left
