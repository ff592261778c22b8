"""Atomic writes: permissions follow the umask, failures leave nothing, leftovers of dead runs are cleaned."""

import os
import stat

import numpy as np
import pytest

from cardiac_sr import fileio
from cardiac_sr.fileio import atomic_dir, atomic_file, save_array


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_outputs_are_readable_by_colleagues_as_the_umask_allows(tmp_path, umask_022):
    save_array(tmp_path / "a.npy", np.zeros(3))
    with atomic_dir(tmp_path / "series") as tmp:
        (tmp / "s000_t000.dcm").write_bytes(b"x")
    assert _mode(tmp_path / "a.npy") == 0o644
    assert _mode(tmp_path / "series") == 0o755 and _mode(tmp_path / "series" / "s000_t000.dcm") == 0o644
    os.umask(0o077)  # a private umask stays private
    save_array(tmp_path / "b.npy", np.zeros(3))
    assert _mode(tmp_path / "b.npy") == 0o600


def test_a_failed_write_keeps_the_old_output_and_leaves_no_temp(tmp_path):
    save_array(tmp_path / "a.npy", np.ones(3))
    with pytest.raises(RuntimeError):
        with atomic_file(tmp_path / "a.npy", suffix=".npy") as tmp:
            np.save(tmp, np.zeros(5))
            raise RuntimeError("disk full")
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy"]


def test_leftovers_of_killed_runs_are_removed_when_the_target_is_written_again(tmp_path, monkeypatch):
    old_file = tmp_path / ".model.keras.tmp-abc123.keras"
    old_dir = tmp_path / ".series.tmp-xyz"
    old_file.write_bytes(b"half a model")
    old_dir.mkdir()
    (old_dir / "s000_t000.dcm").write_bytes(b"x")
    other = tmp_path / ".unrelated.tmp-1"  # another target's temp file is not ours to remove
    other.write_bytes(b"y")
    past = fileio._STARTED - 3600
    for p in (old_file, old_dir, other):
        os.utime(p, (past, past))
    fresh = tmp_path / ".model.keras.tmp-now.keras"  # work in progress of this process: kept
    fresh.write_bytes(b"z")
    with atomic_file(tmp_path / "model.keras") as tmp:
        tmp.write_bytes(b"model")
    with atomic_dir(tmp_path / "series") as tmp:
        (tmp / "s000_t000.dcm").write_bytes(b"x")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [".model.keras.tmp-now.keras", ".unrelated.tmp-1", "model.keras", "series"])


# ---------------------------------------------------------------- faults a user can cause: one line each
def _raise(code):
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))
    return fail


@pytest.mark.parametrize("code, reason", [(28, "no space left on the device"), (30, "read-only file system"),
                                          (13, "permission denied")])
def test_a_write_fault_is_one_line_naming_the_path_and_leaves_nothing(tmp_path, code, reason):
    from cardiac_sr.errors import CardiacSRError

    with pytest.raises(CardiacSRError) as err:
        with atomic_dir(tmp_path / "series") as tmp:
            (tmp / "a.dcm").write_bytes(b"x")
            _raise(code)()
    assert str(err.value) == f"{tmp_path / 'series'}: cannot write it ({reason}); nothing was written"
    (tmp_path / "kept.npy").write_bytes(b"old")
    with pytest.raises(CardiacSRError, match="the previous version is kept"):
        with atomic_file(tmp_path / "kept.npy") as tmp:
            _raise(code)()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.npy"]
    assert (tmp_path / "kept.npy").read_bytes() == b"old"


def test_a_read_only_place_fails_before_any_work(tmp_path, monkeypatch, capsys):
    import cardiac_sr.predict
    from cardiac_sr.cli import main

    np.save(tmp_path / "x.npy", np.ones((2, 16, 16), np.float32))
    monkeypatch.setattr(fileio.tempfile, "mkstemp", _raise(30))
    monkeypatch.setattr(cardiac_sr.predict, "load_model", lambda *a: pytest.fail("work started"))
    assert main(["predict", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy")]) == 2
    assert capsys.readouterr().err == (f"cardiac-sr: error: {tmp_path / 'y.npy'}: cannot write in {tmp_path} "
                                       "(read-only file system)\n")


def test_a_target_another_run_wrote_meanwhile_is_never_replaced(tmp_path):
    from cardiac_sr.errors import CardiacSRError

    for target, block in ((tmp_path / "a.nii.gz", atomic_file), (tmp_path / "series", atomic_dir)):
        with pytest.raises(CardiacSRError, match="was written by another run meanwhile"):
            with block(target, replace=False) as tmp:
                if block is atomic_file:
                    tmp.write_bytes(b"mine")
                    target.write_bytes(b"theirs")
                else:
                    target.mkdir()
                    (target / "theirs").write_bytes(b"theirs")
        assert (target.read_bytes() if target.is_file() else (target / "theirs").read_bytes()) == b"theirs"
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_replacing_a_symlinked_output_leaves_no_hidden_link_and_spares_its_destination(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("keep")
    (tmp_path / "out").symlink_to(elsewhere)
    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "new.dcm").write_bytes(b"x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "out"]
    assert (elsewhere / "keep.txt").read_text() == "keep" and (tmp_path / "out" / "new.dcm").is_file()
