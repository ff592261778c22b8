"""Reading ``params.yaml``: one small typed section per stage, checked when the file is loaded.

Each section of ``params.yaml`` has a frozen dataclass below (:class:`Prepare`
with its :class:`Phantom`, :class:`Degrade`, :class:`Train` with its
:class:`Perceptual`, :class:`Evaluate` with its :class:`External`).  A field's
metadata says what it accepts (an integer or a number within bounds, one of a
few names, a string, a flag, a list of names, a nested section) and its default
(none: the key is required).  :func:`load_params` checks the whole file against
them, so a typo (``learning_rate: abc``, ``batch_size: 0``, ``methd: kspace``)
is one line naming the key before any work.  It returns :class:`Params`, the
whole file typed: a stage reads it once and hands the library the sections it
needs (``params.degrade``, ``params.train_for("mse-NN")``); the library takes
typed sections only and reads their attributes, never ``.get`` with a default
of its own.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from .errors import CardiacSRError
from .names import (DEGRADATIONS, LOSSES, MODEL_NAMES, OPTIMIZERS, SCHEDULES, SOURCES, SPLITS, STRATEGIES, UP_INITS,
                    UPSAMPLINGS, WINDOWS)

_MISSING = object()
_POSITIVE = 1e-12  # the lower bound of "> 0"


# ----------------------------------------------------------------------------- checks of one value

def number(value: Any, key: str, kind: type = float, low: float | None = None, high: float | None = None,
           source: str = "params.yaml", open_low: bool = False, power_of_two: bool = False) -> int | float:
    """``value`` as a finite int or float within [low, high] (``open_low``: (low, high]); anything else is a
    one-line error naming ``key``.  NaN and infinities are refused: they would train or degrade to NaN."""
    what = "an integer" if kind is int else "a number"
    ok = not isinstance(value, bool) and isinstance(value, (int, float))
    if ok and not math.isfinite(value):
        raise CardiacSRError(f"{source}: '{key}' must be a finite number, got {value!r}")
    if ok and kind is int and float(value) != int(value):
        ok = False
    if not ok:
        raise CardiacSRError(f"{source}: '{key}' must be {what}, got {value!r}")
    value = kind(value)
    too_low = low is not None and (value <= low if open_low else value < low)
    if too_low or (high is not None and value > high):
        if low == _POSITIVE and high is None:
            bounds = "> 0"
        elif high is None:
            bounds = f">= {low}"
        else:
            bounds = f"in {'(' if open_low else '['}{0 if low == _POSITIVE else low}, {high}]"
        raise CardiacSRError(f"{source}: '{key}' must be {bounds}, got {value!r}")
    if power_of_two and value & (value - 1):
        raise CardiacSRError(f"{source}: '{key}' must be a power of two (2, 4, 8), got {value!r}")
    return value


def choice(value: Any, allowed: Iterable[str], key: str, source: str = "params.yaml") -> str:
    """Check that ``value`` is one of ``allowed``; the error lists the valid values."""
    allowed = list(allowed)
    if value not in allowed:
        raise CardiacSRError(
            f"{source}: unknown value {value!r} for '{key}'; valid values: {', '.join(allowed)}"
        )
    return value


# ----------------------------------------------------------------------------- field kinds

def _field(default: Any = _MISSING, **rule) -> Any:
    if default is _MISSING:
        return field(metadata=rule)
    return field(default=default, metadata=rule)


def integer(default: Any = _MISSING, low: float | None = None, high: float | None = None, **rule) -> Any:
    return _field(default, kind=int, low=low, high=high, **rule)


def real(default: Any = _MISSING, low: float | None = None, high: float | None = None, **rule) -> Any:
    return _field(default, kind=float, low=low, high=high, **rule)


PERCENTILE = {"low": 50, "high": 100, "open_low": True}  # prepare.percentile: (50, 100], here and in dataset.py


def check_percentile(value: Any, source: str = "params.yaml") -> float:
    """The one rule for the normalisation percentile (params.yaml, model cards, --percentile)."""
    return number(value, "prepare.percentile", float, source=source, **PERCENTILE)


def one_of(names: tuple[str, ...], default: Any = _MISSING) -> Any:
    return _field(default, choices=names)


def text(default: Any = _MISSING) -> Any:
    """A string, or null where the default is None (a path, a name)."""
    return _field(default, kind=str)


def flag(default: Any = _MISSING) -> Any:
    return _field(default, kind=bool)


def names_of(names: tuple[str, ...], default: Any) -> Any:
    """A list of some of ``names`` (kept as a tuple)."""
    return _field(default, each=names)


def mapping(default: Any = _MISSING) -> Any:
    """A free-form mapping, checked where it is used (``prepare.split``)."""
    return _field(default, kind=dict)


def nested(cls: type, default: Any = _MISSING) -> Any:
    return _field(default, section=cls)


def _check(value: Any, rule: dict, key: str, source: str) -> Any:
    if "section" in rule:
        return rule["section"].of(value, key, source)
    if "choices" in rule:
        return choice(value, rule["choices"], key, source)
    if "each" in rule:
        if not isinstance(value, (list, tuple)):
            raise CardiacSRError(f"{source}: '{key}' must be a list of {', '.join(rule['each'])}, got {value!r}")
        return tuple(choice(v, rule["each"], key, source) for v in value)
    kind = rule["kind"]
    if kind in (int, float):
        return number(value, key, kind, rule.get("low"), rule.get("high"), source, rule.get("open_low", False),
                      rule.get("power_of_two", False))
    if kind is bool:
        if not isinstance(value, bool):
            raise CardiacSRError(f"{source}: '{key}' must be true or false, got {value!r}")
        return value
    if kind is str:
        if not isinstance(value, (str, Path)):
            raise CardiacSRError(f"{source}: '{key}' must be a string, got {value!r}")
        return str(value)
    if not isinstance(value, dict):
        raise CardiacSRError(f"{source}: '{key}' must be a mapping, got {value!r}")
    return dict(value)


class Section:
    """A params section: build it from a mapping with :meth:`of`, read its typed attributes."""

    @classmethod
    def of(cls, value: Any, key: str, source: str = "params.yaml"):
        """``value`` (a mapping from params.yaml) as this section; unknown,
        missing or bad keys are one-line errors naming ``key.<name>``."""
        if not isinstance(value, Mapping):
            raise CardiacSRError(f"{source}: '{key}' must be a mapping of params, got {value!r}")
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise CardiacSRError(f"{source}: unknown param '{key}.{unknown[0]}'; valid params of '{key}': "
                                 f"{', '.join(known)}")
        kwargs = {}
        for name, f in known.items():
            if name in value and value[name] is None and f.default is None:
                kwargs[name] = None  # an optional path, file or section left empty (null in YAML)
            elif name in value:
                kwargs[name] = _check(value[name], dict(f.metadata), f"{key}.{name}", source)
            elif f.default is dataclasses.MISSING:
                raise CardiacSRError(f"{source}: missing param '{key}.{name}'")
        return cls(**kwargs)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------- the sections

@dataclass(frozen=True)
class Phantom(Section):
    """``prepare.phantom``: the default data (README "The phantom"), and the shape of one phantom study that
    :class:`cardiac_sr.phantom.PhantomGenerator` renders (defaults: a Sunnybrook-like study, realistic)."""
    patients: int = integer(20, low=1, high=10000)
    slices: int = integer(10, low=1, high=200)
    phases: int = integer(20, low=1, high=200)
    size: int = integer(256, low=16, high=1024)
    spacing_mm: float = real(1.4, low=_POSITIVE, high=20)
    slice_thickness_mm: float = real(10.0, low=_POSITIVE, high=100)
    snr: float = real(45.0, low=_POSITIVE, high=1e6)  # mean blood signal / noise standard deviation
    randomise: float = real(0.0, 0, 1)  # domain randomisation strength, 0 (the realistic phantom) .. 1
    randomise_splits: tuple = names_of(SPLITS, ("train", "val"))


@dataclass(frozen=True)
class Prepare(Section):
    """``prepare``: where the studies come from, the split, the size and the normalisation."""
    source: str = one_of(SOURCES)
    seed: int = integer(low=0)
    split: dict = mapping()
    hr_size: int = integer(low=1, high=2048)  # a multiple of degrade.scale (checked by prepare)
    percentile: float = real(**PERCENTILE)
    path: str | None = text(None)
    contours: str | None = text(None)
    strict: bool = flag(False)
    phantom: Phantom | None = nested(Phantom, None)
    workers: int = integer(2, low=1, high=64)


@dataclass(frozen=True)
class Degrade(Section):
    """``degrade``: how the low-resolution inputs are made."""
    method: str = one_of(DEGRADATIONS)
    scale: int = integer(low=2, high=8, power_of_two=True)  # the generator up-samples in steps of 2
    seed: int = integer(7, low=0)
    blur_sigma: float = real(1.0, low=0, high=10)  # HR pixels
    window: str = one_of(WINDOWS, "none")
    noise_sigma: float = real(0.0, low=0, high=1)  # on the [0, 1] scale


@dataclass(frozen=True)
class Perceptual(Section):
    """``train.perceptual``: the VGG16 feature loss."""
    layer: str = text("block2_conv2")
    weights: str = text("hed")
    pixel_weight: float = real(0.0, low=0, high=1e9)


@dataclass(frozen=True)
class Train(Section):
    """``train``, shared by the four models; ``models.<name>`` overrides any of it for one model."""
    learning_rate: float = real(low=0, high=1)  # 0 is allowed: a run that only publishes its train.init weights
    batch_size: int = integer(low=1, high=1024)
    patch_size: int = integer(low=1, high=1024)
    epochs: int = integer(low=1, high=100000)
    steps_per_epoch: int = integer(low=1, high=1000000)
    seed: int = integer(low=0)
    optimizer: str = one_of(OPTIMIZERS, "adam")
    schedule: str = one_of(SCHEDULES, "constant")  # cosine: decays learning_rate to 0 over epochs x steps
    ema: float = real(0.0, low=0, high=0.9999)  # momentum of the weights' moving average published as the model; 0: off
    val_slices: int = integer(32, low=0, high=100000)
    val_batches: int = integer(4, low=1, high=10000)
    init: str | None = text(None)
    keep_init: float = real(0.0, low=0, high=1)  # share of the train.init weights kept in the published model (WiSE-FT)
    strategy: str = one_of(STRATEGIES, "auto")
    mixed_precision: bool = flag(False)
    jit_compile: bool = flag(False)
    deterministic: bool | None = flag(None)  # None: deterministic unless jit_compile
    filters: int = integer(64, low=1, high=512)
    res_blocks: int = integer(4, low=0, high=64)
    head_kernel: int = integer(9, low=1, high=31)
    kernel: int = integer(3, low=1, high=31)
    up_kernel: int = integer(3, low=1, high=31)
    up_init: str = one_of(UP_INITS, "bilinear")
    output_kernel: int = integer(9, low=1, high=31)
    batch_norm: bool = flag(False)
    global_skip: bool = flag(True)
    perceptual: Perceptual = nested(Perceptual, Perceptual())


@dataclass(frozen=True)
class External(Section):
    """``evaluate.external``: a real test set scored next to the test split."""
    source: str = one_of(("dicom", "nifti"))
    path: str = text()
    contours: str | None = text(None)
    strict: bool = flag(False)


@dataclass(frozen=True)
class Evaluate(Section):
    """``evaluate``."""
    external: External | None = nested(External, None)
    self_ensemble: bool = flag(False)  # score the models' 8-fold self-ensemble (8x the time; baselines: plain)


SECTIONS = {"prepare": Prepare, "degrade": Degrade, "train": Train, "evaluate": Evaluate}
TOP_LEVEL = {"loss": LOSSES, "upsampling": UPSAMPLINGS}


# ----------------------------------------------------------------------------- the file

@dataclass(frozen=True)
class Params:
    """params.yaml, checked and typed once (:func:`load_params`); the stages hand its sections down.

    ``prepare``, ``degrade`` and ``train`` are None where the file has no such section; ``evaluate`` is its
    defaults then.  :meth:`train_for` is one model's ``train`` section with its ``models.<name>`` entry on
    top; ``loss`` and ``upsampling`` name the model the ``select`` stage publishes."""
    prepare: Prepare | None
    degrade: Degrade | None
    train: Train | None
    evaluate: Evaluate
    loss: str | None = None
    upsampling: str | None = None
    models: dict = field(default_factory=dict)  # model name -> its Train section (every model when train is set)

    @classmethod
    def of(cls, data: Mapping, source: str = "params.yaml") -> "Params":
        """Check the sections present in ``data`` (the stages say which ones they need), each model's
        ``models.<name>`` overrides and the top-level ``loss``/``upsampling``."""
        if not isinstance(data, Mapping):
            raise CardiacSRError(f"{source}: expected a mapping of params at the top level")
        for key, allowed in TOP_LEVEL.items():
            if data.get(key) is not None:
                choice(data[key], allowed, key, source)
        typed = {key: (cls_.of(data[key] or {}, key, source) if key in data else None)
                 for key, cls_ in SECTIONS.items()}
        models = {}
        if "train" in data:
            overrides = data.get("models") or {}
            if not isinstance(overrides, Mapping):
                raise CardiacSRError(f"{source}: 'models' must be a mapping of model names, got {overrides!r}")
            for name in overrides:
                choice(name, MODEL_NAMES, "models", source)
            models = {name: _train_section(data, name, source) for name in MODEL_NAMES}
        return cls(prepare=typed["prepare"], degrade=typed["degrade"], train=typed["train"],
                   evaluate=typed["evaluate"] or Evaluate(), loss=data.get("loss"), upsampling=data.get("upsampling"),
                   models=models)

    def train_for(self, name: str) -> Train:
        """Model ``name``'s train params: ``train`` with its own ``models.<name>`` entry on top."""
        choice(name, MODEL_NAMES, "model name")
        if self.train is None:
            raise CardiacSRError("params.yaml: missing param 'train'")
        return self.models[name]

    def need(self, *keys: str):
        """The sections ``keys`` (one or a tuple), each an error naming it when the file has none."""
        out = []
        for key in keys:
            value = getattr(self, key)
            if value is None:
                raise CardiacSRError(f"params.yaml: missing param '{key}'")
            out.append(value)
        return out[0] if len(out) == 1 else tuple(out)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Load the params file and check every section; a missing, malformed or bad file is a clear error."""
    path = Path(path)
    if not path.is_file():
        raise CardiacSRError(f"{path}: params file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise CardiacSRError(f"{path}: not valid YAML: {exc}") from exc
    return Params.of(data, source=str(path))


def _train_section(params: Mapping, name: str, source: str) -> Train:
    """The ``train`` section with model ``name``'s own ``models.<name>`` entry on top; an error names the
    key where the bad value was written."""
    own = (params.get("models") or {}).get(name) or {}
    if not isinstance(own, dict):
        raise CardiacSRError(f"{source}: 'models.{name}' must be a mapping of train params, got {own!r}")
    shared = params.get("train")
    if not isinstance(shared, dict):
        raise CardiacSRError(f"{source}: 'train' must be a mapping of params, got {shared!r}")
    _check_partial(own, f"models.{name}", source)
    merged = {**shared, **own}
    if isinstance(shared.get("perceptual"), dict) and isinstance(own.get("perceptual"), dict):
        merged["perceptual"] = {**shared["perceptual"], **own["perceptual"]}
    return Train.of(merged, "train", source)


def _check_partial(values: dict, key: str, source: str) -> None:
    """Check the keys present in a partial ``models.<name>`` entry, so an error names where it was written."""
    known = {f.name: f for f in dataclasses.fields(Train)}
    for name, value in values.items():
        if name not in known:
            raise CardiacSRError(f"{source}: unknown param '{key}.{name}'; valid params: {', '.join(known)}")
        if not (value is None and known[name].default is None):
            _check(value, dict(known[name].metadata), f"{key}.{name}", source)
