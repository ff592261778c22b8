"""params.yaml: numeric params are checked when the file is read, with one line naming the key."""

import shutil

import pytest
import yaml

from cardiac_sr.errors import CardiacSRError
from cardiac_sr.params import Degrade, Params, Train, load_params, number

from conftest import ROOT


def _write(tmp_path, edit):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    edit(params)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_the_committed_params_pass(tmp_path):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    assert load_params(tmp_path / "params.yaml").degrade.scale == 4


@pytest.mark.parametrize("key, value, message", [
    ("prepare.hr_size", "big", "'prepare.hr_size' must be an integer, got 'big'"),
    ("degrade.scale", 0, "'degrade.scale' must be in [2, 8], got 0"),
    ("degrade.blur_sigma", -1, "'degrade.blur_sigma' must be in [0, 10], got -1.0"),
    ("prepare.percentile", 120, "'prepare.percentile' must be in (50, 100], got 120.0"),
    ("prepare.phantom.patients", 0, "'prepare.phantom.patients' must be in [1, 10000], got 0"),
    ("prepare.phantom.randomise", 2, "'prepare.phantom.randomise' must be in [0, 1], got 2.0"),
    ("train.learning_rate", "abc", "'train.learning_rate' must be a number, got 'abc'"),
    ("train.batch_size", 0, "'train.batch_size' must be in [1, 1024], got 0"),
    ("train.steps_per_epoch", 0, "'train.steps_per_epoch' must be in [1, 1000000], got 0"),
    ("train.epochs", True, "'train.epochs' must be an integer, got True"),
    ("train.learning_rate", float("nan"), "'train.learning_rate' must be a finite number, got nan"),
    ("train.learning_rate", float("inf"), "'train.learning_rate' must be a finite number, got inf"),
    ("train.learning_rate", 100, "'train.learning_rate' must be in [0, 1], got 100.0"),
    ("degrade.noise_sigma", float("nan"), "'degrade.noise_sigma' must be a finite number, got nan"),
    ("degrade.scale", 3, "'degrade.scale' must be a power of two (2, 4, 8), got 3"),
    ("degrade.blur_sigma", 1e9, "'degrade.blur_sigma' must be in [0, 10], got 1000000000.0"),
    ("prepare.hr_size", 100000, "'prepare.hr_size' must be in [1, 2048], got 100000"),
    ("prepare.percentile", 50, "'prepare.percentile' must be in (50, 100], got 50.0"),
    ("prepare.phantom.slices", 100000, "'prepare.phantom.slices' must be in [1, 200], got 100000"),
    ("train.filters", 100000, "'train.filters' must be in [1, 512], got 100000"),
    ("train.batch_size", 100000, "'train.batch_size' must be in [1, 1024], got 100000"),
    ("models.mse-NN.epochs", -1, "'models.mse-NN.epochs' must be in [1, 100000], got -1"),
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


@pytest.mark.parametrize("key, value, message", [
    ("degrade.methd", "kspace", "unknown param 'degrade.methd'; valid params of 'degrade': method, scale, seed"),
    ("degrade.method", "sinc", "unknown value 'sinc' for 'degrade.method'; valid values: blur_bicubic, kspace"),
    ("degrade.window", "hamming", "unknown value 'hamming' for 'degrade.window'; valid values: none, hann, tukey"),
    ("prepare.source", "png", "unknown value 'png' for 'prepare.source'; valid values: phantom, dicom, nifti"),
    ("prepare.strict", "yes", "'prepare.strict' must be true or false, got 'yes'"),
    ("prepare.phantom.randomise_splits", ["train", "tset"],
     "unknown value 'tset' for 'prepare.phantom.randomise_splits'; valid values: train, val, test"),
    ("train.strategy", "tpu", "unknown value 'tpu' for 'train.strategy'; valid values: auto, default, mirrored"),
    ("train.batch_norm", 1, "'train.batch_norm' must be true or false, got 1"),
    ("train.perceptual.pixel_weigth", 0.1, "unknown param 'train.perceptual.pixel_weigth'"),
    ("train.perceptual.pixel_weight", -1, "'train.perceptual.pixel_weight' must be in [0, 1000000000.0], got -1.0"),
    ("models.mse-NN.learning_rte", 0.1, "unknown param 'models.mse-NN.learning_rte'"),
    ("evaluate.external", {"source": "dicom"}, "missing param 'evaluate.external.path'"),
    ("evaluate.external", "../data", "'evaluate.external' must be a mapping of params, got '../data'"),
])
def test_every_section_is_checked_when_the_file_is_loaded(tmp_path, key, value, message):
    def edit(params):
        node = params
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value

    path = _write(tmp_path, edit)
    with pytest.raises(CardiacSRError) as err:
        load_params(path)
    assert str(err.value).startswith(f"{path}: {message}")


def test_sections_are_typed_with_defaults_and_model_overrides(tmp_path):
    def edit(params):
        del params["train"]["val_slices"]            # a default fills it
        params["train"]["batch_size"] = 16.0          # an integral float becomes an int
        params["models"]["mse-NN"] = {"epochs": 3, "perceptual": {"pixel_weight": 0.5}}
        params["evaluate"]["external"] = {"source": "dicom", "path": "../data"}

    params = load_params(_write(tmp_path, edit))
    train = params.train
    assert isinstance(train, Train) and train.val_slices == 32 and train.batch_size == 16
    assert type(train.batch_size) is int and type(train.learning_rate) is float
    own = params.train_for("mse-NN")
    assert own.epochs == 3 and train.epochs == params.train_for("perceptual-TS").epochs != 3  # the shared value stays
    # a partial perceptual entry overrides only its own key
    assert own.perceptual.pixel_weight == 0.5 and own.perceptual.layer == train.perceptual.layer == "block2_conv2"
    assert params.train_for("perceptual-TS") == train  # an entry that overrides nothing (params.yaml: epochs 15)
    deg = params.degrade
    assert (deg.method, deg.scale, deg.blur_sigma, deg.window) == ("blur_bicubic", 4, 1.0, "none")
    ext = params.evaluate.external
    assert (ext.source, ext.path, ext.contours, ext.strict) == ("dicom", "../data", None, False)
    absent = Params.of({"evaluate": None})
    assert absent.evaluate.external is None and absent.degrade is None  # an absent section: defaults or None
    with pytest.raises(CardiacSRError, match="missing param 'degrade'"):
        absent.need("degrade")
    with pytest.raises(CardiacSRError, match="missing param 'degrade.method'"):
        Params.of({"degrade": {}})
    with pytest.raises(CardiacSRError, match="missing param 'degrade.method'"):
        Degrade.of({"scale": 4}, "degrade")
    with pytest.raises(CardiacSRError, match="unknown value 'mse-XX' for 'models'"):
        Params.of({"train": dict(yaml.safe_load((ROOT / "params.yaml").read_text())["train"]), "models": {"mse-XX": {}}})
