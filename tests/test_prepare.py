import json
from pathlib import Path

import numpy as np
import pytest

from cardiac_sr import prepare as prep_mod
from cardiac_sr.cli import main
from cardiac_sr.degrade import degrade
from cardiac_sr.errors import CardiacSRError
from cardiac_sr.dataset import crop_or_pad, fit_normalisation, load_split, percentile_of, read_manifest
from cardiac_sr.prepare import prepare, split_patients
from cardiac_sr.params import Degrade, Prepare

from conftest import TINY_DEGRADE as DEGRADE, TINY_PREPARE as TINY


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "prepared"
    info = prepare(Prepare.of(TINY, "prepare"), 4, out)
    return out, info


def test_split_has_no_leakage_and_is_seeded():
    ids = [f"p{i:02d}" for i in range(20)]
    a = split_patients(ids, {"train": 0.7, "val": 0.15, "test": 0.15}, seed=1)
    b = split_patients(ids, {"train": 0.7, "val": 0.15, "test": 0.15}, seed=1)
    c = split_patients(ids, {"train": 0.7, "val": 0.15, "test": 0.15}, seed=2)
    assert a == b and a != c
    assert set(a) == set(ids)  # every patient in exactly one split (a dict cannot hold two)
    counts = {s: sum(v == s for v in a.values()) for s in ("train", "val", "test")}
    assert counts == {"train": 14, "val": 3, "test": 3}


def test_split_errors():
    with pytest.raises(CardiacSRError, match="sum to 1"):
        split_patients(["a", "b", "c"], {"train": 0.5, "val": 0.2, "test": 0.2}, 0)
    with pytest.raises(CardiacSRError, match="prepare.split.val"):
        split_patients(["a", "b", "c"], {"train": 0.8, "test": 0.2}, 0)
    with pytest.raises(CardiacSRError, match="the train split is empty"):
        split_patients(["a", "b"], {"train": 0.0, "val": 0.5, "test": 0.5}, 0)
    with pytest.raises(CardiacSRError, match="duplicate"):
        split_patients(["a", "a", "b"], {"train": 0.6, "val": 0.2, "test": 0.2}, 0)


def test_normalisation_percentile_and_inverse():
    vol = np.linspace(0, 1000, 10001).reshape(1, 1, 1, -1).astype(np.float32)
    norm = fit_normalisation(vol, 99.5)
    assert norm.scale == pytest.approx(995.0)
    x01 = norm.apply(vol)
    assert x01.min() == 0 and x01.max() == 1 and x01.dtype == np.float32
    np.testing.assert_allclose(norm.invert(x01)[vol < 995], vol[vol < 995], rtol=1e-5)
    with pytest.raises(CardiacSRError, match="blank"):
        fit_normalisation(np.zeros((2, 2)), 99.5, name="p7")
    with pytest.raises(CardiacSRError, match="NaN"):
        fit_normalisation(np.array([1.0, np.nan]), 99.5)


@pytest.mark.parametrize("kind", ["uniform", "ties", "negative", "zeros", "view", "one value"])
def test_percentile_is_numpys_to_the_bit(kind):
    """The low-memory percentile of the normalisation gives np.percentile's number, bit for bit, on
    float32 volumes of every kind (the scale of every slice of every dataset and prediction depends on it)."""
    rng = np.random.default_rng(len(kind))
    for trial in range(40):
        shape = tuple(int(v) for v in rng.integers(1, 9, size=int(rng.integers(1, 5))))
        vol = (rng.random(shape) * [1e-3, 1.0, 4096.0][trial % 3]).astype(np.float32)
        if kind == "ties":
            vol = np.round(vol * 7 / vol.max()).astype(np.float32)
        elif kind == "negative":
            vol = (vol - 0.4 * vol.max()).astype(np.float32)
        elif kind == "zeros":
            vol[rng.random(shape) < 0.7] = 0
        elif kind == "view":
            vol = vol.T
        elif kind == "one value":
            vol = np.full((1,), 3.5, np.float32)
        q = float(rng.choice([0.0, 50.0, 99.5, 100.0, float(rng.random() * 100)]))
        offset = float(min(0.0, float(vol.min())))
        want = np.percentile(vol - offset if offset else vol, q)
        got = percentile_of(vol, q, offset)
        assert type(got) is type(want) and np.asarray(got).tobytes() == np.asarray(want).tobytes(), (shape, q)
        if np.array_equal(vol, np.rint(vol)) and np.abs(vol).max() < 30000:  # the compacted (int16) study: the same
            assert np.asarray(percentile_of(vol.astype(np.int16), q, offset)).tobytes() == np.asarray(want).tobytes()


def test_crop_or_pad():
    a = np.arange(12 * 10, dtype=np.float32).reshape(12, 10)
    b = crop_or_pad(a, 8)
    assert b.shape == (8, 8) and b[0, 0] == a[2, 1]
    c = crop_or_pad(a, 16)
    assert c.shape == (16, 16) and c[2, 3] == a[0, 0] and c[0, 0] == 0


def test_prepare_outputs(prepared):
    out, info = prepared
    assert info["splits"] == {"train": 12, "val": 4, "test": 4}
    patients = info["patients"]
    assert not (set(patients["train"]) & set(patients["test"]))
    assert not (set(patients["train"]) & set(patients["val"]))
    for split in ("train", "val", "test"):
        hr = np.asarray(load_split(out, split))
        assert hr.dtype == np.float32 and hr.shape[1:] == (128, 128)
        assert hr.min() >= 0 and hr.max() <= 1
        assert load_split(out, split, "roi").shape == hr.shape
    rows = read_manifest(out)
    assert len(rows) == 20
    assert {r["split"] for r in rows if r["patient"] == rows[0]["patient"]} == {rows[0]["split"]}
    assert float(rows[0]["intensity_scale"]) > 0 and rows[0]["source_file"].startswith("phantom:")
    assert not list(out.parent.glob(".prepared.tmp-*"))


def test_degrade_outputs(prepared, tmp_path):
    out, _ = prepared
    info = degrade(Degrade.of(DEGRADE, "degrade"), out, tmp_path / "degraded")
    assert info["shapes"]["train"] == {"hr": [12, 128, 128], "lr": [12, 32, 32]}
    lr = np.asarray(load_split(tmp_path / "degraded", "test", "lr"))
    up = np.asarray(load_split(tmp_path / "degraded", "test", "bicubic"))
    assert lr.dtype == np.float32 and lr.shape == (4, 32, 32) and up.shape == (4, 128, 128)
    ks = degrade(Degrade.of({**DEGRADE, "method": "kspace", "window": "hann"}, "degrade"), out, tmp_path / "k")
    assert ks["method"] == "kspace"
    with pytest.raises(CardiacSRError, match="degrade.method.*blur_bicubic, kspace"):
        degrade(Degrade.of({**DEGRADE, "method": "magic"}, "degrade"), out, tmp_path / "x")
    with pytest.raises(CardiacSRError, match="missing param 'degrade.scale'"):
        degrade(Degrade.of({k: v for k, v in DEGRADE.items() if k != "scale"}, "degrade"), out, tmp_path / "x")


def test_prepare_real_dicom(sunnybrook, tmp_path):
    params = {**TINY, "source": "dicom", "path": str(sunnybrook), "hr_size": 256,
              "split": {"train": 0.5, "val": 0.0, "test": 0.5}}
    info = prepare(Prepare.of(params, "prepare"), 4, tmp_path / "p")
    assert sum(info["splits"].values()) == 12 * 20 + 13 * 20
    rows = read_manifest(tmp_path / "p")
    assert sum(int(r["has_roi"]) for r in rows) == 18
    assert rows[0]["source_file"].endswith(".dcm")


def test_interrupted_prepare_leaves_previous_output_intact(prepared, tmp_path, monkeypatch):
    out = tmp_path / "prepared"
    prepare(Prepare.of(TINY, "prepare"), 4, out)
    before = (out / "manifest.csv").read_bytes()
    calls = {"n": 0}
    real_save = np.save

    def failing_save(path, arr, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("simulated kill")
        return real_save(path, arr, *a, **k)

    monkeypatch.setattr(prep_mod.np, "save", failing_save)
    with pytest.raises(KeyboardInterrupt):
        prepare(Prepare.of({**TINY, "seed": 99}, "prepare"), 4, out)
    assert (out / "manifest.csv").read_bytes() == before
    assert not list(tmp_path.glob(".prepared.tmp-*"))


@pytest.mark.parametrize("params, message", [
    ({**TINY, "source": "png"}, "unknown value 'png' for 'prepare.source'; valid values: phantom, dicom, nifti"),
    ({k: v for k, v in TINY.items() if k != "percentile"}, "missing param 'prepare.percentile'"),
    ({**TINY, "phantom": {"patients": 2, "slices": 0}}, "prepare.phantom.slices"),
    ({**TINY, "hr_size": 130}, "multiple of degrade.scale"),
    ({**TINY, "source": "dicom", "path": None}, "needs a path"),
    ({**TINY, "source": "dicom", "path": "/nonexistent/study"}, "/nonexistent/study: no such file"),
])
def test_prepare_errors(params, message, tmp_path):
    with pytest.raises(CardiacSRError, match=message.replace("(", r"\(").replace(")", r"\)")):
        prepare(Prepare.of(params, "prepare"), 4, tmp_path / "p")
    assert not (tmp_path / "p").exists()


def test_cli_inspect_sunnybrook(sunnybrook, capsys):
    assert main(["inspect", str(sunnybrook), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["slices"], r["phases"]) for r in rows] == [(12, 20), (13, 20)]
    assert all(r["spacing_mm"][:2] == [1.367, 1.367] for r in rows)
    assert main(["inspect", str(sunnybrook)]) == 0
    table = capsys.readouterr().out
    assert "SCD0000101" in table and "1.367/1.367/10.000" in table


def test_sharded_array_reads_like_the_numpy_array(tmp_path):
    from cardiac_sr.dataset import ShardedArray, ShardWriter

    data = np.random.default_rng(0).random((23, 5, 4)).astype(np.float32)
    writer = ShardWriter(tmp_path / "a", (5, 4), np.float32, shard_slices=7)
    for part in (data[:3], data[3:3], data[3:20], data[20:]):  # appends that straddle shards, one empty
        writer.append(part)
    assert writer.close() == (23, 5, 4)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["00000.npy", "00001.npy", "00002.npy",
                                                                  "00003.npy", "index.json"]
    a = ShardedArray(tmp_path / "a")
    assert a.shape == data.shape and len(a) == 23 and a.dtype == np.float32 and a.ndim == 3
    np.testing.assert_array_equal(np.asarray(a), data)
    for key in (0, 6, 7, 22, -1, slice(5, 16), slice(None, None, 3), [21, 0, 7, 7], np.arange(23) % 2 == 0):
        np.testing.assert_array_equal(a[key], data[key])
    np.testing.assert_array_equal(a[8, 1:3, ::-1], data[8, 1:3, ::-1])
    np.testing.assert_array_equal(np.concatenate([a[s:s + 10] for s in range(0, 23, 10)]), data)
    with pytest.raises(IndexError, match="index 23 out of range"):
        a[23]
    few = ShardedArray(tmp_path / "a")
    few.MAX_OPEN = 2  # a dataset of many shards keeps only a few mapped
    np.testing.assert_array_equal(few[[0, 8, 15, 22, 0]], data[[0, 8, 15, 22, 0]])
    assert len(few._open) == 2
    with pytest.raises(CardiacSRError, match="slices of shape"):
        ShardWriter(tmp_path / "b", (5, 4), np.float32).append(np.zeros((2, 4, 5), np.float32))
    empty = ShardWriter(tmp_path / "c", (5, 4), np.uint8)
    assert empty.close() == (0, 5, 4) and ShardedArray(tmp_path / "c")[:].shape == (0, 5, 4)
    with pytest.raises(CardiacSRError, match="not found"):
        ShardedArray(tmp_path / "missing")


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cardiac-sr: error:") and "missing: no such file" in err and "Traceback" not in err


def test_cli_subcommands_and_the_stages_through_dvc(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    import argparse

    from cardiac_sr.cli import build_parser

    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(sub.choices) == {"inspect", "phantom-figure", "compare", "predict", "assess", "export"}
    assert all(f"    {name}" in out for name in sub.choices)
    assert "dvc repro prepare" in out  # the stages run through DVC, with params.yaml
    with pytest.raises(SystemExit) as exc:
        main(["prepare"])
    assert exc.value.code == 2 and "invalid choice: 'prepare'" in capsys.readouterr().err


def test_randomised_phantom_trains_on_randomised_and_tests_on_the_realistic_phantom(prepared, tmp_path):
    plain_dir, _ = prepared
    tiny = dict(TINY, phantom=dict(TINY["phantom"], randomise=1.0))
    prepare(Prepare.of(tiny, "prepare"), 4, tmp_path / "rand")
    for split, same in (("train", False), ("val", False), ("test", True)):
        a, b = load_split(plain_dir, split, "hr"), load_split(tmp_path / "rand", split, "hr")
        assert np.array_equal(a, b) == same, split
    tiny["phantom"]["randomise_splits"] = ["train", "val", "test"]
    prepare(Prepare.of(tiny, "prepare"), 4, tmp_path / "all")
    assert not np.array_equal(load_split(plain_dir, "test", "hr"), load_split(tmp_path / "all", "test", "hr"))
    for bad, message in ((2.0, "must be in \\[0, 1\\]"), ("lots", "must be a number")):
        with pytest.raises(CardiacSRError, match=message):
            prepare(Prepare.of(dict(TINY, phantom=dict(TINY["phantom"], randomise=bad)), "prepare"), 4, tmp_path / "bad")


def test_killing_prepare_leaves_no_worker_tracebacks(tmp_path):
    """kill -9 of a prepare with two workers: the workers end with it, silently (no BrokenPipe tracebacks)."""
    import signal
    import subprocess
    import sys
    import time

    code = ("import sys; sys.path.insert(0, %r)\n"
            "from cardiac_sr.params import Phantom\n"
            "from cardiac_sr.prepare import phantom_studies\n"
            "for st in phantom_studies(40, 1, Phantom(slices=8, phases=12, size=192), workers=2):\n"
            "    print('study', flush=True)\n") % str(Path(__file__).resolve().parents[1] / "src")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline().startswith(b"study")  # the pool is working
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(3)  # orphans used to finish their study and fail to send it back
    err = proc.stderr.read().decode()
    assert "Traceback" not in err and "BrokenPipe" not in err, err
