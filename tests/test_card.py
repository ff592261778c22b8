"""The model card: typed, checked against what the model does, defaults only for a card-less model."""

import json
import zipfile

import pytest

from cardiac_sr.card import MODEL_CARD, Card, read_card
from cardiac_sr.errors import CardiacSRError
from cardiac_sr.inference import load_model
from cardiac_sr.models import build_generator, save_generator
from cardiac_sr.names import DEFAULT_PERCENTILE
from cardiac_sr.params import Degrade


def _card(scale=4, **degrade):
    return Card("mse-NN", scale, 99.0, Degrade.of({"method": "kspace", "window": "hann", "scale": scale, **degrade},
                                                  "degrade"), {"source": "phantom", "path": None})


def test_load_model_gives_the_card_the_model_was_saved_with(tmp_path):
    save_generator(build_generator("NN", filters=8, res_blocks=1), tmp_path / "m.keras", _card())
    model, card = load_model(tmp_path / "m.keras")
    assert card == _card() and card.on_file and card.degradation.window == "hann"


def test_a_card_that_does_not_match_the_weights_is_refused(tmp_path):
    save_generator(build_generator("NN", filters=8, res_blocks=1), tmp_path / "m.keras", _card(scale=2))
    with pytest.raises(CardiacSRError, match=r"card says x2 but the model up-scales x4"):
        load_model(tmp_path / "m.keras")


def test_a_cardless_model_gets_the_defaults_and_a_warning(tmp_path, caplog):
    build_generator("NN", filters=8, res_blocks=1, scale=2).save(tmp_path / "plain.keras")
    model, card = load_model(tmp_path / "plain.keras")
    assert not card.on_file and card.scale == 2 and card.percentile == DEFAULT_PERCENTILE
    assert card.degradation.method == "blur_bicubic" and card.degradation.blur_sigma == 1.0
    assert card.name == "plain" and any("carries no preprocessing card" in r.getMessage() for r in caplog.records)


def test_a_malformed_card_is_one_line(tmp_path):
    save_generator(build_generator("NN", filters=8, res_blocks=1), tmp_path / "m.keras", _card())
    with zipfile.ZipFile(tmp_path / "m.keras") as zf:
        members = [(i, zf.read(i)) for i in zf.infolist()]
    with zipfile.ZipFile(tmp_path / "bad.keras", "w") as zf:
        for info, data in members:
            if info.filename == MODEL_CARD:
                data = json.dumps({"model": "x", "scale": 4, "degradation": {"method": "warp"},
                                   "normalisation": {"percentile": 99.5}}).encode()
            zf.writestr(info, data)
    with pytest.raises(CardiacSRError, match="bad.keras"):
        read_card(tmp_path / "bad.keras", 4)
