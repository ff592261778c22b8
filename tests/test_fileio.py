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
