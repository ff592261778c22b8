"""The embedded default dataset: a synthetic short-axis cine bSSFP phantom.

Each phantom patient is a stack of short-axis slices (base to apex) over one
cardiac cycle.  Models trained on it must transfer to real scans, so the
phantom imitates how a real cine bSSFP image is *formed*, not only what it
shows:

1. **Anatomy** is drawn on a 2x oversampled grid with partial-volume edges:
   chest wall (skin, subcutaneous fat, muscle, ribs), dark lungs with bright
   vessels, liver with vessels, stomach, spine (vertebral body, CSF), the
   descending aorta, epicardial fat, and the heart: an LV blood pool with a
   trabeculated endocardium and papillary muscles inside a myocardial ring
   that contracts and thickens over the cycle (myocardial area is conserved,
   so the wall thickens as the cavity shrinks), and an RV crescent.  Sizes,
   position, rotation and shape vary per patient and shrink from base to apex.
2. **Contrast**: bSSFP-like intensities (bright blood and fat, grey
   myocardium and liver, dark lung) with per-patient variation, fine and
   coarse tissue texture, and smooth coil-sensitivity shading that is
   brightest at the anterior and posterior chest wall.
3. **Acquisition**: the oversampled image is Fourier transformed, only a
   finite, apodised (Tukey-windowed) part of k-space is kept (acquisition
   matrix smaller than the 256 reconstruction matrix, as in real scans), and
   complex Gaussian noise is added to the acquired samples, so the magnitude
   image has Rician noise at the requested SNR.  The heart is averaged over
   three positions inside the slice thickness (through-plane partial volume).
   Some patients get the circular field-of-view mask that GE reconstructions
   show.

Every image is made by one linear chain, as in SynthSR (Iglesias et al.
2021): deform (the patient's frame) -> contrast (tissue intensities and
texture) -> bias (coil shading) -> blur and acquisition (k-space),
:meth:`PhantomGenerator.render_phase`.  Domain randomisation
(:class:`Randomisation`) only changes the chain's parameters; the realistic
phantom is the null randomisation (identity warp, gain 1, no extras).

Everything is drawn from ``numpy.random.default_rng(seed)`` per patient, so
the same seed gives bit-identical studies.

The module is over 400 lines on purpose: anatomy, motion, acquisition and
domain randomisation share each patient's random draws and the oversampled
grid; split over files they would be one generator in several places.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .params import Phantom
from .study import Study

# Mean tissue intensities of a bSSFP image relative to blood (= 1), with the
# per-patient spread (uniform, +/- fraction).  Order of magnitude taken from
# the Sunnybrook studies in ../shared/data/sunnybrook.
# Label codes of the tissue map returned with ``study(..., labels=True)``.
LABELS = {name: code for code, name in enumerate(
    ["background", "skin", "fat", "muscle", "bone", "soft", "clutter", "lung", "vessel", "liver", "stomach",
     "csf", "blood", "myocardium", "rim"])}

TISSUES = {
    "blood": (1.00, 0.05),
    "fat": (0.95, 0.12),
    "myocardium": (0.27, 0.15),
    "muscle": (0.24, 0.15),
    "liver": (0.32, 0.15),
    "lung": (0.05, 0.4),
    "vessel": (0.75, 0.2),
    "bone": (0.45, 0.2),
    "csf": (0.90, 0.1),
    "stomach": (0.55, 0.6),
    "skin": (0.45, 0.2),
    "rim": (0.04, 0.5),  # bSSFP's dark fat-water boundary ("India ink") line
}


def _smooth_field(rng: np.random.Generator, n: int, corr_px: float) -> np.ndarray:
    """Zero-mean, unit-std random field with Gaussian correlation length ``corr_px``."""
    white = rng.standard_normal((n, n))
    f = np.fft.fftfreq(n)
    k2 = f[:, None] ** 2 + f[None, :] ** 2
    field = np.fft.ifft2(np.fft.fft2(white) * np.exp(-2 * (np.pi * corr_px) ** 2 * k2)).real
    return (field - field.mean()) / (field.std() + 1e-12)


PHOTOS = ("astronaut", "brick", "camera", "chelsea", "coffee", "coins", "grass", "gravel", "moon", "rocket",
          "cell", "retina")


def _photo_texture(rng: np.random.Generator, n: int) -> np.ndarray:
    """Zero-mean, unit-std detail (high-pass) of a randomly chosen, zoomed, rotated and cropped grey photograph."""
    from scipy import ndimage
    from skimage import color, data, transform

    img = getattr(data, PHOTOS[rng.integers(len(PHOTOS))])()
    img = np.asarray(color.rgb2gray(img[..., :3]) if img.ndim == 3 else img, np.float64)
    img = img / max(img.max(), 1e-9)
    zoom = rng.uniform(1.0, 3.0) * n / min(img.shape)
    img = np.rot90(transform.rescale(img, zoom, order=1, anti_aliasing=zoom < 1), rng.integers(4))
    r0, c0 = rng.integers(0, img.shape[0] - n + 1), rng.integers(0, img.shape[1] - n + 1)
    crop = img[r0:r0 + n, c0:c0 + n]
    detail = crop - ndimage.gaussian_filter(crop, 8.0)
    return (detail - detail.mean()) / (detail.std() + 1e-12)


def _dead_leaves(rng: np.random.Generator, n: int, rmin: float = 1.5, rmax: float = 60.0,
                 shapes: int = 10000) -> np.ndarray:
    """A dead-leaves image in [0, 1] (Achddou, Gousseau & Ladjal 2021): random ellipses with a
    scale-invariant size law p(r) ~ r^-3 on [rmin, rmax] grid pixels and uniform random intensities,
    painted one over another; what no leaf covers keeps a smooth random background."""
    img = 0.5 + 0.15 * _smooth_field(rng, n, corr_px=rmax / 2)
    u = rng.uniform(size=(shapes, 6))
    r = (rmin ** -2 - u[:, 0] * (rmin ** -2 - rmax ** -2)) ** -0.5
    aspect = np.sqrt(1 + 2 * u[:, 1])
    a, b, ang = r * aspect, r / aspect, np.pi * u[:, 2]
    cy, cx = (u[:, 3:5] * (n + 2 * rmax) - rmax).T
    for i in range(shapes):
        y0, y1 = max(int(cy[i] - a[i]) - 1, 0), min(int(cy[i] + a[i]) + 2, n)
        x0, x1 = max(int(cx[i] - a[i]) - 1, 0), min(int(cx[i] + a[i]) + 2, n)
        if y0 >= y1 or x0 >= x1:
            continue
        dy, dx = np.arange(y0, y1)[:, None] - cy[i], np.arange(x0, x1)[None, :] - cx[i]
        c, s = np.cos(ang[i]), np.sin(ang[i])
        m = ((c * dx + s * dy) / a[i]) ** 2 + ((c * dy - s * dx) / b[i]) ** 2 <= 1
        img[y0:y1, x0:x1][m] = u[i, 5]
    return np.clip(img, 0.0, 1.0)


def _edge_alpha(distance_mm: np.ndarray, pixel_mm: float) -> np.ndarray:
    """Partial-volume occupancy from a signed distance (negative inside)."""
    return np.clip(0.5 - distance_mm / pixel_mm, 0.0, 1.0)


def _ellipse_distance(x, y, cx, cy, a, b, angle=0.0):
    """Approximate signed distance (mm) to an ellipse; negative inside."""
    c, s = np.cos(angle), np.sin(angle)
    u = (x - cx) * c + (y - cy) * s
    v = -(x - cx) * s + (y - cy) * c
    q = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    return (q - 1.0) * min(a, b)


class _Polar:
    """Polar coordinates around one centre, with cached powers of exp(i theta)."""

    def __init__(self, x, y, cx, cy):
        dx, dy = x - cx, y - cy
        self.rho = np.hypot(dx, dy)
        self._e1 = (dx + 1j * dy) / np.maximum(self.rho, 1e-6)
        self._powers = {1: self._e1}

    def power(self, k: int) -> np.ndarray:
        if k not in self._powers:
            half = self.power(k // 2)
            self._powers[k] = half * half if k % 2 == 0 else half * half * self._e1
        return self._powers[k]

    def star_distance(self, radius, harmonics):
        """Signed distance to r(theta) = radius * (1 + sum amp cos(k theta + phase))."""
        r = np.ones_like(self.rho)
        for k, amp, phase in harmonics:
            r += amp * (self.power(k) * np.exp(1j * phase)).real
        return self.rho - radius * r


def _paint(canvas, alpha, value, labels=None, code=0):
    """Alpha-composite ``value`` (scalar or map) onto ``canvas`` in place; label where alpha > 1/2."""
    canvas *= 1.0 - alpha
    canvas += alpha * value
    if labels is not None:
        labels[alpha > 0.5] = code


@dataclass
class Randomisation:
    """Per-patient domain randomisation (SynthSR-style, Iglesias et al. 2021), scaled by ``cfg.randomise``.

    The network should see far more variety than one realistic phantom gives,
    so that what it learns is how detail is lost, not what this phantom looks
    like: a smooth random (elastic) deformation of all anatomy, random tissue
    contrasts (half of the patients get a random intensity per tissue, a
    Gaussian-mixture image as in SynthSR), random texture strength and grain,
    random acquisition matrix, apodisation and extra blur (edge sharpness), and
    a wider SNR range.  Under the organs, the body wall and the cavity are a
    dead-leaves image (occluding ellipses of every size with random
    intensities, a new one in every slice), the synthetic texture on which restoration networks learn
    nearly what they learn from natural images (Achddou et al. 2021).
    """

    warp_mm: float = 0.0          # displacement amplitude (max over the grid)
    warp_x: np.ndarray | None = None  # displacement fields on the fine grid (mm); None: no deformation
    warp_y: np.ndarray | None = None
    texture_gain: float = 1.0     # multiplies every texture amplitude
    blood_texture: float = 0.0    # flow texture amplitude in the blood pool
    blur_px: float = 0.0          # extra Gaussian blur of the object (coarse pixels): random edge sharpness
    extras: list = field(default_factory=list)  # small structures anywhere in the body: (ux, uy, a, b, angle, value)
    leaves_seed: int | None = None  # seeds the dead-leaves image under the organs (a new one per slice)
    leaves_opacity: float = 0.0   # how much of what lies under them the leaves replace (cfg.randomise)
    patient: dict = field(default_factory=dict)  # the patient's own draws it replaces (contrast, acquisition, ...)

    @staticmethod
    def draw(rng: np.random.Generator, cfg: Phantom, p: "_Patient") -> "Randomisation":
        """The randomisation of patient ``p`` (read, not changed) at strength ``cfg.randomise``; what it
        decides for the patient's own contrast, acquisition, texture and trabeculation is in ``patient``."""
        r = float(cfg.randomise)
        u = rng.uniform
        n = 2 * cfg.size
        if u() < 0.5 * r:  # Gaussian-mixture contrast: any tissue may be bright or dark
            contrast = {name: float(u(0.03, 1.0)) for name in p.contrast}
            contrast["blood"] = float(u(0.5, 1.0))
        else:
            contrast = {name: v * float(np.exp(r * u(-0.4, 0.4))) for name, v in p.contrast.items()}
        own = {"contrast": contrast, "acq_read": u(1.0 - 0.55 * r, 1.0), "acq_phase": u(1.0 - 0.65 * r, 1.0),
               "tukey": u(0.0, 0.2 + 0.6 * r), "snr": cfg.snr * float(np.exp(u(-np.log(4.0), np.log(1.5)) * r))}
        corr = u(0.6, 2.5)
        texture_fine = _smooth_field(rng, n, corr_px=corr)
        photo_share = r * u(0.0, 1.0)  # natural-image structure inside the tissues (photographs bundled with scikit-image)
        if photo_share > 0:
            texture_fine = np.sqrt(1 - photo_share**2) * texture_fine + photo_share * _photo_texture(rng, n)
        own["texture_fine"] = texture_fine
        # finer, deeper trabeculation of the endocardium
        own["endo_harm"] = p.endo_harm + [(int(k), r * u(0.0, 0.03), u(0, 2 * np.pi)) for k in rng.integers(19, 40, 4)]
        extras = [(u(-1, 1), u(-1, 1), u(0.7, 5.0), u(0.7, 5.0), u(0, np.pi), u(0.02, 1.0))
                  for _ in range(int(r * rng.integers(20, 120)))]
        amp = r * u(0.0, 8.0)
        corr_warp = u(20.0, 60.0)
        wx, wy = _smooth_field(rng, n, corr_warp), _smooth_field(rng, n, corr_warp)
        scale = amp / max(np.abs(wx).max(), np.abs(wy).max(), 1e-9)
        texture_gain = float(np.exp(r * u(np.log(0.5), np.log(4.0))))
        blood_texture, blur_px = r * u(0.0, 0.06), r * u(0.0, 1.5)
        leaves_seed = int(rng.integers(2**32))
        return Randomisation(warp_mm=amp, warp_x=wx * scale, warp_y=wy * scale, texture_gain=texture_gain,
                             blood_texture=blood_texture, blur_px=blur_px, extras=extras,
                             leaves_seed=leaves_seed, leaves_opacity=r, patient=own)

    def leaves(self, n: int, slice_index: int) -> np.ndarray | float:
        """The dead-leaves image (n x n, [0, 1]) of one slice: each slice gets its own, so a patient
        shows the network as many leaf layouts as it has slices (deterministic given the seed); 0 for the
        null randomisation (painted with opacity 0: nothing changes)."""
        if self.leaves_seed is None:
            return 0.0
        return _dead_leaves(np.random.default_rng([self.leaves_seed, slice_index]), n)

    def warp(self, shape: tuple[int, int]) -> tuple[np.ndarray | float, np.ndarray | float]:
        """Displacements for the fine grid, or the coarse grid (2x2 block means); 0 without deformation."""
        if self.warp_x is None:
            return 0.0, 0.0
        if shape == self.warp_x.shape:
            return self.warp_x, self.warp_y
        h, w = shape

        def coarse(f):
            return f.reshape(h, 2, w, 2).mean(axis=(1, 3))

        return coarse(self.warp_x), coarse(self.warp_y)


NO_RANDOMISATION = Randomisation()  # the realistic phantom: identity warp, gain 1, no extras, no leaves


class _Patient:
    """All random anatomy and acquisition choices of one phantom patient."""

    def __init__(self, rng: np.random.Generator, cfg: Phantom):
        self.cfg = cfg
        u = rng.uniform
        self.contrast = {name: m * (1 + u(-s, s)) for name, (m, s) in TISSUES.items()}
        self.rotation = u(-0.35, 0.35)
        self.body_c = (u(-10, 10), u(-8, 12))
        self.body_ab = (u(165, 215), u(118, 150))
        self.fat_mm = u(6, 22)
        self.muscle_mm = u(8, 16)
        self.heart_c = (u(0, 30), u(-20, 10))
        self.lv_endo_mm = u(24, 37)  # end-diastolic endocardial radius at the base
        self.lv_wall_mm = u(8, 13)
        self.ef = u(0.35, 0.70)  # ejection fraction (heart-failure patients included)
        self.es_phase = u(0.32, 0.42)  # end systole as a fraction of the cycle
        self.heart_shift_mm = u(2, 5)  # whole-heart motion amplitude
        self.rv_angle = np.pi + u(-0.6, 0.2)
        self.rv_scale = u(0.9, 1.3)
        self.endo_harm = [(k, u(0.004, 0.02), u(0, 2 * np.pi)) for k in range(7, 19, 2)]
        self.endo_harm += [(2, u(0, 0.05), u(0, 2 * np.pi))]
        self.epi_harm = [(2, u(0, 0.05), u(0, 2 * np.pi)), (3, u(0, 0.03), u(0, 2 * np.pi))]
        pap_base = self.rv_angle + np.pi
        self.papillary = [
            (pap_base + u(-1.1, -0.6), u(3.0, 5.0)),
            (pap_base + u(0.6, 1.1), u(3.0, 5.0)),
        ]
        self.epi_fat = [
            (self.rv_angle + u(-1.2, 1.2), u(4, 9), u(10, 25), u(0, np.pi)) for _ in range(rng.integers(2, 5))
        ]
        self.lung_vessels = [(u(-1, 1), u(-1, 1), u(1.0, 3.0)) for _ in range(rng.integers(10, 25))]
        self.liver_vessels = [(u(-1, 1), u(-1, 1), u(1.5, 4.0)) for _ in range(rng.integers(3, 9))]
        self.clutter = [
            (u(-1, 1), u(-0.1, 1), u(3, 16), u(3, 16), u(0, np.pi), u(0.05, 1.0)) for _ in range(rng.integers(12, 30))
        ]
        self.ribs = [u(-2.4, -0.7) for _ in range(rng.integers(3, 7))]
        self.liver = (u(-90, -40), u(40, 80), u(70, 100), u(45, 70), u(-0.3, 0.5))
        self.stomach = (u(40, 90), u(50, 80), u(25, 45), u(20, 35), u(0, np.pi))
        self.snr = cfg.snr * u(0.7, 1.3)
        self.acq_read = u(0.75, 1.0)  # acquired fraction of k-space, read direction
        self.acq_phase = u(0.6, 1.0)  # and phase-encoding direction
        self.tukey = u(0.2, 0.6)
        self.circular_fov = u() < 0.6
        self.fov_radius = u(0.85, 0.98)
        self.coil = [(u(-150, 150), u(-150, 150), u(40, 120), u(0.1, 0.8)) for _ in range(3)]
        self.coil_depth = (u(35, 80), u(1.0, 2.5), u(35, 80), u(0.2, 0.8))
        n = 2 * cfg.size
        self.texture_fine = _smooth_field(rng, n, corr_px=1.2)
        self.texture_coarse = _smooth_field(rng, n, corr_px=10.0)
        self.noise_rng = np.random.default_rng(rng.integers(2**32))
        # Domain randomisation draws come last, so randomise=0 leaves every draw above unchanged.
        self.rand = (Randomisation.draw(np.random.default_rng(rng.integers(2**32)), cfg, self)
                     if cfg.randomise > 0 else NO_RANDOMISATION)
        vars(self).update(self.rand.patient)  # the randomised contrast, acquisition, texture, trabeculation


class PhantomGenerator:
    """Renders phantom studies; ``study(patient_index)`` is deterministic given the seed."""

    def __init__(self, cfg: Phantom = Phantom(), seed: int = 0):
        self.cfg = cfg
        self.seed = int(seed)
        n = 2 * cfg.size  # oversampled grid
        self.pixel_mm = cfg.spacing_mm / 2
        axis = (np.arange(n) - n / 2 + 0.5) * self.pixel_mm
        self.x, self.y = np.meshgrid(axis, axis)  # x: columns (left-right), y: rows (anterior-posterior)
        coarse = (np.arange(cfg.size) - cfg.size / 2 + 0.5) * cfg.spacing_mm
        self.xc, self.yc = np.meshgrid(coarse, coarse)

    # -- anatomy --------------------------------------------------------------
    def _frame(self, p: _Patient, x, y):
        """Grid coordinates in the patient's body frame (rotated, centred, randomly deformed)."""
        dx, dy = p.rand.warp(x.shape)
        x, y = x + dx, y + dy
        c, s = np.cos(p.rotation), np.sin(p.rotation)
        return c * x + s * y - p.body_c[0], -s * x + c * y - p.body_c[1]

    def _window(self, p: _Patient, cx: float, cy: float, half_mm: float):
        """Index slices of the fine grid around body-frame point (cx, cy)."""
        c, s = np.cos(p.rotation), np.sin(p.rotation)
        u, v = cx + p.body_c[0], cy + p.body_c[1]
        gx, gy = c * u - s * v, s * u + c * v
        n = self.x.shape[0]
        col, row = gx / self.pixel_mm + n / 2 - 0.5, gy / self.pixel_mm + n / 2 - 0.5
        h = (half_mm + p.rand.warp_mm) / self.pixel_mm + 3
        rs = slice(int(np.clip(row - h, 0, n)), int(np.clip(row + h + 1, 0, n)))
        cs = slice(int(np.clip(col - h, 0, n)), int(np.clip(col + h + 1, 0, n)))
        return rs, cs

    def _static(self, p: _Patient, z: float, slice_index: int = 0) -> np.ndarray:
        """Everything but the heart, at slice position z (0 base .. 1 apex) of slice ``slice_index``."""
        x, y = self._frame(p, self.x, self.y)
        px = self.pixel_mm
        c = p.contrast
        img = np.zeros_like(x)
        lab = np.zeros(x.shape, np.uint8)

        gain = p.rand.texture_gain

        def tex(value, fine, coarse=0.03):
            return value * (1 + gain * fine * p.texture_fine + gain * coarse * p.texture_coarse)

        def ellipse(cx, cy, a, b, angle, tissue, value, inside=None, rim=False, opacity=1.0):
            """Paint an ellipse (body-frame mm), touching only its bounding window.

            ``rim``: first a dark line ~1.4 mm wide around it (fat-water boundary in bSSFP);
            ``opacity``: how much of what lies under it the ellipse replaces.
            """
            if rim:
                ellipse(cx, cy, a + 1.4, b + 1.4, angle, "rim", c["rim"], inside)
            win = self._window(p, cx, cy, max(a, b) + 2)
            d = _ellipse_distance(x[win], y[win], cx, cy, a, b, angle)
            if inside is not None:
                d = np.maximum(d, inside[win])
            _paint(img[win], opacity * _edge_alpha(d, px), value[win] if np.ndim(value) else value, lab[win],
                   LABELS[tissue])

        a, b = p.body_ab
        ellipse(0, 0, a, b, 0, "skin", c["skin"])
        ellipse(0, 0, a - 2, b - 2, 0, "fat", tex(c["fat"], 0.04))
        a2, b2 = a - 2 - p.fat_mm, b - 2 - 0.7 * p.fat_mm
        ellipse(0, 0, a2, b2, 0, "muscle", tex(c["muscle"], 0.08), rim=True)
        a3, b3 = a2 - p.muscle_mm, b2 - p.muscle_mm
        # randomised patients: dead leaves under everything painted later, in the muscle layer and the cavity
        leaves = p.rand.leaves(x.shape[0], slice_index) * c["blood"]
        ellipse(0, 0, a2, b2, 0, "clutter", leaves, opacity=p.rand.leaves_opacity)
        for t in p.ribs:  # ribs in the muscle layer, anterior half
            ellipse((a3 + 5) * np.cos(t), (b3 + 5) * np.sin(t), 9, 3.5, t + np.pi / 2, "bone", tex(c["bone"], 0.1))
        # thoracic and abdominal cavity: soft tissue, then clutter (vessels, bowel, fat)
        ellipse(0, 0, a3, b3, 0, "soft", tex(1.2 * c["muscle"], 0.05, 0.08))
        ellipse(0, 0, a3, b3, 0, "clutter", leaves, opacity=p.rand.leaves_opacity)
        for ux, uy, ca, cb, ang, val in p.clutter:
            ellipse(0.75 * a3 * ux, 0.75 * b3 * uy, ca, cb, ang, "clutter", tex(val * c["blood"], 0.1, 0.1), rim=val > 0.6)
        # lungs (pushed aside by the heart), shrinking toward the apex where the liver rises
        lung = 1.0 - 0.35 * z
        heart_r = p.lv_endo_mm + p.lv_wall_mm
        heart_gap = -_ellipse_distance(x, y, p.heart_c[0], p.heart_c[1], 1.25 * heart_r + 10, heart_r + 10)
        for side in (-1, 1):
            lx, ly = side * 0.5 * a3, -0.05 * b3
            la, lb = 0.42 * a3 * lung, 0.7 * b3 * lung
            d = np.maximum(_ellipse_distance(x, y, lx, ly, la, lb, side * 0.25), heart_gap)
            _paint(img, _edge_alpha(d, px), tex(c["lung"], 0.3, 0.2), lab, LABELS["lung"])
            for vx, vy, vr in p.lung_vessels:
                ellipse(lx + 0.8 * la * vx, ly + 0.8 * lb * vy, vr, vr, 0, "vessel", c["vessel"], inside=d)
        # liver and stomach appear from mid-ventricle to the apex
        lx, ly, la, lb, lang = p.liver
        grow = float(np.clip((z - 0.25) / 0.5, 0, 1))
        if grow > 0:
            la, lb = la * (0.4 + 0.6 * grow), lb * (0.4 + 0.6 * grow)
            d = _ellipse_distance(x, y, lx, ly, la, lb, lang)
            _paint(img, _edge_alpha(d, px), tex(c["liver"], 0.07, 0.05), lab, LABELS["liver"])
            for vx, vy, vr in p.liver_vessels:
                ellipse(lx + 0.6 * la * vx, ly + 0.6 * lb * vy, vr, vr, 0, "vessel", c["vessel"], inside=d)
            sx, sy, sa, sb, sang = p.stomach
            ellipse(sx, sy, sa * grow, sb * grow, sang, "stomach", tex(c["stomach"], 0.1, 0.2))
        # spine, paraspinal muscles, spinal canal, descending aorta
        sy = b3 - 25
        for side in (-1, 1):
            ellipse(side * 28, sy + 10, 22, 16, 0, "muscle", tex(c["muscle"], 0.08))
        ellipse(0, sy - 8, 17, 15, 0, "bone", tex(c["bone"], 0.15, 0.1))
        ellipse(0, sy + 15, 7, 6, 0, "csf", c["csf"])
        ellipse(24, sy - 30, 11, 11, 0, "blood", tex(c["blood"], 0.0, 0.05))
        for ux, uy, ea, eb, ang, val in p.rand.extras:
            ellipse(0.9 * a2 * ux, 0.9 * b2 * uy, ea, eb, ang, "clutter", tex(val * c["blood"], 0.1, 0.1))
        return img, lab

    def _heart_layers(self, p: _Patient, z: float, t: float, x, y):
        """Heart shapes at slice position z and cycle phase t on grid (x, y), as (alpha, tissue) layers."""
        # contraction: 0 at end diastole, 1 at end systole, then relaxation and diastasis
        if t < p.es_phase:
            k = 0.5 * (1 - np.cos(np.pi * t / p.es_phase))
        else:
            k = 0.5 * (1 + np.cos(np.pi * min(1.0, (t - p.es_phase) / (0.75 - p.es_phase + 1e-9))))
        taper = max(0.0, 1.0 - 0.55 * z**1.5)
        r_endo0 = p.lv_endo_mm * taper
        myo_area = np.pi * ((r_endo0 + p.lv_wall_mm) ** 2 - r_endo0**2)
        r_endo = r_endo0 * np.sqrt(1 - p.ef * k)
        r_epi = np.sqrt(r_endo**2 + myo_area / np.pi)
        cx = p.heart_c[0] + p.heart_shift_mm * k * np.cos(p.rv_angle + 0.5)
        cy = p.heart_c[1] + p.heart_shift_mm * k * np.sin(p.rv_angle + 0.5)
        layers = []
        # epicardial fat, mostly around the RV and the grooves
        for ang, fa, fb, rot in p.epi_fat:
            fx = cx + (r_epi + 0.5 * fa) * np.cos(ang)
            fy = cy + (r_epi + 0.5 * fa) * np.sin(ang)
            d_fat = _ellipse_distance(x, y, fx, fy, fb * taper + 1, fa, ang + np.pi / 2)
            layers.append((d_fat - 1.4, "rim"))
            layers.append((d_fat, "fat"))
        # right ventricle: wall then blood pool; the LV drawn on top makes the crescent
        rv_size = p.rv_scale * max(0.0, 1.0 - z) ** 0.6
        if rv_size > 0.05:
            rv_r = r_epi * 1.0 * (1 - 0.25 * k)
            rvx = cx + 0.9 * r_epi * np.cos(p.rv_angle)
            rvy = cy + 0.9 * r_epi * np.sin(p.rv_angle)
            ra, rb = 1.25 * rv_r * rv_size + 3, 0.8 * rv_r * rv_size + 3
            layers.append((_ellipse_distance(x, y, rvx, rvy, ra, rb, p.rv_angle + np.pi / 2), "myocardium"))
            layers.append((_ellipse_distance(x, y, rvx, rvy, ra - 3, rb - 3, p.rv_angle + np.pi / 2), "blood"))
        polar = _Polar(x, y, cx, cy)
        epi = polar.star_distance(r_epi, p.epi_harm)
        layers.append((epi, "myocardium"))
        layers.append((polar.star_distance(r_endo, p.endo_harm), "blood"))
        if 0.1 < z < 0.85:
            for ang, pr in p.papillary:
                d = 0.78 * r_endo
                layers.append((_ellipse_distance(x, y, cx + d * np.cos(ang), cy + d * np.sin(ang),
                                                 pr * (1 + 0.3 * k), pr * (1 + 0.3 * k)), "myocardium"))
        return layers, epi


    # -- acquisition ----------------------------------------------------------
    def _acquire(self, p: _Patient, fine: np.ndarray) -> np.ndarray:
        """Oversampled object -> finite apodised k-space with noise -> magnitude image."""
        n, m = fine.shape[0], self.cfg.size
        k = np.fft.fftshift(np.fft.fft2(fine, norm="ortho"))
        lo = (n - m) // 2
        k = k[lo:lo + m, lo:lo + m] / 2.0  # band-limit to the reconstruction grid; /2 keeps intensities
        window = np.outer(_tukey_window(m, p.acq_phase, p.tukey), _tukey_window(m, p.acq_read, p.tukey))
        if p.rand.blur_px > 0:  # random extra blur: edges of random sharpness
            f = np.fft.fftshift(np.fft.fftfreq(m))
            g = np.exp(-2 * (np.pi * p.rand.blur_px * f) ** 2)
            window = window * np.outer(g, g)
        sigma_img = p.contrast["blood"] / p.snr
        acquired = window > 0
        sigma_k = sigma_img * m / np.sqrt(np.sum(window**2))
        noise = p.noise_rng.standard_normal((2, m, m)) * sigma_k
        k = (k + (noise[0] + 1j * noise[1]) * acquired) * window
        img = np.abs(np.fft.ifft2(np.fft.ifftshift(k), norm="ortho"))
        if p.circular_fov:
            r = np.hypot(self.xc, self.yc)
            img[r > p.fov_radius * m / 2 * self.cfg.spacing_mm] = 0.0
        return img.astype(np.float32)

    def _coil(self, p: _Patient) -> np.ndarray:
        x, y = self._frame(p, self.x, self.y)
        _, b = p.body_ab
        la, aa, lp, ap = p.coil_depth  # anterior and posterior coil arrays: depth (mm) and gain
        field = 0.3 + aa * np.exp(-(y + b) / la) + ap * np.exp(-(b - y) / lp)
        for cx, cy, w, amp in p.coil:
            field += amp * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * w**2))
        return field / field[np.hypot(x - p.heart_c[0], y - p.heart_c[1]) < 40].mean()

    # -- the chain ------------------------------------------------------------
    def render_phase(self, p: _Patient, scene: "_Scene", s: int, f: int, labels: bool):
        """Phase ``f`` of slice ``s``, SynthSR's linear chain: anatomy in the patient's deformed frame and
        contrast (the slice's static tissues, the heart at this cycle phase averaged over three positions
        inside the slice thickness) -> coil shading (bias) -> k-space acquisition (finite apodised matrix,
        random extra blur, noise).  Returns the image, the heart mask (coarse grid) and, with ``labels``,
        the tissue map."""
        cfg = self.cfg
        (r0, r1, c0, c1), hx, hy = scene.box, scene.hx, scene.hy
        z, t = s * scene.dz, f / cfg.phases
        static, static_lab = scene.static
        heart = np.zeros((r1 - r0, c1 - c0))
        label_map = None
        for zoff, weight in ((-scene.thickness * scene.dz, 0.25), (0.0, 0.5), (scene.thickness * scene.dz, 0.25)):
            sub = static[r0:r1, c0:c1].copy()
            sub_lab = static_lab[r0:r1, c0:c1].copy() if (labels and zoff == 0.0) else None
            layers, _ = self._heart_layers(p, min(max(z + zoff, 0.0), 1.0), t, hx, hy)
            for dist, tissue in layers:
                _paint(sub, _edge_alpha(dist, self.pixel_mm), scene.values[tissue], sub_lab, LABELS[tissue])
            heart += weight * sub
            if sub_lab is not None:
                fine_lab = static_lab.copy()
                fine_lab[r0:r1, c0:c1] = sub_lab
                label_map = fine_lab[1::2, 1::2]
        fine = static.copy()
        fine[r0:r1, c0:c1] = heart
        image = self._acquire(p, fine * scene.coil)
        _, roi_d = self._heart_layers(p, z, t, scene.cbx, scene.cby)
        return image, roi_d < 0, label_map

    def _scene(self, p: _Patient) -> "_Scene":
        """What every image of a patient shares: the coil field, the heart's window on the fine grid (body
        frame), the heart tissues' textured intensities in it, the coarse grid's body frame."""
        cfg = self.cfg
        bx, by = self._frame(p, self.x, self.y)
        box = np.hypot(bx - p.heart_c[0], by - p.heart_c[1]) < p.lv_endo_mm + p.lv_wall_mm + 55
        rows, cols = np.where(box)
        r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        cbx, cby = self._frame(p, self.xc, self.yc)
        gain = p.rand.texture_gain
        fine_amp = {"blood": p.rand.blood_texture}
        values = {  # heart tissue intensities with texture, inside the box
            tissue: p.contrast[tissue] * (1 + gain * fine_amp.get(tissue, 0.04) * p.texture_fine[r0:r1, c0:c1]
                                          + gain * 0.04 * p.texture_coarse[r0:r1, c0:c1])
            for tissue in ("blood", "myocardium", "fat", "rim")
        }
        return _Scene(coil=self._coil(p), box=(r0, r1, c0, c1), hx=bx[r0:r1, c0:c1], hy=by[r0:r1, c0:c1],
                      cbx=cbx, cby=cby, values=values, dz=1.0 / max(cfg.slices - 1, 1),
                      thickness=min(0.45, 0.3 * cfg.slice_thickness_mm / 10.0))

    # -- public -----------------------------------------------------------------
    def study(self, index: int, labels: bool = False) -> Study:
        """Render phantom patient ``index`` (deterministic given the generator's seed).

        With ``labels=True``, ``meta["labels"]`` holds the tissue map
        (slices, phases, H, W) with the codes of :data:`LABELS` (centre of the
        slice thickness, before k-space formation).
        """
        cfg = self.cfg
        rng = np.random.default_rng([self.seed, index])
        p = _Patient(rng, cfg)
        scene = self._scene(p)
        image = np.zeros((cfg.slices, cfg.phases, cfg.size, cfg.size), np.float32)
        roi = np.zeros(image.shape, np.uint8)
        label_maps = np.zeros(image.shape, np.uint8) if labels else None
        for s in range(cfg.slices):
            scene.static = self._static(p, s * scene.dz, s)
            for f in range(cfg.phases):
                image[s, f], roi[s, f], label_map = self.render_phase(p, scene, s, f, labels)
                if labels:
                    label_maps[s, f] = label_map
        return Study(
            patient_id=phantom_id(index),
            image=image,
            spacing=(cfg.spacing_mm, cfg.spacing_mm, cfg.slice_thickness_mm),
            roi=roi,
            has_roi=np.ones((cfg.slices, cfg.phases), bool),
            sources=np.full((cfg.slices, cfg.phases), f"phantom:seed={self.seed}:patient={index}", dtype=object),
            meta={"ejection_fraction": float(p.ef), "snr": float(p.snr), "es_phase": float(p.es_phase),
                  **({"labels": label_maps} if labels else {})},
        )


@dataclass
class _Scene:
    """A patient's shared rendering state (:meth:`PhantomGenerator._scene`); ``static``: the current
    slice's tissues and labels without the heart."""
    coil: np.ndarray
    box: tuple[int, int, int, int]
    hx: np.ndarray
    hy: np.ndarray
    cbx: np.ndarray
    cby: np.ndarray
    values: dict
    dz: float
    thickness: float
    static: tuple | None = None


def phantom_id(index: int) -> str:
    """The patient id of phantom patient ``index``."""
    return f"phantom{index:03d}"


def _tukey_window(n: int, fraction: float, alpha: float) -> np.ndarray:
    """Centred Tukey window covering ``fraction`` of ``n`` k-space lines, zero elsewhere."""
    width = max(4, int(round(n * fraction)))
    taper = max(1, int(alpha * width / 2))
    w = np.ones(width)
    ramp = 0.5 * (1 - np.cos(np.pi * (np.arange(taper) + 0.5) / taper))
    w[:taper] = ramp
    w[width - taper:] = ramp[::-1]
    out = np.zeros(n)
    start = (n - width) // 2
    out[start:start + width] = w
    return out
