"""Atomic file writes: a reader sees either the old file or the complete new one.

    with atomic_path("results/x.nc") as tmp:    # a temporary name in the target's folder
        write_something(tmp)                    # written, flushed; then fsynced and renamed

The data go to a temporary file in the target's folder; on success it is flushed to disk
(fsync), given the permissions a plain `open(path, "w")` would give (mkstemp makes 0600), and
renamed over the target (`os.replace`, atomic on POSIX); the folder is fsynced so that the rename
survives a crash. On any error the temporary file is removed and the target is untouched.
Used by checkpoints (`qernel.checkpoint`), netCDF outputs (`qernel.io`) and the CLI's copies.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["atomic_path", "copy_atomic"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; on a clean exit make it `path` atomically.

    Creates the target's folder if needed. Raises whatever the body or the file system raise
    (OSError); the temporary file never outlives an error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def copy_atomic(src, dst) -> Path:
    """Copy the file `src` to `dst` atomically (see `atomic_path`); returns dst. Raises OSError."""
    dst = Path(dst)
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return dst
