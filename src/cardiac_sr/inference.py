"""The one way a trained generator runs over images: batches, tiling with overlap, self-ensemble.

Training validation, ``evaluate``, the figures, ``cardiac-sr predict`` and
``assess`` all call :func:`super_resolve` (as BasicSR's ``SRModel.test`` serves
validation and test alike): normalised LR images (N, h, w) in, the model's
unclipped output (N, h*scale, w*scale) out, in batches whose output size is
bounded (``MAX_OUTPUT_PIXELS``), with slices larger than ``tile`` LR pixels
split into tiles that read ``overlap`` pixels of context on each side, so the
result equals the whole-image prediction.  :func:`self_ensemble`
adds the 8-fold self-ensemble (flips and rotations): their mean and their spread.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .errors import CardiacSRError
from .names import DEFAULT_MODEL, PREDICT_MODEL

log = logging.getLogger(__name__)

MAX_OUTPUT_PIXELS = 1 << 20  # per model call: 4 slices of 512 x 512, 1 of 1024 x 1024 (0.25 GiB per feature tensor;
# predict's peak RSS on a 1024 x 1024 output: 1.6 GiB, 2.4 GiB at 1 << 21, for 3 % more speed)
TILE_OVERLAP = 16  # LR pixels of context read on each side of a tile (beyond the network's receptive field)
MIN_TILE = 2 * TILE_OVERLAP + 8  # a tile must keep more than its overlap, or tiling never advances


def load_model(path: str | os.PathLike = DEFAULT_MODEL):
    """A trained ``.keras`` generator, loaded in safe mode and checked (:func:`_check_contract`), and its
    :class:`~cardiac_sr.card.Card` (scale, normalisation, degradation); errors are one line."""
    import zipfile

    from .card import read_card
    from .models import load_generator

    path = Path(path)
    if path.is_dir():
        what = ("a TensorFlow SavedModel folder (an export for serving)" if (path / "saved_model.pb").is_file()
                else "a folder")
        raise CardiacSRError(f"{path}: is {what}; --model takes the trained .keras file (e.g. models/mse-NN.keras)")
    if not path.is_file():
        hint = (" (restore the shipped models with `dvc pull`, or train them with `dvc repro`; or pass --model)"
                if str(path) in (DEFAULT_MODEL, PREDICT_MODEL) else "")
        raise CardiacSRError(f"{path}: model file not found{hint}")
    if not zipfile.is_zipfile(path):
        raise CardiacSRError(f"{path}: not a Keras model (.keras zip archive)")
    try:
        model = load_generator(path)
    except Exception as exc:
        raise CardiacSRError(f"{path}: cannot be loaded as a Keras model in safe mode "
                             f"({type(exc).__name__}: {str(exc)[:200]})") from exc
    card = read_card(path, measured_scale=_check_contract(model, path))
    log.info("model %s (%s) up-scales x%d", path, card.name, card.scale)
    return model, card


def _check_contract(model, path: Path) -> int:
    """What every caller relies on: one single-channel image in and out, any size in, an integer up-scaling
    >= 2 out, finite values; anything else is one line naming the model file.  Returns the up-scaling."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise CardiacSRError(f"{path}: has {len(model.inputs)} input(s) and {len(model.outputs)} output(s); a "
                             "super-resolution model has one of each")
    shape_in, shape_out = tuple(model.inputs[0].shape), tuple(model.outputs[0].shape)
    if len(shape_in) != 4 or shape_in[-1] != 1 or len(shape_out) != 4 or shape_out[-1] != 1:
        raise CardiacSRError(f"{path}: takes {shape_in} and gives {shape_out}; a super-resolution model takes and "
                             "gives single-channel images (batch, height, width, 1)")
    if shape_in[1] is not None or shape_in[2] is not None:
        raise CardiacSRError(f"{path}: takes only {shape_in[1]} x {shape_in[2]} images; cardiac-sr needs a fully "
                             "convolutional model that takes any image size (input shape (None, None, None, 1))")
    sizes = []
    for h, w in ((8, 8), (8, 12)):
        try:
            y = np.asarray(model.predict_on_batch(np.full((1, h, w, 1), 0.5, np.float32)))
        except Exception as exc:
            raise CardiacSRError(f"{path}: fails on a {h} x {w} test image ({type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0][:150] if str(exc) else ''})") from None
        sizes.append((h, w, y.shape))
        if not np.isfinite(y).all():
            raise CardiacSRError(f"{path}: gives NaN or infinite values on a test image (a diverged or broken "
                                 "model); nothing was written")
    scales = {(shape[1] / h, shape[2] / w) for h, w, shape in sizes}
    if len(scales) != 1 or len(set(next(iter(scales)))) != 1 or not float(next(iter(scales))[0]).is_integer() \
            or next(iter(scales))[0] < 2:
        shown = ", ".join(f"{h} x {w} -> {shape[1]} x {shape[2]}" for h, w, shape in sizes)
        raise CardiacSRError(f"{path}: is not an up-scaling model ({shown}); cardiac-sr needs an output of an "
                             "integer factor >= 2 times the input size")
    return int(next(iter(scales))[0])


def _tiles(n: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Cover range(n) with windows (read_lo, read_hi, keep_lo, keep_hi)."""
    if n <= tile:
        return [(0, n, 0, n)]
    if tile <= 2 * overlap:
        raise CardiacSRError(f"tile {tile} must be larger than twice the overlap ({2 * overlap} LR pixels)")
    out, start = [], 0
    step = tile - 2 * overlap
    while start < n:
        keep_hi = min(n, start + step)
        lo, hi = max(0, start - overlap), min(n, keep_hi + overlap)
        out.append((lo, hi, start, keep_hi))
        start = keep_hi
    return out


def largest_window(h: int, w: int, tile: int = 256, overlap: int = TILE_OVERLAP) -> int:
    """LR pixels of the largest window (a tile with its context, or the whole image) that :func:`super_resolve`
    gives the model for (h, w) images: at most ``tile`` x ``tile``."""
    return max(r[1] - r[0] for r in _tiles(h, tile, overlap)) * max(c[1] - c[0] for c in _tiles(w, tile, overlap))


def images_per_call(h: int, w: int, scale: int, batch_size: int = 8, tile: int = 256,
                    overlap: int = TILE_OVERLAP) -> int:
    """How many (h, w) images (or tiles of them) :func:`super_resolve` gives the model per call: ``batch_size``,
    fewer where the output would pass :data:`MAX_OUTPUT_PIXELS` (64 feature maps per output pixel)."""
    return max(1, min(batch_size, MAX_OUTPUT_PIXELS // (largest_window(h, w, tile, overlap) * scale * scale)))


def super_resolve(model, images: np.ndarray, scale: int, batch_size: int = 8, tile: int = 256,
                  overlap: int = TILE_OVERLAP, progress: bool = True, desc: str = "super-resolve") -> np.ndarray:
    """Model output for normalised LR images (N, h, w) -> (N, h*scale, w*scale), float32, unclipped.

    Images wider or taller than ``tile`` are split into tiles with ``overlap``
    LR pixels of context on each side (beyond the network's receptive field),
    so the result equals the whole-image prediction.
    """
    images = np.asarray(images, np.float32)
    n, h, w = images.shape
    if h < 2 or w < 2:
        raise CardiacSRError(f"images of {h} x {w} pixels are too small to super-resolve")
    out = np.zeros((n, h * scale, w * scale), np.float32)
    windows = [(r, c) for r in _tiles(h, tile, overlap) for c in _tiles(w, tile, overlap)]
    batch_size = images_per_call(h, w, scale, batch_size, tile, overlap)
    with tqdm(total=n * len(windows), desc=desc, unit="tile" if len(windows) > 1 else "img", disable=not progress,
              mininterval=1) as bar:  # closed on an error too, before its one line is printed
        _run_windows(model, images, scale, windows, batch_size, out, bar)
    return out


def _run_windows(model, images, scale, windows, batch_size, out, bar) -> None:
    n = len(images)
    for (r0, r1, kr0, kr1), (c0, c1, kc0, kc1) in windows:
        for i in range(0, n, batch_size):
            x = images[i:i + batch_size, r0:r1, c0:c1, None]
            # [:len(x)]: under a MirroredStrategy, Keras 3's predict_on_batch returns every replica's copy
            # of the whole batch (n replicas x len(x) images, the first len(x) being the result)
            y = model.predict_on_batch(x)[:len(x), ..., 0]
            if not np.isfinite(y).all():
                raise CardiacSRError(f"model {model.name}: its output holds NaN or infinite values (a diverged or "
                                     "broken model); stopped before writing anything")
            out[i:i + batch_size, kr0 * scale:kr1 * scale, kc0 * scale:kc1 * scale] = \
                y[:, (kr0 - r0) * scale:(kr1 - r0) * scale, (kc0 - c0) * scale:(kc1 - c0) * scale]
            bar.update(len(x))


def _dihedral(x: np.ndarray, k: int, flip: bool) -> np.ndarray:
    x = np.rot90(x, k, axes=(-2, -1))
    return x[..., ::-1] if flip else x


def _undo_dihedral(x: np.ndarray, k: int, flip: bool) -> np.ndarray:
    x = x[..., ::-1] if flip else x
    return np.rot90(x, -k, axes=(-2, -1))


def self_ensemble(model, images, scale, **kw) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The 8-fold self-ensemble (Lim et al., EDSR+, 2017; BasicSR's ``test_selfensemble``): the model run on
    the 8 flips/rotations of the input, each output turned back.  Returns the plain prediction, the mean
    of the 8 and their std (float32), with two running sums instead of eight stacked outputs."""
    plain = total = squares = None
    for n, (k, flip) in enumerate((k, flip) for k in range(4) for flip in (False, True)):
        y = super_resolve(model, np.ascontiguousarray(_dihedral(images, k, flip)), scale,
                          desc=f"self-ensemble {n + 1}/8", **kw)
        y = np.ascontiguousarray(_undo_dihedral(y, k, flip)).astype(np.float64)
        if plain is None:
            plain, total, squares = y.astype(np.float32), y.copy(), y * y
        else:
            total += y
            squares += y * y
    mean = total / 8
    std = np.sqrt(np.maximum(squares / 8 - mean * mean, 0.0))
    return plain, mean.astype(np.float32), std.astype(np.float32)
