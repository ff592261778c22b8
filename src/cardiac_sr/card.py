"""A trained generator's card: what inference needs besides the weights, inside the ``.keras`` file.

The card travels in the model's zip archive as one extra JSON member (:data:`MODEL_CARD`), which
Keras' loader ignores: the model's name, its up-scaling factor, the normalisation percentile and
the degradation it was trained for, and where its training data came from.  ``train`` writes it
(:func:`cardiac_sr.models.save_generator`); :func:`cardiac_sr.inference.load_model` reads it as a
typed :class:`Card`, so ``predict``, ``assess`` and ``export`` use a model as it was trained.
"""

from __future__ import annotations

import json
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .errors import CardiacSRError
from .names import DEFAULT_DEGRADATION, DEFAULT_PERCENTILE
from .params import Degrade, Prepare, check_percentile

log = logging.getLogger(__name__)

MODEL_CARD = "cardiac_sr.json"
CARD_DEGRADATION_KEYS = ("method", "blur_sigma", "window", "noise_sigma")  # scale is the card's own key


@dataclass(frozen=True)
class Card:
    """``name`` (e.g. mse-NN); ``scale``; ``percentile`` (each volume divided by it before the model);
    ``degradation`` (the LR inputs it learnt from, scale included); ``training_data`` (source and path,
    or None); ``on_file``: False for a model saved without a card (the pipeline's defaults assumed)."""
    name: str
    scale: int
    percentile: float
    degradation: Degrade
    training_data: dict | None = None
    on_file: bool = True

    @classmethod
    def for_training(cls, name: str, degrade: Degrade, prepare: Prepare | None) -> "Card":
        """The card ``train`` writes into model ``name``: the scale and degradation it learnt, the
        normalisation and the source of its data (a model trained on arrays of one's own, without a
        ``prepare`` section, gets the default percentile and no source)."""
        return cls(name, degrade.scale, prepare.percentile if prepare else DEFAULT_PERCENTILE, degrade,
                   {"source": prepare.source if prepare else None, "path": prepare.path if prepare else None})

    def to_json(self) -> dict:
        """The card as stored in the file."""
        return {"model": self.name, "scale": self.scale, "normalisation": {"percentile": self.percentile},
                "degradation": {k: getattr(self.degradation, k) for k in CARD_DEGRADATION_KEYS},
                "training_data": self.training_data}


def read_raw_card(path) -> dict | None:
    """The card of a ``.keras`` file as stored, or None for a model saved without one."""
    try:
        with zipfile.ZipFile(path) as zf:
            if MODEL_CARD not in zf.namelist():
                return None
            return json.loads(zf.read(MODEL_CARD))
    except (OSError, zipfile.BadZipFile, ValueError):
        return None


def read_card(path, measured_scale: int) -> Card:
    """The typed card of the model at ``path``, whose output measured ``measured_scale`` times its input.

    A card-less model gets the pipeline's defaults (and a warning); a card whose scale is not what the
    model does is refused in one line."""
    raw = read_raw_card(path)
    if raw is None:
        log.warning("%s carries no preprocessing card (a model saved before cards, or not by the train stage): "
                    "assuming the defaults, %gth-percentile normalisation and %s", path, DEFAULT_PERCENTILE,
                    DEFAULT_DEGRADATION)
        degradation = Degrade.of({**DEFAULT_DEGRADATION, "scale": measured_scale}, "degradation", source=str(path))
        return Card(Path(path).stem, measured_scale, DEFAULT_PERCENTILE, degradation, None, on_file=False)
    try:
        scale = int(raw.get("scale", measured_scale))
        stored = {k: v for k, v in raw["degradation"].items() if k in CARD_DEGRADATION_KEYS}
        degradation = Degrade.of({**stored, "scale": scale}, "degradation", source=f"{path} (model card)")
        percentile = check_percentile(raw["normalisation"]["percentile"], source=f"{path} (model card)")
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise CardiacSRError(f"{path}: its model card ({MODEL_CARD}) is incomplete or malformed ({exc!r})") from None
    if scale != measured_scale:
        raise CardiacSRError(f"{path}: its card says x{scale} but the model up-scales x{measured_scale}; the card "
                             "does not belong to these weights")
    return Card(str(raw.get("model") or Path(path).stem), scale, percentile, degradation, raw.get("training_data"))
