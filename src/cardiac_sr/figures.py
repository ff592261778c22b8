"""Figures a person would rather look at than read."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .fileio import atomic_file
from .study import Study


def write_cine_gif(columns: list[tuple[str, np.ndarray]], path: str | Path, zoom: int = 1,
                   frame_ms: int = 80, label_px: int = 14) -> Path:
    """An animated GIF of cine loops side by side: one column per (title, frames (T, H, W) in [0, 1]).

    Every column has the same T and frame size; intensities are clipped to [0, 1] (the display
    window of the normalised data), enlarged ``zoom`` times by pixel repetition (nearest
    neighbour, so no interpolation hides or adds detail), titled, and played in a loop at
    ``frame_ms`` per phase.  Encoded by Pillow (grey-level palette), written atomically.
    """
    from PIL import Image, ImageDraw

    shapes = {frames.shape for _, frames in columns}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3:
        raise ValueError(f"cine columns must all be (T, H, W) of one shape, got {sorted(shapes)}")
    t, h, w = next(iter(shapes))
    gap = 4
    width = len(columns) * (w * zoom + gap) - gap
    frames = []
    for k in range(t):
        canvas = Image.new("L", (width, label_px + h * zoom), 0)
        draw = ImageDraw.Draw(canvas)
        for c, (title, cine) in enumerate(columns):
            x0 = c * (w * zoom + gap)
            img = (np.clip(cine[k], 0, 1) * 255 + 0.5).astype(np.uint8)
            if zoom > 1:
                img = np.kron(img, np.ones((zoom, zoom), np.uint8))
            canvas.paste(Image.fromarray(img), (x0, label_px))
            draw.text((x0 + 2, 1), title if c else f"{title}  phase {k + 1}/{t}", fill=255)
        frames.append(canvas)
    path = Path(path)
    with atomic_file(path, suffix=".gif") as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=frame_ms, loop=0,
                       optimize=False, comment=b"cardiac-sr")  # the marker predict --overwrite looks for
    return path


PREVIEW_PX = 256  # output pixels a side of the preview's centre window


def write_preview(study: Study, sr_middle: np.ndarray, scale: int, path: Path, norm) -> Path:
    """Animated GIF of the middle slice over all phases: the input (pixels enlarged x``scale``) next to the
    super-resolved image ``sr_middle`` (phases, H, W) of slice ``n_slices // 2``, the central ``PREVIEW_PX``
    output pixels, in the study's normalised window ``norm`` (the one the prediction used)."""
    s = study.image.shape[0] // 2
    lr = np.kron(norm.apply(study.image[s]), np.ones((1, scale, scale), np.float32))
    out = norm.apply(sr_middle)
    h, w = out.shape[1:]
    r0, c0 = max(0, (h - PREVIEW_PX) // 2), max(0, (w - PREVIEW_PX) // 2)
    win = np.s_[:, r0:r0 + PREVIEW_PX, c0:c0 + PREVIEW_PX]
    return write_cine_gif([(f"input {study.patient_id} slice {s}", lr[win]), ("super-resolved x%d" % scale, out[win])],
                          path)
