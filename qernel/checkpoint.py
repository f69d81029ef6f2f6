"""Checkpoints: atomic, checksummed msgpack files of pytrees (no pickles).

File layout (msgpack map):

    {"format": "qernel-checkpoint", "version": 1, "sha256": <hex of payload>, "payload": <bytes>}

where payload is `flax.serialization.msgpack_serialize` of the tree's state dict (nested maps
keyed by field / dict key / tuple index, leaves as raw little-endian arrays). A file is written to
a temporary name in the same folder, flushed and fsynced, then renamed over the target
(`os.replace`), so a reader sees either the old file or the complete new one; a partial or
corrupted file fails the checksum and is reported.

Arrays are restored as host (numpy) arrays; the caller places them on whatever devices it has
(`qernel.parallel`), so a checkpoint restores on any device count.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import warnings
from pathlib import Path

import jax
import msgpack
import numpy as np
from flax import serialization

FORMAT = "qernel-checkpoint"
VERSION = 1
_CKPT_RE = re.compile(r"^ckpt_(\d{8})\.msgpack$")

log = logging.getLogger(__name__)


class CorruptCheckpointError(ValueError):
    """The file is not a complete, valid checkpoint."""


def checkpoint_path(directory, step: int) -> Path:
    """directory/ckpt_{step:08d}.msgpack"""
    return Path(directory) / f"ckpt_{step:08d}.msgpack"


def _host(tree):
    return jax.tree.map(lambda a: np.asarray(jax.device_get(a)) if isinstance(a, jax.Array) else a, tree)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save(path, tree) -> Path:
    """Write `tree` (a pytree of arrays, numbers, strings) to `path` atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = serialization.msgpack_serialize(serialization.to_state_dict(_host(tree)))
    blob = msgpack.packb(
        {"format": FORMAT, "version": VERSION, "sha256": hashlib.sha256(payload).hexdigest(), "payload": payload},
        use_bin_type=True,
    )
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    return path


def _read_payload(path) -> bytes:
    path = Path(path)
    try:
        blob = path.read_bytes()
        outer = msgpack.unpackb(blob, raw=False, strict_map_key=True)
    except (OSError, ValueError, msgpack.exceptions.ExtraData, msgpack.exceptions.UnpackException) as err:
        raise CorruptCheckpointError(f"{path}: unreadable checkpoint ({type(err).__name__}: {err})") from err
    except Exception as err:  # msgpack raises assorted errors on truncated input
        raise CorruptCheckpointError(f"{path}: unreadable checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(outer, dict) or outer.get("format") != FORMAT:
        raise CorruptCheckpointError(f"{path}: not a {FORMAT} file")
    if outer.get("version") != VERSION:
        raise CorruptCheckpointError(f"{path}: unsupported checkpoint version {outer.get('version')!r}")
    payload = outer.get("payload")
    if not isinstance(payload, bytes) or hashlib.sha256(payload).hexdigest() != outer.get("sha256"):
        raise CorruptCheckpointError(f"{path}: checksum mismatch (partial or corrupted file)")
    return payload


def verify(path) -> bool:
    """True if `path` is a complete checkpoint with a matching checksum."""
    try:
        _read_payload(path)
        return True
    except CorruptCheckpointError:
        return False


def load(path, template=None):
    """Read a checkpoint. With a `template` pytree, return the same structure filled with the
    stored host arrays (flax.serialization.from_state_dict); without, the raw state dict.

    Raises CorruptCheckpointError if the file is partial, corrupted or not a checkpoint.
    """
    payload = _read_payload(path)
    try:
        state = serialization.msgpack_restore(payload)
    except Exception as err:
        raise CorruptCheckpointError(f"{path}: payload does not decode ({err})") from err
    if template is None:
        return state
    return serialization.from_state_dict(template, state)


def list_checkpoints(directory) -> list[tuple[int, Path]]:
    """(step, path) of every ckpt_XXXXXXXX.msgpack in `directory`, newest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for p in directory.iterdir():
        m = _CKPT_RE.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found, reverse=True)


def latest(directory) -> Path | None:
    """The newest valid checkpoint in `directory`, or None. Corrupt files are skipped with a warning."""
    for step, path in list_checkpoints(directory):
        try:
            _read_payload(path)
            return path
        except CorruptCheckpointError as err:
            msg = f"skipping corrupt checkpoint {path.name} (step {step}): {err}"
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
            log.warning(msg)
    return None


def save_model(path, params, metadata: dict) -> Path:
    """The final model file: {"params": params, "metadata": JSON string of `metadata`}."""
    return save(path, {"params": params, "metadata": json.dumps(metadata, sort_keys=True, default=str)})


def load_model(path, template_params=None):
    """(params, metadata dict) from a file written by `save_model` (params as host arrays).

    With `template_params` (e.g. `wf.init(key)`), params get the template's pytree structure."""
    raw = load(path)
    params = raw["params"]
    if template_params is not None:
        params = serialization.from_state_dict(template_params, params)
    return params, json.loads(raw["metadata"])
