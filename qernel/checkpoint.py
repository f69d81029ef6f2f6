"""Checkpoints: atomic, checksummed msgpack files of pytrees (no pickles).

File layout (msgpack map):

    {"format": "qernel-checkpoint", "version": 1, "sha256": <hex of payload>, "payload": <bytes>}

where payload is `flax.serialization.msgpack_serialize` of the tree's state dict (nested maps
keyed by field / dict key / tuple index, leaves as raw little-endian arrays). A file is written
atomically (`qernel.atomic`), so a reader sees either the old file or the complete new one; a
partial or corrupted file fails the checksum and is reported.

Checkpoint sets: `claim(folder, config_hash)` keeps one folder of resumable checkpoints per
config (the others aside as `<folder>.<hash>`, never overwritten), so that a config edit and its
revert resume the first run instead of losing it.

Arrays are restored as host (numpy) arrays; the caller places them on whatever devices it has
(`qernel.parallel`), so a checkpoint restores on any device count.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import warnings
from pathlib import Path

import jax
import msgpack
import numpy as np
from flax import serialization

from qernel.atomic import atomic_path
from qernel.config import canonical_json

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


def save(path, tree) -> Path:
    """Write `tree` (a pytree of arrays, numbers, strings) to `path` atomically
    (`qernel.atomic.atomic_path`); returns the path. Raises OSError."""
    path = Path(path)
    payload = serialization.msgpack_serialize(serialization.to_state_dict(_host(tree)))
    blob = msgpack.packb(
        {"format": FORMAT, "version": VERSION, "sha256": hashlib.sha256(payload).hexdigest(), "payload": payload},
        use_bin_type=True,
    )
    with atomic_path(path) as tmp:
        tmp.write_bytes(blob)
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


# -- checkpoint sets keyed by config ----------------------------------------------------------------
#: File in a checkpoint folder holding the config hash its checkpoints belong to.
CONFIG_HASH_FILE = "config_hash"
#: File in a checkpoint folder holding the config itself (canonical JSON), for people.
CONFIG_FILE = "config.json"
#: Characters of the config hash in the name of a kept set: `<folder>.<hash[:12]>`.
KEPT_HASH_CHARS = 12


def _stored_hash(directory: Path) -> str | None:
    marker = directory / CONFIG_HASH_FILE
    return marker.read_text(encoding="utf-8").strip() if marker.is_file() else None


def _contents(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if p.name not in (CONFIG_HASH_FILE, CONFIG_FILE)]


def kept_sets(directory) -> list[Path]:
    """Every kept checkpoint set beside `directory` (`<name>.<hash>`, `<name>.<hash>.<n>`), by name."""
    directory = Path(directory)
    if not directory.parent.is_dir():
        return []
    return sorted(p for p in directory.parent.iterdir()
                  if p.is_dir() and p.name.startswith(directory.name + ".") and p != directory)


def _free_name(directory: Path, config_hash: str) -> Path:
    base = directory.with_name(f"{directory.name}.{config_hash[:KEPT_HASH_CHARS]}")
    candidate, n = base, 2
    while candidate.exists():
        candidate = base.with_name(f"{base.name}.{n}")
        n += 1
    return candidate


def _kept_set_of(directory: Path, config_hash: str) -> Path | None:
    """The kept set of exactly this config (full hash in its marker), the furthest along first."""
    prefix = f"{directory.name}.{config_hash[:KEPT_HASH_CHARS]}"
    found = [p for p in kept_sets(directory)
             if (p.name == prefix or p.name.startswith(prefix + ".")) and _stored_hash(p) == config_hash]
    if not found:
        return None
    return max(found, key=lambda p: (list_checkpoints(p)[0][0] if list_checkpoints(p) else -1, p.name))


@dataclasses.dataclass(frozen=True)
class Claim:
    """The outcome of `claim`. action: "resume" (the folder held this config's set), "restored"
    (this config's kept set was moved back into the folder), or "new" (an empty set). kept: where
    the set of another config that the folder held now is (None if there was none)."""

    directory: Path
    action: str
    kept: Path | None = None


def claim(directory, config_hash: str, config=None, what: str = "checkpoints") -> Claim:
    """Make `directory` hold the checkpoint set of the run whose config hashes to `config_hash`,
    never losing another run's set.

    Every set is kept by the hash of its run's config: the set in `directory` is marked by the
    file `config_hash`; a set of another config is moved aside to `<directory>.<hash[:12]>` (or
    `<directory>.<hash[:12]>.<n>` if that name is taken: never overwritten), and a set kept
    earlier for `config_hash` is moved back, so that its run resumes where it stopped. A folder
    with checkpoints but no marker (an older layout) is kept as `<directory>.unknown`. The log
    says where each set is. config: the config itself (a mapping), written beside the marker as
    canonical JSON for people. what: the word for the set in log lines. Used by pretraining
    (`qernel pretrain`), and meant for every folder of resumable checkpoints (evaluation's too).

    Raises OSError if a folder cannot be renamed or created."""
    directory = Path(directory)
    kept = None
    if directory.is_dir():
        old = _stored_hash(directory)
        if old == config_hash:
            log.info("resuming the %s in %s (config hash %s)", what, directory, config_hash[:KEPT_HASH_CHARS])
            return Claim(directory, "resume")
        if _contents(directory):
            kept = _free_name(directory, old or "unknown")
            directory.rename(kept)
            log.warning("the config changed (hash %s -> %s): the %s of the old config are kept, unchanged, in %s; "
                        "a run with the old config resumes from them", (old or "unknown")[:KEPT_HASH_CHARS],
                        config_hash[:KEPT_HASH_CHARS], what, kept)
        else:
            for name in (CONFIG_HASH_FILE, CONFIG_FILE):
                (directory / name).unlink(missing_ok=True)
            directory.rmdir()
    stored = _kept_set_of(directory, config_hash)
    if stored is not None:
        stored.rename(directory)
        action = "restored"
        newest = latest(directory)
        log.info("resuming the %s kept for this config (hash %s): moved %s back to %s (newest: %s)", what,
                 config_hash[:KEPT_HASH_CHARS], stored, directory, newest.name if newest else "none")
    else:
        directory.mkdir(parents=True, exist_ok=True)
        action = "new"
        log.info("new %s in %s for config hash %s", what, directory, config_hash[:KEPT_HASH_CHARS])
    with atomic_path(directory / CONFIG_HASH_FILE) as tmp:
        tmp.write_text(config_hash + "\n", encoding="utf-8")
    if config is not None:
        with atomic_path(directory / CONFIG_FILE) as tmp:
            tmp.write_text(canonical_json(config) + "\n", encoding="utf-8")
    return Claim(directory, action, kept)
