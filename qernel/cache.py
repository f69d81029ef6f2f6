"""Where QERNEL remembers work between jobs, and JAX's persistent compilation cache.

    cache_dir()                  # $QERNEL_CACHE_DIR, else $XDG_CACHE_HOME/qernel, else ~/.cache/qernel
    use_compilation_cache()      # before JAX is imported: compiled programs kept in cache_dir()/jax

Every `qernel` job of a sweep compiles the same programs again: each depth's evaluation compiles
the same sampling and local-energy programs (demo: ~20 s of a ~60 s job on a 2-core CPU), and a
resumed training compiles the step it compiled before. JAX's persistent compilation cache
(https://docs.jax.dev/en/latest/persistent_compilation_cache.html) stores each compiled program
under a key of its program text, compile options and backend, so a later job loads it instead: no
result changes, only compile time is saved. The HF solutions of `qernel.hartree_fock_cache` live
in the same folder.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Set to "0" to keep `use_compilation_cache` from turning the cache on.
SWITCH = "QERNEL_JAX_CACHE"


def cache_dir() -> Path:
    """$QERNEL_CACHE_DIR, else $XDG_CACHE_HOME/qernel, else ~/.cache/qernel."""
    if os.environ.get("QERNEL_CACHE_DIR"):
        return Path(os.environ["QERNEL_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "qernel"


def use_compilation_cache() -> None:
    """Point JAX's persistent compilation cache at cache_dir()/jax, caching every program (JAX's
    defaults skip programs that compile in under 1 s, most of ours), through the environment that
    JAX reads when it is first imported. A JAX_COMPILATION_CACHE_DIR or a
    JAX_ENABLE_COMPILATION_CACHE=false set by the caller wins, and QERNEL_JAX_CACHE=0 turns it off."""
    if os.environ.get(SWITCH, "1") == "0" or os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return
    os.environ["JAX_COMPILATION_CACHE_DIR"] = str(cache_dir() / "jax")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
