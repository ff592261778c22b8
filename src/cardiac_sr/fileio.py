"""Atomic writes: an interrupted stage never leaves a half-written output.

Everything is written to a temporary sibling first and renamed into place at
the end (a rename within one file system is atomic on POSIX).  Outputs get the
permissions a plain ``open()``/``mkdir`` would give under the user's umask (the
temporary-file functions would make them private).  A process killed before
the rename (``kill -9``) leaves its temporary sibling behind; the next write of
the same target removes such leftovers of earlier processes.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import CardiacSRError

# the OSErrors a user can cause and fix: one line naming the path, never a traceback
WRITE_FAULTS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
                errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
                errno.EROFS: "read-only file system", errno.EFBIG: "file too large for the file system"}


@contextlib.contextmanager
def _user_faults(target: Path, kept: bool, cleanup=None) -> Iterator[None]:
    """Run the block; on any error run ``cleanup`` first, and turn an OSError the user can fix
    (:data:`WRITE_FAULTS`) into one line naming ``target`` (``kept``: a previous version is still there)."""
    try:
        yield
    except BaseException as exc:
        if cleanup is not None:
            cleanup()
        if isinstance(exc, OSError) and exc.errno in WRITE_FAULTS:
            was = "the previous version is kept" if kept else "nothing was written"
            raise CardiacSRError(f"{target}: cannot write it ({WRITE_FAULTS[exc.errno]}); {was}") from None
        raise


def check_writable(target: str | os.PathLike) -> None:
    """Fail now, before any work, where ``target`` could not be written (a read-only folder or file system)."""
    target = Path(target)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.probe-", dir=target.parent)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        if exc.errno in WRITE_FAULTS:
            raise CardiacSRError(f"{target}: cannot write in {target.parent} ({WRITE_FAULTS[exc.errno]})") from None
        raise


_STARTED = time.time()  # leftovers older than this process (module import) belong to earlier, dead runs


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _remove_stale_siblings(target: Path) -> None:
    """Delete ``.<name>.tmp-*`` / ``.<name>.old-*`` leftovers of ``target`` written by earlier processes."""
    for pattern in (f".{target.name}.tmp-*", f".{target.name}.old-*"):
        for p in target.parent.glob(pattern):
            try:
                if p.lstat().st_mtime >= _STARTED:
                    continue  # this process's (or a concurrent run's) work in progress
                _remove(p)
            except OSError:
                pass


def _another_run(target: Path) -> CardiacSRError:
    return CardiacSRError(f"{target}: was written by another run meanwhile; this run's result was not kept "
                          "(use --overwrite to replace it)")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary folder that replaces ``target`` when the block succeeds.

    On an exception the temporary folder is removed and ``target`` (if it
    existed) is left untouched.  A full disk or a read-only place is one line
    naming ``target``.  ``replace=False``: a ``target`` that appeared meanwhile
    (another run) is an error, not replaced.
    """
    target = Path(target)
    existed = target.exists() or target.is_symlink()
    with _user_faults(target, existed):
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_siblings(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it 0700
    with _user_faults(target, existed, cleanup=lambda: shutil.rmtree(tmp, ignore_errors=True)):
        yield tmp
    old = None
    if target.exists() or target.is_symlink():
        if not replace:
            shutil.rmtree(tmp, ignore_errors=True)
            raise _another_run(target)
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        _remove(old)  # a symlink is removed itself, never followed


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike, suffix: str = "", replace: bool = True) -> Iterator[Path]:
    """Yield a temporary path that is renamed to ``target`` when the block succeeds.

    ``suffix`` lets writers that insist on an extension (``np.save``, nibabel)
    see the right one.  A full disk or a read-only place is one line naming
    ``target``, with nothing half-written left.  ``replace=False``: a ``target``
    that appeared meanwhile (another run) is an error, not replaced.
    """
    target = Path(target)
    existed = target.exists() or target.is_symlink()
    with _user_faults(target, existed):
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_siblings(target)
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", suffix=suffix, dir=target.parent)
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes it 0600
        os.close(fd)
    tmp = Path(name)
    with _user_faults(target, existed, cleanup=lambda: tmp.unlink(missing_ok=True)):
        yield tmp
    if replace:
        os.replace(tmp, target)
        return
    try:
        os.link(tmp, target)  # fails where the target exists: no other run's file is ever replaced
    except FileExistsError:
        raise _another_run(target) from None
    except OSError:  # a file system without hard links
        if target.exists() or target.is_symlink():
            raise _another_run(target) from None
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: str | os.PathLike, obj) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_array(path: str | os.PathLike, array: np.ndarray) -> None:
    """Save one array as ``.npy``, atomically."""
    with atomic_file(path, suffix=".npy") as tmp:
        np.save(tmp, array)
