"""Paper-scale check (not a test): the `paper` preset trained on the demo system, and the training
step of every `paper_*` sweep compiled and timed at its configured walkers per device.

    python benchmarks/bench_paper.py --train-steps 200 --out benchmarks/results/paper_gpu
    python benchmarks/bench_paper.py --train-steps 0 --sweeps paper_6x6 --no-run   # compile only (CPU)

- train: `--train-steps` SPRING steps of the `paper` preset on the demo system (6 holes, 3×3,
  depths 0, 4.44, 10 E_M), float32, max_retries = 0 (a rejected step stops it): steps, rejected
  steps, energy per electron averaged over the first and the last 20 steps;
- sweeps: for each sweep, the step at batch_size / resources.pretrain.gpu walkers (one device's
  share) and the sweep's max_vmap_batch_size: compile seconds, XLA's compiled temporary memory
  (`memory_analysis()`), the largest buffers' estimate from qernel.memory, FLOPs
  (`cost_analysis()`), and (unless --no-run) the median seconds of `--steps` steps.

Rows go to `<out>_train.csv` and `<out>_sweeps.csv` (rewritten after every sweep) with the device
named; a summary to stderr.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from qernel import config as qconfig
from qernel import memory
from qernel.lattice import Supercell
from qernel.system import System
from qernel.train import TrainConfig


def say(msg):
    print(msg, file=sys.stderr, flush=True)


def device_name() -> str:
    d = jax.devices()[0]
    return f"{d.platform}: {d.device_kind}"


def train_demo(steps: int, batch: int, chunk: int) -> dict:
    from qernel.model import make_wavefunction
    from qernel.train import run_training

    system = System(Supercell.diagonal(3), n_up=6, n_down=0, coupling=10.62, phase=math.radians(45))
    depths = [0.0, 4.44, 10.0]
    wf = make_wavefunction(system, "paper", ((0.0, 10.0),))
    cfg = TrainConfig(steps=steps, batch_size=batch, pretrain_steps=200, burn_in=200, max_retries=0,
                      max_vmap_batch_size=chunk, checkpoint_every=10 * steps, log_every=max(1, steps // 10))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        try:
            r = run_training(system, wf, depths, cfg, d, seed=0, progress=False)
            h, error = r.history, ""
        except FloatingPointError as e:  # a rejected step (max_retries = 0)
            h, error = None, str(e)
    row = {"steps": steps, "batch": batch, "max_vmap_batch_size": chunk, "wall_s": time.perf_counter() - t0,
           "error": error}
    if h is not None:
        e = h["energy"]
        k = min(20, len(e))
        row.update(steps_done=len(e), rejected=int(np.sum(h["retries"])), energy_first=float(np.mean(e[:k])),
                   energy_last=float(np.mean(e[-k:])), median_step_s=float(np.median(h["wall_time"][1:])))
    return row


def sweep_step(sweep, steps: int, run: bool) -> dict:
    gpus = max(1, int(sweep.resources["pretrain"].get("gpu", 0) or 1))
    cfg = sweep.pretrain
    per_device = dataclasses.replace(cfg, batch_size=cfg.batch_size // gpus,
                                     max_vmap_batch_size=(cfg.max_vmap_batch_size // gpus
                                                          if cfg.max_vmap_batch_size else 0))
    t0 = time.perf_counter()
    compiled, n_params = memory.compiled_step(sweep.system, sweep.model, per_device, sweep.depths)
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    try:
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        flops = float(cost.get("flops", math.nan))
    except Exception:  # noqa: BLE001
        flops = math.nan
    est = memory.sweep_estimate(sweep)
    row = {"sweep": sweep.name, "n_electrons": sweep.system.n_electrons, "gpus": gpus,
           "walkers_per_device": per_device.batch_size, "max_vmap_batch_size_per_device": per_device.max_vmap_batch_size,
           "n_params": n_params, "compile_s": compile_s, "temp_gb": mem.temp_size_in_bytes / 1e9,
           "argument_gb": mem.argument_size_in_bytes / 1e9, "model_gb": est.peak_gb,
           "largest_model_term": max(est.terms, key=est.terms.get), "flops": flops, "model_flops": est.flops,
           "seconds_per_step": math.nan}
    if run:
        from qernel.mcmc import init_walkers
        from qernel.model import make_wavefunction
        from qernel.train import TrainState, make_optimizer
        import jax.numpy as jnp

        depths = np.asarray(sweep.depths, float)
        wf = make_wavefunction(sweep.system, sweep.model, sweep.cond_range)
        params = wf.init(jax.random.PRNGKey(0))
        w = per_device.batch_size
        group = np.arange(w) % len(depths)
        walkers = init_walkers(jax.random.PRNGKey(1), sweep.system, jnp.asarray(depths[group][:, None], jnp.float32),
                               group, len(depths), 0.1)
        x0 = jnp.zeros((sweep.system.n_electrons, 2))
        is_complex = bool(jnp.iscomplexobj(jax.eval_shape(wf.log_psi, params, x0, jnp.zeros(1))))
        opt = make_optimizer(per_device, wf.log_psi, len(depths), is_complex)
        state = TrainState(params, opt.init(params), walkers, jnp.zeros((), jnp.int32), jnp.zeros(len(depths)))
        poison = jnp.zeros(len(depths))
        times = []
        for i in range(steps + 1):
            t = time.perf_counter()
            state, stats = compiled(state, jax.random.PRNGKey(10 + i), poison)
            jax.block_until_ready(stats)
            times.append(time.perf_counter() - t)
        row["seconds_per_step"] = float(np.median(times[1:]))
        row["ok"] = bool(stats["ok"])
    return row


def write_csv(path, rows):
    if not rows:
        return
    for r in rows:
        r["device"] = device_name()
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        w.writeheader()
        w.writerows(rows)
    say(f"wrote {path}")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / qconfig.DEFAULT_CONFIG_PATH))
    ap.add_argument("--sweeps", nargs="*", default=["paper_6x6", "paper_9x9", "paper_12x12", "paper_15x15"])
    ap.add_argument("--train-steps", type=int, default=200, help="SPRING steps of the demo run (0: skip)")
    ap.add_argument("--train-batch", type=int, default=384)
    ap.add_argument("--train-chunk", type=int, default=0)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per sweep")
    ap.add_argument("--no-run", action="store_true", help="compile only (memory and FLOPs, no timing)")
    ap.add_argument("--out", default=None, help="CSV prefix")
    return ap


def main(argv=None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    say(f"devices: {jax.devices()}")
    if args.train_steps > 0:
        row = train_demo(args.train_steps, args.train_batch, args.train_chunk)
        say(f"train: {row}")
        if args.out:
            write_csv(f"{args.out}_train.csv", [row])
    sweeps = qconfig.load_config(args.config)
    rows = []
    for name in args.sweeps:
        row = sweep_step(sweeps[name], args.steps, not args.no_run)
        rows.append(row)
        say(f"{name}: N = {row['n_electrons']}, {row['walkers_per_device']} walkers/device, chunk "
            f"{row['max_vmap_batch_size_per_device']}: compiled temp {row['temp_gb']:.2f} GB (model {row['model_gb']:.2f}), "
            f"{row['seconds_per_step']:.3f} s/step, compile {row['compile_s']:.0f} s")
        if args.out:  # after every sweep, so a timeout keeps what was measured
            write_csv(f"{args.out}_sweeps.csv", rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
