"""A model-shaped exact wavefunction for the evaluation tests.

`SlaterModel` is the exact λ = 0 Slater determinant of `qernel.bands` with its plane-wave
tables as parameters, so that it can be saved as a model file and loaded by
`qernel.evaluate.evaluate_depth` like the transformer (init / log_psi / apply). A periodic
two-body Jastrow factor exp(a Σ_{i<j} f(r_ij)), a = 0 at initialisation, gives fine-tuning
something to move. `init` returns the determinant of the reference depth; `params_at(V)` that of
depth V (the λ = 0 ground state there: an exact eigenstate of the one-body Hamiltonian). The plane-wave
vectors and k-points are parameters under stop_gradient: fine-tuning never moves them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from qernel.bands import noninteracting_ground_state
from qernel.linalg import slogdet
from qernel.system import System


class SlaterModel:
    def __init__(self, system: System, reference_depth: float, cond_range=((0.0, 10.0),), shells: float = 8.0):
        self.system = system
        self.shells = float(shells)
        self._ground_states = {}
        self.reference_depth = float(reference_depth)
        self.cond_range = tuple(cond_range)
        sc = system.supercell
        b = sc.reciprocal_vectors(1.01 * np.max(np.linalg.norm(sc.reciprocal, axis=-1)))
        self._jastrow_k = b[np.isclose(np.linalg.norm(b, axis=-1), np.min(np.linalg.norm(b, axis=-1)))]

    def ground_state(self, depth: float):
        key = round(float(depth), 12)
        if key not in self._ground_states:
            self._ground_states[key] = noninteracting_ground_state(self.system, key, shells=self.shells)
        return self._ground_states[key]

    def params_at(self, depth: float) -> dict:
        gs = self.ground_state(depth)
        bands = gs.bands
        p = {"g": np.asarray(bands.gvectors), "jastrow": np.zeros(())}
        for name, occ in (("up", gs.occupied_up), ("down", gs.occupied_down)):
            if not occ:
                continue
            ik = np.array([o[0] for o in occ])
            ib = np.array([o[1] for o in occ])
            c = bands.coefficients[ik, :, ib].T / np.sqrt(bands.area)  # (P, n)
            p[f"k_{name}"] = np.asarray(bands.kpoints[ik])
            p[f"c_{name}_re"], p[f"c_{name}_im"] = c.real.copy(), c.imag.copy()
        return {"params": p}

    def init(self, key):  # noqa: ARG002 (deterministic)
        return self.params_at(self.reference_depth)

    def log_psi(self, params, x, cond):  # noqa: ARG002 (cond: the determinant's depth is in params)
        p = params["params"]
        out = jnp.zeros((), jnp.result_type(x.dtype, jnp.complex64))
        start = 0
        for name, n in (("up", self.system.n_up), ("down", self.system.n_down)):
            if n == 0:
                continue
            xs = x[start:start + n]
            start += n
            c = p[f"c_{name}_re"] + 1j * p[f"c_{name}_im"]
            k = jax.lax.stop_gradient(p[f"k_{name}"])  # lattice data, not trainable: ψ stays periodic
            g = jax.lax.stop_gradient(p["g"])
            mat = jnp.exp(1j * (xs @ k.T)) * (jnp.exp(1j * (xs @ g.T)) @ c)
            sign, logabs = slogdet(mat)
            out = out + logabs + 1j * jnp.angle(sign)
        n = self.system.n_electrons
        if n > 1:
            iu, ju = np.triu_indices(n, k=1)
            d = x[iu] - x[ju]
            f = jnp.mean(jnp.cos(d @ jnp.asarray(self._jastrow_k.T, x.dtype)), axis=-1)
            out = out + p["jastrow"] * jnp.sum(f)
        return out

    def apply(self, params, x, cond):
        lp = self.log_psi(params, x, cond)
        return jnp.imag(lp), jnp.real(lp), {}
