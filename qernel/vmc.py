"""The VMC run machinery below both drivers: retries, the run log, compiled MCMC, model-file facts.

`qernel.train` (pretraining and fine-tuning) and `qernel.evaluate` (sampling) both import this
module and neither imports the other (docs/architecture.md).

    out, n_rejected = run_with_retries(attempt, key_t, rejected, max_retries, on_reject)

One step of either driver is an `attempt(key, a)` with the key fold_in(key_t, a) of attempt a
(a = 0, 1, ...): a step whose outcome `rejected(out)` calls bad (a non-finite local energy or
update) is redone from the same state with the next key, at most `max_retries` times; then
`RetriesExhausted` carries the last reason to the driver, which decides what comes next
(training rolls back to its last checkpoint, evaluation stops: see their docstrings). Because
the key of step t and attempt a depends only on (t, a), a run resumed from a checkpoint redraws
exactly the numbers of an uninterrupted run.
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Callable, TypeVar

import jax
import jax.numpy as jnp

from qernel import numerics
from qernel.mcmc import make_mcmc_step
from qernel.system import System

T = TypeVar("T")

#: The working precisions of the engine (qernel.numerics).
DTYPES = numerics.DTYPES


class RetriesExhausted(RuntimeError):
    """Every attempt of one step was rejected. reason: the last rejection; attempts: how many."""

    def __init__(self, reason: str, attempts: int):
        super().__init__(f"{reason} in {attempts} attempts")
        self.reason, self.attempts = reason, attempts


def run_with_retries(attempt: Callable[[jax.Array, int], T], key, rejected: Callable[[T], str | None], max_retries: int,
                     on_reject: Callable[[int, str], None] | None = None) -> tuple[T, int]:
    """(out, a): the first accepted `attempt(fold_in(key, a), a)`, a = 0 .. max_retries.

    rejected(out) -> None (accept) or a one-line reason; on_reject(a, reason) is called for each
    rejected attempt (logging). The attempt keeps its own state: a rejected attempt must leave
    the state it started from (the jitted steps of both drivers return their input when
    anything is non-finite). Raises RetriesExhausted(reason, max_retries + 1) when every
    attempt is rejected.
    """
    reason = "no attempt"
    for a in range(max_retries + 1):
        out = attempt(jax.random.fold_in(key, a), a)
        reason = rejected(out)
        if reason is None:
            return out, a
        if on_reject is not None:
            on_reject(a, reason)
    raise RetriesExhausted(reason, max_retries + 1)


class RunLog:
    """A run's log file (appended, never truncated: a resumed run adds to it) and, when `echo`,
    the same lines on stdout. log(msg, echo=None) writes one time-stamped line; log.write(line)
    one line to the file only."""

    def __init__(self, path: Path, echo: bool):
        self.path, self.echo = Path(path), echo
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.f = open(self.path, "a", encoding="utf-8")

    def __call__(self, msg: str, echo: bool | None = None):
        self.write(msg)
        if self.echo if echo is None else echo:
            print(msg, flush=True)

    def write(self, line: str):
        self.f.write(time.strftime("%Y-%m-%d %H:%M:%S ") + line + "\n")
        self.f.flush()

    def close(self):
        self.f.close()


def cast_floats(tree, dtype):
    """Every floating array of `tree` as `dtype` (integer and complex leaves as they are)."""
    def cast(a):
        a = jnp.asarray(a)
        return a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a
    return jax.tree.map(cast, tree)


@functools.lru_cache(maxsize=8)
def jit_mcmc_step(system: System, log_psi, n_steps: int, target_acceptance: float, adapt: bool = True,
                  hop_moves: int = 0):
    """`qernel.mcmc.make_mcmc_step(...)` jitted, cached per (system, log_psi, options) so that repeated
    runs in one process (depths of a sweep, tests) compile it once."""
    return jax.jit(make_mcmc_step(log_psi, system, n_steps, target_acceptance, adapt=adapt, hop_moves=hop_moves))


# -- what a model file says about its training ---------------------------------------------------------

def recorded_train_config(metadata: dict) -> dict:
    """The pretraining options recorded in a model file's metadata (`train_config`, else the
    sweep's `pretrain` inside a recorded `config`); {} when there are none."""
    if isinstance(metadata.get("train_config"), dict):
        return dict(metadata["train_config"])
    config = metadata.get("config")
    if isinstance(config, str):
        try:
            config = json.loads(config)
        except ValueError:
            config = None
    if isinstance(config, dict) and isinstance(config.get("pretrain"), dict):
        return dict(config["pretrain"])
    return {}


def recorded_dtype(metadata: dict | None, wf=None) -> str | None:
    """The dtype a model was trained in: the recorded pretraining's, else the model config's
    (`wf.config.dtype`), else None."""
    dt = recorded_train_config(metadata or {}).get("dtype")
    if dt in DTYPES:
        return dt
    dt = getattr(getattr(wf, "config", None), "dtype", None)
    return dt if dt in DTYPES else None
