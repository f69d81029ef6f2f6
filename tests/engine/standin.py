"""A small conditioned Slater–Jastrow wavefunction with the `qernel.model.Wavefunction` interface.

Used by the engine tests as a stand-in for the transformer model: small, fast to compile, and
able to represent the exact non-interacting ground state at any depth of a grid, so every test has
a known answer.

    ψ(x; V) = Π_σ det[φ^σ_j(r_i; V)] · exp(J(x; V))
    φ^σ_j(r; V) = e^{i k_j·r} Σ_G C^σ_{Gj}(v) e^{i G·r}   (|G| <= shells·|b|, moiré reciprocal vectors)
    J(x; V) = Σ_{i<j} [Σ_s a^{same/opp}_s(v) f_s(r_ij) + γ_ij u(r_ij)],  f_s(r) = mean_{G in star s} cos(G·r)
    u(r) = r (1 − r/r_c)³ for r < r_c (nearest-image distance, r_c half the cell's smaller height), γ = λ (opposite spins), λ/3 (same spin):
    the fixed 2D Coulomb cusp, so that local energies stay finite when two electrons meet
    C(v) = C0 + v C1 + v² C2, a(v) likewise, v = (V − V_mid)/V_half from cond_range

k_j is the k-point of the j-th occupied level of the non-interacting ground state at V_mid (a
Bloch envelope, as in the real model), so the exact ground state is representable at every depth
whose occupied k-points are those of V_mid.

Every basis function is supercell-periodic, the Jastrow is symmetric and periodic: ψ is
antisymmetric and periodic. Parameters are real (complex coefficients stored as pairs).
A dummy "router" parameter gives a load-balancing loss b² (and expert counts) so that the
engine's MoE plumbing is exercised.
"""

from __future__ import annotations

import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from qernel.bands import noninteracting_ground_state, plane_wave_basis
from qernel.linalg import slogdet
from qernel.system import System


def _stars(supercell, n_stars: int):
    """The first n_stars shells of supercell reciprocal vectors (excluding 0): list of (m, 2)."""
    b = np.linalg.norm(supercell.reciprocal, axis=-1).max()
    g = supercell.reciprocal_vectors(cutoff=(n_stars + 2) * b)
    norms = np.round(np.linalg.norm(g, axis=-1), 8)
    shells = sorted(set(norms))[:n_stars]
    return [g[norms == s] for s in shells]


class _Module(nn.Module):
    gvectors: tuple  # (n_G, 2) as nested tuples
    kpoints: tuple  # per spin: (N_s, 2) nested tuples
    stars: tuple  # tuple of (m, 2) nested tuples
    n_up: int
    n_down: int
    v_mid: float
    v_half: float
    init_scale: float
    coupling: float
    lattice: tuple  # supercell lattice vectors (rows)

    def setup(self):
        nb = len(self.gvectors)
        init = nn.initializers.normal(self.init_scale)
        self.coeff = [self.param(f"coeff_{s}", init, (3, nb, n, 2)) for s, n in enumerate((self.n_up, self.n_down))]
        self.jastrow = self.param("jastrow", nn.initializers.zeros, (3, len(self.stars), 2))
        self.router = self.param("router", nn.initializers.ones, ())

    def _poly(self, p, v):
        return p[0] + v * p[1] + v * v * p[2]

    def orbitals(self, x, cond):
        v = (cond[0] - self.v_mid) / self.v_half
        g = jnp.asarray(np.array(self.gvectors), x.dtype)
        out, start = [], 0
        for s, n in enumerate((self.n_up, self.n_down)):
            xs = x[start:start + n]
            start += n
            if n == 0:
                out.append(jnp.zeros((1, 0, 0), jnp.result_type(x.dtype, jnp.complex64)))
                continue
            c = self._poly(self.coeff[s], v)
            c = jax.lax.complex(c[..., 0], c[..., 1])  # (n_G, n)
            k = jnp.asarray(np.array(self.kpoints[s]), x.dtype)  # (n, 2)
            out.append((jnp.exp(1j * (xs @ k.T)) * (jnp.exp(1j * (xs @ g.T)) @ c))[None])  # (1, n, n)
        return out

    def jastrow_factor(self, x, cond):
        v = (cond[0] - self.v_mid) / self.v_half
        a = self._poly(self.jastrow, v)  # (n_stars, 2)
        n = self.n_up + self.n_down
        iu, ju = np.triu_indices(n, k=1)
        same = jnp.asarray((iu < self.n_up) == (ju < self.n_up))
        d = x[iu] - x[ju]  # (P, 2)
        total = jnp.zeros((), x.dtype)
        if self.coupling > 0:
            lat = np.array(self.lattice)
            f = d @ jnp.asarray(np.linalg.inv(lat), x.dtype)
            dmin = (f - jnp.round(f)) @ jnp.asarray(lat, x.dtype)  # minimum image (reduced cell)
            # half the smaller height of the cell: inside it the rounded image is the nearest one, and
            # u vanishes before the rounding switches images, so J stays smooth and periodic
            r_c = 0.5 * abs(np.linalg.det(lat)) / float(np.max(np.linalg.norm(lat, axis=1)))
            r = jnp.sqrt(jnp.sum(dmin**2, axis=-1) + 1e-30)
            u = jnp.where(r < r_c, r * (1.0 - r / r_c) ** 3, 0.0)
            gamma = jnp.where(same, self.coupling / 3.0, self.coupling)
            total = total + jnp.sum(gamma * u)
        for s, star in enumerate(self.stars):
            f = jnp.mean(jnp.cos(d @ jnp.asarray(np.array(star), x.dtype).T), axis=-1)  # (P,)
            total = total + jnp.sum(f * jnp.where(same, a[s, 0], a[s, 1]))
        return total

    def __call__(self, x, cond):
        log_psi = self.jastrow_factor(x, cond).astype(jnp.result_type(x.dtype, jnp.complex64))
        for m in self.orbitals(x, cond):
            if m.shape[-1] == 0:
                continue
            sign, logabs = slogdet(m[0])  # plain jnp: no LAPACK custom calls (see qernel.linalg)
            log_psi = log_psi + logabs + 1j * jnp.angle(sign)
        moe_loss = self.router**2
        counts = jnp.stack([jnp.asarray([x.shape[0] / 2, x.shape[0] / 2], x.dtype)])
        return log_psi, {"moe_loss": moe_loss, "expert_counts": counts}


class StandInWavefunction:
    """init(key), log_psi(params, x, cond), apply(params, x, cond) -> (phase, logabs, aux),
    orbitals(params, x, cond) -> [(1, N_up, N_up), (1, N_dn, N_dn)], like `qernel.model`."""

    def __init__(self, system: System, cond_range=((0.0, 1.0),), shells: float = 2.0, n_stars: int = 2,
                 init_scale: float = 0.3):
        sc = system.supercell
        g = plane_wave_basis(shells)
        lo, hi = cond_range[0]
        gs = noninteracting_ground_state(system, 0.5 * (lo + hi))
        kpts = tuple(tuple(tuple(float(c) for c in sc.kpoints[ik]) for ik, _ in occ)
                     for occ in (gs.occupied_up, gs.occupied_down))
        self.system = system
        #: like qernel.model's Wavefunction.reference: pretraining aligns its targets to this depth
        self.reference = types.SimpleNamespace(depth=0.5 * (lo + hi), ground_state=gs)
        self.module = _Module(
            gvectors=tuple(map(tuple, g)), kpoints=kpts,
            stars=tuple(tuple(map(tuple, s)) for s in _stars(sc, n_stars)),
            n_up=system.n_up, n_down=system.n_down,
            v_mid=0.5 * (lo + hi), v_half=max(0.5 * (hi - lo), 1e-3), init_scale=init_scale,
            coupling=float(system.coupling), lattice=tuple(map(tuple, sc.lattice)),
        )

    def init(self, key):
        x = jnp.zeros((self.system.n_electrons, 2))
        return self.module.init(key, x, jnp.zeros(1))

    def log_psi(self, params, x, cond):
        return self.module.apply(params, x, cond)[0]

    def apply(self, params, x, cond):
        log_psi, aux = self.module.apply(params, x, cond)
        return log_psi.imag, log_psi.real, aux

    def orbitals(self, params, x, cond):
        return self.module.apply(params, x, cond, method=_Module.orbitals)

    def n_params(self, params) -> int:
        return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
