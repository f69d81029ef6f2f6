"""The cost of conditioning (not a test): one shared model over D depths vs D independent models.

    JAX_PLATFORMS=cpu .venv/bin/python benchmarks/bench_conditioning.py --out benchmarks/results/conditioning_cpu

The demo system (6 spin-polarised holes in 3×3, ν = 2/3, λ = 10.62, φ = 45°), the `tiny`
network, D = 8 depths from 0 to 10 E_M. Both sides get the same work per depth:

- shared: one `run_training` over all D depths, batch D·b (b walkers per depth), `--steps` SR
  steps after `--pretrain-steps` orbital-pretraining steps;
- separate: D runs of `run_training` at one depth each (the model's reference orbitals and
  conditioning range at that depth, as the workflow builds a one-depth sweep), batch b, the same
  steps. Same walkers·steps per depth, same optimiser settings.

Accuracy per depth is the training energy per electron averaged over the last quarter of the
steps, with a reblocked error bar. The common target at depth d is the worse (higher) of the two
final energies plus twice its error bar: the accuracy both approaches reach. For each approach
and depth, the steps needed are the first step whose trailing mean over `--window` steps is at
or below the target. The cost of an approach at equal accuracy is then its seconds per step ×
the steps needed (shared: the depth that needs the most steps, all depths advance together;
separate: the sum over the D models), plus its setup time (compiling, orbital pretraining,
burn-in), measured with the compiled-function caches cleared before every run, as in D
separate jobs.

Writes `<out>.csv` (one row per depth) and `<out>_summary.json`; prints a summary to stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from qernel.lattice import Supercell
from qernel.model import make_wavefunction
from qernel.stats import reblock
from qernel.system import System
from qernel import train, vmc
from qernel.train import TrainConfig, run_training


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def final_energy(series: np.ndarray) -> tuple[float, float]:
    """Mean and reblocked error of the last quarter of a per-step energy series."""
    tail = series[-max(8, len(series) // 4):]
    res = reblock(tail, warn=False)
    return float(res.mean), float(res.stderr)


def steps_to_reach(series: np.ndarray, target: float, window: int) -> float:
    """First step (1-based) whose trailing mean over `window` steps is <= target (nan if never)."""
    if len(series) < window:
        return math.nan
    trailing = np.convolve(series, np.ones(window) / window, mode="valid")  # trailing[i] ends at step i + window
    hit = np.flatnonzero(trailing <= target)
    return float(hit[0] + window) if hit.size else math.nan


def timed_run(system, wf, depths, cfg, out_dir, seed):
    """run_training from a cold start (compiled-function caches cleared, as in a fresh job)."""
    jax.clear_caches()
    for cached in (train._jit_train_step, vmc.jit_mcmc_step, train._jit_pretrain):
        cached.cache_clear()
    t0 = time.perf_counter()
    res = run_training(system, wf, depths, cfg, out_dir, seed=seed, progress=False)
    total = time.perf_counter() - t0
    step_s = np.asarray(res.history["wall_time"], float)
    # the first step's wall time includes compiling the step: take the median step as its cost
    per_step = float(np.median(step_s[1:])) if len(step_s) > 1 else float(step_s.sum())
    setup = total - per_step * len(step_s)  # compile + pretraining + burn-in + I/O
    return res, total, per_step, setup


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--depths", type=int, default=8, help="D, depths from 0 to --max-depth")
    ap.add_argument("--max-depth", type=float, default=10.0)
    ap.add_argument("--walkers-per-depth", type=int, default=32)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--pretrain-steps", type=int, default=200)
    ap.add_argument("--window", type=int, default=25)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--out", default=None, help="prefix: writes <out>.csv and <out>_summary.json")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    depths = np.linspace(0.0, args.max_depth, args.depths)
    system = System(Supercell.diagonal(3, 3), n_up=6, n_down=0, coupling=10.62, phase=math.radians(45))
    b = args.walkers_per_depth
    common = dict(steps=args.steps, pretrain_steps=args.pretrain_steps, optimizer="sr", burn_in=100,
                  checkpoint_every=max(args.steps, 1), log_every=max(args.steps // 5, 1))
    say(f"devices: {jax.devices()}; depths {depths.round(3).tolist()}; {b} walkers per depth; "
        f"{args.pretrain_steps} pretraining + {args.steps} SR steps")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        wf = make_wavefunction(system, args.model, ((float(depths[0]), float(depths[-1])),))
        cfg = TrainConfig.from_dict({**common, "batch_size": b * len(depths)})
        shared, shared_total, shared_step, shared_setup = timed_run(system, wf, depths, cfg, tmp / "shared", 0)
        say(f"shared: {shared_total:.0f} s ({shared_step:.3f} s per step, {shared_setup:.0f} s setup)")
        separate = []
        cfg1 = TrainConfig.from_dict({**common, "batch_size": b})
        for i, v in enumerate(depths):
            wf1 = make_wavefunction(system, args.model, ((float(v), float(v)),))
            separate.append(timed_run(system, wf1, [v], cfg1, tmp / f"separate_{i}", 0))
            say(f"separate V = {v:.3f}: {separate[-1][1]:.0f} s ({separate[-1][2]:.3f} s per step, "
                f"{separate[-1][3]:.0f} s setup)")

    rows = []
    e_shared_all = np.asarray(shared.history["energy_per_depth"], float)  # (T, D) per electron
    for i, v in enumerate(depths):
        e_sh = e_shared_all[:, i]
        e_se = np.asarray(separate[i][0].history["energy_per_depth"], float)[:, 0]
        (m_sh, s_sh), (m_se, s_se) = final_energy(e_sh), final_energy(e_se)
        worse, err = (m_sh, s_sh) if m_sh >= m_se else (m_se, s_se)
        target = worse + 2.0 * err
        rows.append({"depth": float(v), "energy_shared": m_sh, "stderr_shared": s_sh, "energy_separate": m_se,
                     "stderr_separate": s_se, "shared_minus_separate": m_sh - m_se,
                     "difference_stderr": math.hypot(s_sh, s_se), "target": target,
                     "steps_shared": steps_to_reach(e_sh, target, args.window),
                     "steps_separate": steps_to_reach(e_se, target, args.window),
                     "variance_shared": float(np.mean(shared.history["variance_per_depth"][-len(e_sh) // 4:, i])),
                     "variance_separate": float(np.mean(separate[i][0].history["variance_per_depth"][-len(e_se) // 4:, 0]))})
        r = rows[-1]
        say(f"V = {v:6.3f}: shared {m_sh:.4f}({s_sh:.4f}) vs separate {m_se:.4f}({s_se:.4f}) E_M per electron; "
            f"target {target:.4f} reached after {r['steps_shared']:.0f} (shared) and {r['steps_separate']:.0f} "
            f"(separate) steps")

    steps_sh = np.asarray([r["steps_shared"] for r in rows])
    steps_se = np.asarray([r["steps_separate"] for r in rows])
    sep_step = np.asarray([s[2] for s in separate])
    sep_setup = np.asarray([s[3] for s in separate])
    summary = {
        "device": f"{jax.devices()[0].platform}: {jax.devices()[0].device_kind}",
        "depths": depths.tolist(), "walkers_per_depth": b, "steps": args.steps,
        "pretrain_steps": args.pretrain_steps, "window": args.window,
        "n_params_shared": int(sum(np.size(p) for p in jax.tree.leaves(shared.params))),
        "n_params_separate_total": int(sum(sum(np.size(p) for p in jax.tree.leaves(s[0].params)) for s in separate)),
        "seconds_per_step_shared": shared_step, "seconds_per_step_separate_each": sep_step.tolist(),
        "setup_seconds_shared": shared_setup, "setup_seconds_separate": sep_setup.tolist(),
        "wall_seconds_shared": shared_total, "wall_seconds_separate": float(sum(s[1] for s in separate)),
        "all_targets_reached": bool(np.all(np.isfinite(steps_sh)) and np.all(np.isfinite(steps_se))),
        "mean_shared_minus_separate": float(np.mean([r["shared_minus_separate"] for r in rows])),
    }
    if summary["all_targets_reached"]:
        cost_sh = shared_setup + shared_step * float(np.max(steps_sh))
        cost_se = float(np.sum(sep_setup + sep_step * steps_se))
        summary.update(cost_seconds_shared=cost_sh, cost_seconds_separate=cost_se,
                       cost_ratio_shared_over_separate=cost_sh / cost_se,
                       steps_needed_shared=float(np.max(steps_sh)), steps_needed_separate_sum=float(np.sum(steps_se)))
        say(f"equal accuracy: shared {cost_sh:.0f} s vs separate {cost_se:.0f} s "
            f"(ratio {cost_sh / cost_se:.2f}); steps {np.max(steps_sh):.0f} (shared, all depths at once) vs "
            f"{np.sum(steps_se):.0f} (sum over the {len(depths)} separate models)")
    else:
        say("some target was not reached within the steps run: no equal-accuracy cost (see the CSV)")
    say(f"parameters: shared {summary['n_params_shared']} vs separate {summary['n_params_separate_total']} in total")
    if args.out:
        import csv

        with open(f"{args.out}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        Path(f"{args.out}_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        say(f"wrote {args.out}.csv and {args.out}_summary.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
