"""Reading ``params.yaml`` with errors that name the missing or bad key."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import yaml

from .errors import CardiacSRError

_MISSING = object()


def load_params(path: str | Path = "params.yaml") -> dict:
    """Load the params file; a missing or malformed file is a clear error."""
    path = Path(path)
    if not path.is_file():
        raise CardiacSRError(f"{path}: params file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise CardiacSRError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise CardiacSRError(f"{path}: expected a mapping of params at the top level")
    check_numbers(data, source=str(path))
    return data


# Numeric params: (type, smallest allowed, largest allowed); None = no bound.  Checked when the
# file is loaded, so a typo ("learning_rate: abc", "batch_size: 0") is one clear line before any work.
_POSITIVE = 1e-12
NUMBERS: dict[str, tuple[type, float | None, float | None]] = {
    "prepare.phantom.patients": (int, 1, None),
    "prepare.phantom.slices": (int, 1, None),
    "prepare.phantom.phases": (int, 1, None),
    "prepare.phantom.size": (int, 16, None),
    "prepare.phantom.spacing_mm": (float, _POSITIVE, None),
    "prepare.phantom.slice_thickness_mm": (float, _POSITIVE, None),
    "prepare.phantom.snr": (float, _POSITIVE, None),
    "prepare.phantom.randomise": (float, 0, 1),
    "prepare.seed": (int, 0, None),
    "prepare.hr_size": (int, 1, None),
    "prepare.percentile": (float, 50, 100),
    "prepare.workers": (int, 1, None),
    "degrade.scale": (int, 2, None),
    "degrade.blur_sigma": (float, 0, None),
    "degrade.noise_sigma": (float, 0, None),
    "degrade.seed": (int, 0, None),
}
# train params, also valid per model under models.<name>
TRAIN_NUMBERS: dict[str, tuple[type, float | None, float | None]] = {
    "learning_rate": (float, 0, None),  # 0 is allowed: a run that only publishes its train.init weights
    "batch_size": (int, 1, None),
    "patch_size": (int, 1, None),
    "epochs": (int, 1, None),
    "steps_per_epoch": (int, 1, None),
    "val_slices": (int, 0, None),
    "val_batches": (int, 1, None),
    "seed": (int, 0, None),
    "filters": (int, 1, None),
    "res_blocks": (int, 0, None),
    "head_kernel": (int, 1, None),
    "kernel": (int, 1, None),
    "up_kernel": (int, 1, None),
    "output_kernel": (int, 1, None),
    "perceptual.pixel_weight": (float, 0, None),
}


def number(value: Any, key: str, kind: type = float, low: float | None = None, high: float | None = None,
           source: str = "params.yaml") -> int | float:
    """``value`` as an int or float within [low, high]; anything else is a one-line error naming ``key``."""
    what = "an integer" if kind is int else "a number"
    ok = not isinstance(value, bool) and isinstance(value, (int, float))
    if ok and kind is int and float(value) != int(value):
        ok = False
    if not ok:
        raise CardiacSRError(f"{source}: '{key}' must be {what}, got {value!r}")
    value = kind(value)
    if (low is not None and value < low) or (high is not None and value > high):
        if low == _POSITIVE:
            bounds = "> 0"
        elif high is None:
            bounds = f">= {low}"
        else:
            bounds = f"in [{low}, {high}]"
        raise CardiacSRError(f"{source}: '{key}' must be {bounds}, got {value!r}")
    return value


def check_numbers(params: dict, source: str = "params.yaml") -> None:
    """Check every numeric param that is present (type and range); missing ones are left to their users."""
    models = params.get("models") if isinstance(params.get("models"), dict) else {}
    sections = ["train"] + [f"models.{name}" for name, own in models.items() if isinstance(own, dict)]
    keys = dict(NUMBERS)
    keys.update({f"{section}.{k}": v for section in sections for k, v in TRAIN_NUMBERS.items()})
    for key, (kind, low, high) in keys.items():
        value = get(params, key, None)
        if value is not None:
            number(value, key, kind, low, high, source)


def get(params: dict, key: str, default: Any = _MISSING, source: str = "params.yaml") -> Any:
    """Return ``params[a][b]...`` for ``key='a.b...'``.

    A missing key raises :class:`CardiacSRError` naming the dotted key,
    unless a ``default`` is given.
    """
    node: Any = params
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            if default is not _MISSING:
                return default
            raise CardiacSRError(f"{source}: missing param '{key}'")
        node = node[part]
    return node


def choice(value: Any, allowed: Iterable[str], key: str, source: str = "params.yaml") -> str:
    """Check that ``value`` is one of ``allowed``; the error lists the valid values."""
    allowed = list(allowed)
    if value not in allowed:
        raise CardiacSRError(
            f"{source}: unknown value {value!r} for '{key}'; valid values: {', '.join(allowed)}"
        )
    return value
