"""How well the network's orbitals fit the exact λ = 0 orbitals at each depth (issue 17 diagnostic).

    python scripts/orbital_fit.py                       # tiny, prior at the middle depth only
    python scripts/orbital_fit.py --prior-anchors 5 --steps 300

The check_noninteracting system (6 polarised holes in 3×3, λ = 0, V = 0, 5, 10 E_M, condition
range 0–10): orbital pretraining exactly as `qernel.train` runs it (`qernel.pretrain`: Adam,
walkers sampling the exact determinant at their own depth, 48 per depth), printing the
least-squares orbital loss L = (A/N)⟨Σ‖M − T‖²⟩ per depth (dimensionless; 0 = the exact orbitals).
"""

import argparse
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from qernel.lattice import Supercell
from qernel.mcmc import init_walkers
from qernel.model import make_wavefunction
from qernel.pretrain import make_pretrain_step, make_targets, pretrain_loss_fn
from qernel.system import System


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prior-anchors", type=int, default=1)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--learning-rate", type=float, default=3e-3)
    ap.add_argument("--per-depth", type=int, default=48)
    args = ap.parse_args(argv)
    depths = np.array([0.0, 5.0, 10.0])
    system = System(Supercell.diagonal(3), n_up=6, n_down=0, coupling=0.0, phase=math.radians(45))
    wf = make_wavefunction(system, {"preset": "tiny", "prior_anchors": args.prior_anchors}, ((0.0, 10.0),))
    targets = make_targets(system, depths, reference_depth=wf.reference.depth)
    params = wf.init(jax.random.PRNGKey(5))
    group = np.arange(args.per_depth * 3) % 3
    walkers = init_walkers(jax.random.PRNGKey(1), system, jnp.asarray(depths[group][:, None], jnp.float32), group, 3, 0.1)
    tables = jax.tree.map(lambda a: jnp.asarray(a, jnp.complex64 if np.iscomplexobj(a) else jnp.float32), targets.tables)
    opt = optax.adam(args.learning_rate)
    step = jax.jit(make_pretrain_step(wf, system, opt, 10))
    opt_state = opt.init(params)
    loss = pretrain_loss_fn(wf.orbitals, system)
    per_walker = jax.jit(jax.vmap(lambda p, x, c: loss(p, tables, x[None], c[None]), in_axes=(None, 0, 0)))
    t0 = time.time()
    for i in range(args.steps):
        params, opt_state, walkers, _ = step(params, opt_state, walkers, jax.random.PRNGKey(1000 + i), tables)
        if (i + 1) % max(args.steps // 6, 1) == 0 or i + 1 == args.steps:
            per = np.asarray(per_walker(params, walkers.positions, walkers.cond))
            text = ", ".join(f"V={v:g}: {per[group == g].mean():.2e}" for g, v in enumerate(depths))
            print(f"step {i + 1}: orbital loss {text}  ({time.time() - t0:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
