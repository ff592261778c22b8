"""params.yaml: numeric params are checked when the file is read, with one line naming the key."""

import shutil

import pytest
import yaml

from cardiac_sr.errors import CardiacSRError
from cardiac_sr.params import load_params, number

from conftest import ROOT


def _write(tmp_path, edit):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    edit(params)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_the_committed_params_pass(tmp_path):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    assert load_params(tmp_path / "params.yaml")["degrade"]["scale"] == 4


@pytest.mark.parametrize("key, value, message", [
    ("prepare.hr_size", "big", "'prepare.hr_size' must be an integer, got 'big'"),
    ("degrade.scale", 0, "'degrade.scale' must be >= 2, got 0"),
    ("degrade.blur_sigma", -1, "'degrade.blur_sigma' must be >= 0, got -1.0"),
    ("prepare.percentile", 120, "'prepare.percentile' must be in [50, 100], got 120.0"),
    ("prepare.phantom.patients", 0, "'prepare.phantom.patients' must be >= 1, got 0"),
    ("prepare.phantom.randomise", 2, "'prepare.phantom.randomise' must be in [0, 1], got 2.0"),
    ("train.learning_rate", "abc", "'train.learning_rate' must be a number, got 'abc'"),
    ("train.batch_size", 0, "'train.batch_size' must be >= 1, got 0"),
    ("train.steps_per_epoch", 0, "'train.steps_per_epoch' must be >= 1, got 0"),
    ("train.epochs", True, "'train.epochs' must be an integer, got True"),
    ("models.mse-NN.epochs", -1, "'models.mse-NN.epochs' must be >= 1, got -1"),
])
def test_bad_numbers_are_one_line_errors_naming_the_key(tmp_path, key, value, message):
    def edit(params):
        node = params
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = value

    path = _write(tmp_path, edit)
    with pytest.raises(CardiacSRError) as err:
        load_params(path)
    assert str(err.value) == f"{path}: {message}"


def test_number_accepts_integral_floats_and_returns_the_type():
    assert number(4.0, "degrade.scale", int, 2) == 4 and isinstance(number(4.0, "k", int), int)
    assert number(1, "train.learning_rate", float) == 1.0
