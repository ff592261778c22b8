import numpy as np

from cardiac_sr.params import Phantom
from cardiac_sr.phantom import LABELS, PhantomGenerator


def test_same_seed_same_study_and_other_seed_differs():
    cfg = Phantom(slices=2, phases=2, size=128, spacing_mm=2.8)
    a = PhantomGenerator(cfg, seed=5).study(1)
    b = PhantomGenerator(cfg, seed=5).study(1)
    c = PhantomGenerator(cfg, seed=6).study(1)
    d = PhantomGenerator(cfg, seed=5).study(2)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.roi, b.roi)
    assert not np.allclose(a.image, c.image)
    assert not np.allclose(a.image, d.image)


def test_shape_spacing_and_dtype(small_phantom):
    st = small_phantom
    assert st.image.shape == (3, 6, 256, 256)
    assert st.image.dtype == np.float32
    assert st.spacing == (1.4, 1.4, 10.0)
    assert np.isfinite(st.image).all() and st.image.min() >= 0  # magnitude images


def test_tissue_ordering_of_mean_intensities(small_phantom):
    st, labels = small_phantom, small_phantom.meta["labels"]

    def mean(name):
        m = labels == LABELS[name]
        assert m.sum() > 100, name
        return float(st.image[m].mean())

    blood, myo, lung, fat, liver = (mean(t) for t in ("blood", "myocardium", "lung", "fat", "liver"))
    # bSSFP: bright blood and fat, grey myocardium and liver, dark lung
    assert blood > 2 * myo
    assert fat > 2 * myo
    assert myo > 2 * lung
    assert liver > 1.5 * lung


def test_heart_mask_nonempty_and_inside_the_heart(small_phantom):
    st, labels = small_phantom, small_phantom.meta["labels"]
    areas = st.roi.reshape(st.n_slices, st.n_phases, -1).sum(-1)
    assert (areas > 50).all()
    inside = labels[st.roi.astype(bool)]
    heart = np.isin(inside, [LABELS["blood"], LABELS["myocardium"]])
    assert heart.mean() > 0.9


def test_heart_contracts_and_thickens_over_the_cycle(small_phantom):
    st, labels = small_phantom, small_phantom.meta["labels"]
    s = 1  # mid-ventricular slice
    blood_in_roi = [np.sum((labels[s, t] == LABELS["blood"]) & (st.roi[s, t] > 0)) for t in range(st.n_phases)]
    myo_in_roi = [np.sum((labels[s, t] == LABELS["myocardium"]) & (st.roi[s, t] > 0)) for t in range(st.n_phases)]
    ed, es = blood_in_roi[0], min(blood_in_roi)
    ef_area = 1 - es / ed
    assert 0.2 < ef_area < 0.8, blood_in_roi  # a plausible ejection fraction
    # the myocardial area is roughly conserved, so the wall thickens as the cavity shrinks
    assert max(myo_in_roi) / min(myo_in_roi) < 1.35
    # the images move across phases
    assert np.abs(st.image[s, 0] - st.image[s, st.n_phases // 3]).mean() > 0.005


def test_snr_controls_background_noise():
    lo = PhantomGenerator(Phantom(slices=1, phases=1, snr=10.0), seed=2).study(0)
    hi = PhantomGenerator(Phantom(slices=1, phases=1, snr=100.0), seed=2).study(0)
    corner = (0, 0, slice(0, 12), slice(100, 156))  # outside the body, inside the FOV
    assert lo.image[corner].std() > 3 * hi.image[corner].std()


def test_band_limited_by_finite_kspace(small_phantom):
    # the image is formed through an apodised, truncated k-space: the outer band is (almost) empty
    k = np.abs(np.fft.fftshift(np.fft.fft2(small_phantom.image[1, 0]))) ** 2
    n = k.shape[0]
    yy, xx = np.mgrid[:n, :n] - n // 2
    r = np.hypot(yy, xx)
    centre = k[r < n * 0.25].mean()
    edge = k[(np.abs(yy) > 0.49 * n) | (np.abs(xx) > 0.49 * n)].mean()
    assert edge < 1e-3 * centre


# ----------------------------------------------------------------------------- domain randomisation

def _randomised(r: float, n: int = 10, seed: int = 4):
    cfg = Phantom(slices=1, phases=1, size=128, spacing_mm=2.8, randomise=r)
    gen = PhantomGenerator(cfg, seed=seed)
    return [gen.study(i, labels=True) for i in range(n)]


def _tissue_mean(st, name):
    m = st.meta["labels"] == LABELS[name]
    return float(st.image[m].mean()) if m.sum() > 20 else np.nan


def test_randomised_phantom_is_deterministic_and_off_by_default():
    cfg = Phantom(slices=1, phases=2, size=128, spacing_mm=2.8, randomise=1.0)
    a, b = PhantomGenerator(cfg, seed=5).study(1), PhantomGenerator(cfg, seed=5).study(1)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.roi, b.roi)
    plain = PhantomGenerator(Phantom(slices=1, phases=2, size=128, spacing_mm=2.8), seed=5).study(1)
    assert not np.allclose(a.image, plain.image)
    assert Phantom().randomise == 0.0


def test_randomised_phantom_varies_contrast_sharpness_and_shape():
    plain, rand = _randomised(0.0), _randomised(1.0)

    def contrast_spread(studies):
        ratios = [_tissue_mean(s, "myocardium") / _tissue_mean(s, "blood") for s in studies]
        return float(np.nanstd(np.log(ratios)))

    def brightness_spread(studies):
        return float(np.std([np.mean(s.image) / np.percentile(s.image, 99.5) for s in studies]))

    # per-tissue contrasts: any tissue may be bright or dark (Gaussian-mixture images), not only bSSFP's order
    assert contrast_spread(rand) > 0.25 and contrast_spread(rand) > 4 * contrast_spread(plain)
    # and so does the image's overall brightness after the per-volume normalisation
    assert brightness_spread(rand) > 1.5 * brightness_spread(plain)
    # the anatomy is deformed: the same patient's tissue map moves by more than a sliver
    moved = np.mean([np.mean(a.meta["labels"] != b.meta["labels"]) for a, b in zip(plain, rand)])
    assert moved > 0.05
    # and every randomised study keeps a heart mask inside the heart for the ROI metrics
    for st in rand:
        inside = st.meta["labels"][st.roi.astype(bool)]
        assert st.roi.sum() > 20 and np.isin(inside, [LABELS["blood"], LABELS["myocardium"], LABELS["clutter"]]).mean() > 0.8


def test_photograph_textures_load_offline_and_are_normalised():
    from cardiac_sr.phantom import PHOTOS, _photo_texture

    rng = np.random.default_rng(0)
    for _ in range(3 * len(PHOTOS)):  # every photograph is drawn (they ship inside scikit-image's wheel)
        t = _photo_texture(rng, 96)
        assert t.shape == (96, 96) and abs(t.mean()) < 1e-9 and abs(t.std() - 1) < 1e-6
    from skimage import data
    for name in PHOTOS:
        assert getattr(data, name)().size > 10_000, name


def test_dead_leaves_are_deterministic_and_span_scales():
    from scipy import ndimage

    from cardiac_sr.phantom import _dead_leaves

    a, b = _dead_leaves(np.random.default_rng(3), 256), _dead_leaves(np.random.default_rng(3), 256)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, _dead_leaves(np.random.default_rng(4), 256))
    assert a.min() >= 0 and a.max() <= 1
    # visible leaves: connected regions of one intensity; the r^-3 size law leaves both many small
    # leaves and a few large ones (scale invariance), with sharp edges between them
    sizes = []
    for v in np.unique(a)[::4]:
        lab, n = ndimage.label(a == v)
        sizes += list(np.bincount(lab.ravel())[1:])
    sizes = np.array(sizes)
    assert (sizes <= 20).sum() > 100 and (sizes >= 0.003 * a.size).sum() >= 3
    assert np.mean(np.abs(np.diff(a, axis=1)) > 0.1) > 0.05


def test_randomised_body_carries_dead_leaves():
    """The randomised patients' body wall and cavity are full of edges the realistic phantom does not have."""
    from scipy import ndimage

    def edge_density(randomise):
        st = PhantomGenerator(Phantom(slices=1, phases=1, randomise=randomise), seed=9).study(0, labels=True)
        body = ndimage.binary_erosion(st.meta["labels"][0, 0] != LABELS["background"], iterations=4)
        img = st.image[0, 0] / np.percentile(st.image, 99.5)
        g = np.hypot(*np.gradient(ndimage.gaussian_filter(img, 1.0)))
        return np.mean(g[body] > 0.05)

    assert edge_density(1.0) > 1.5 * edge_density(0.0)


def test_dead_leaves_are_drawn_per_slice_and_reproducible():
    """Each slice of a randomised patient carries its own leaf layout (more variety per patient),
    and the same seed gives the same layout."""
    from cardiac_sr.phantom import _Patient

    cfg = Phantom(slices=2, phases=1, randomise=1.0)
    rand = _Patient(np.random.default_rng([9, 0]), cfg).rand
    again = _Patient(np.random.default_rng([9, 0]), cfg).rand
    np.testing.assert_array_equal(rand.leaves(128, 0), again.leaves(128, 0))
    assert np.mean(rand.leaves(128, 0) != rand.leaves(128, 1)) > 0.5


def test_rendered_phantom_bytes_are_pinned():
    """The phantom is the default data behind the committed table: a refactor must not move a bit.
    sha256 (first 16 hex digits) of image, heart mask and tissue labels of small studies, realistic and
    randomised (recorded 2026-12-03 before the phantom became a chain with a null randomisation)."""
    import hashlib

    from cardiac_sr.params import Phantom
    from cardiac_sr.phantom import PhantomGenerator

    def digest(cfg, index):
        st = PhantomGenerator(cfg, seed=42).study(index, labels=True)
        h = hashlib.sha256()
        for a in (st.image, st.roi, st.meta["labels"]):
            h.update(a.tobytes())
        h.update(repr(sorted((k, v) for k, v in st.meta.items() if k != "labels")).encode())
        return h.hexdigest()[:16]

    assert digest(Phantom(slices=3, phases=3, size=128, randomise=0.0), 0) == "cbeb4a921a883196"
    assert digest(Phantom(slices=3, phases=3, size=128, randomise=1.0), 1) == "abd365e2902200d7"
    assert digest(Phantom(slices=2, phases=2, size=128, randomise=0.4), 2) == "932a57f2af87226a"
