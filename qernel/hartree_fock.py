"""Unrestricted Hartree–Fock in the supercell plane-wave basis (moiré units).

Orbitals are supercell-periodic: φ(r) = A^{-1/2} Σ_K c_K e^{iK·r}, K over the supercell
reciprocal lattice with |K| <= shells·|b|, so HF may break the moiré translation symmetry
(the generalised Wigner crystal). With one-body density matrices P^σ_{KK'} = Σ_occ c_K c*_K',
the energy of a Slater determinant under H (DESIGN.md §1) is

    E = Σ_σ Tr(h P^σ) + λ(N/2)ξ_M + (λ/2A) Σ_{q≠0} v_q |ρ_q|² − (λ/2A) Σ_σ Σ_{q≠0} v_q Σ_{KK'} P^σ_{KK'} P^σ_{K'+q,K+q}

with h_{KK'} = ½|K|² δ_{KK'} + Δ_{K−K'}, v_q = 2π/|q| (the Fourier transform of the Ewald
interaction per unit area, DESIGN.md §1), ρ_q = Σ_σ Σ_K P^σ_{K+q,K}. It is exact for a
determinant (the Ewald v_E has no q = 0 component; the Madelung term is the self-image).

The cost grows as M³ per iteration for M plane waves: fine for the CPU-size supercells
(3×3: M ≈ 330 at 3 shells); larger supercells fall back to the band orbitals.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.fft import next_fast_len

from qernel.bands import noninteracting_ground_state
from qernel.ewald import Ewald
from qernel.lattice import MOIRE_RECIPROCAL
from qernel.moire import moire_fourier_components
from qernel.system import System

DEFAULT_SHELLS = 3.0


@dataclasses.dataclass(frozen=True)
class Basis:
    """Supercell plane waves: vectors (M, 2) in 1/a_M, integer coordinates (M, 2) in the B basis."""

    vectors: np.ndarray
    integers: np.ndarray
    area: float

    @classmethod
    def build(cls, system: System, shells: float = DEFAULT_SHELLS) -> "Basis":
        sc = system.supercell
        cutoff = shells * np.linalg.norm(MOIRE_RECIPROCAL[0])
        vectors = sc.reciprocal_vectors(cutoff, include_origin=True)
        integers = np.rint(vectors @ sc.lattice.T / (2 * np.pi)).astype(int)
        return cls(vectors, integers, sc.area)

    @property
    def size(self) -> int:
        return len(self.vectors)


class _DiagonalGrid:
    """P_{ab} stored as Q[m_a, m_a − m_b] on the integer grid of the basis.

    With K = m·B (m integer), the exchange F_{ab} = Σ_q v_q P_{a+q,b+q} is, for each fixed
    difference d = m_a − m_b, a 2D convolution of v with Q[·, d] over m: one FFT
    convolution for all d at once, O(M² log M) instead of O(M³).
    """

    def __init__(self, basis: Basis):
        m = basis.integers
        self.u = m - m.min(axis=0)  # (M, 2) in [0, R)
        self.r = self.u.max(axis=0) + 1
        d = self.u[:, None, :] - self.u[None, :, :] + (self.r - 1)  # (M, M, 2) in [0, 2R-1)
        self.d0, self.d1 = d[..., 0], d[..., 1]
        self.shape = (self.r[0], self.r[1], 2 * self.r[0] - 1, 2 * self.r[1] - 1)
        q = np.stack(np.meshgrid(np.arange(-self.r[0] + 1, self.r[0]), np.arange(-self.r[1] + 1, self.r[1]), indexing="ij"), -1)
        self.q_integers = q  # (2R0-1, 2R1-1, 2): every difference of basis vectors

    def embed(self, p):
        q = np.zeros(self.shape, dtype=complex)
        q[self.u[:, 0, None], self.u[:, 1, None], self.d0, self.d1] = p
        return q

    def extract(self, f):
        return f[self.u[:, 0, None], self.u[:, 1, None], self.d0, self.d1]


@dataclasses.dataclass(frozen=True)
class HFResult:
    """A converged (or best) HF determinant; energies in E_M per supercell."""

    energy: float
    components: dict
    basis: Basis
    coefficients: tuple  # (up (M, n_up), down (M, n_down)) complex
    orbital_energies: tuple
    converged: bool
    iterations: int

    def density_matrices(self):
        return tuple(c @ c.conj().T for c in self.coefficients)


class HartreeFock:
    """The HF energy functional and Fock matrices for one system and depth."""

    def __init__(self, system: System, depth: float, shells: float = DEFAULT_SHELLS):
        self.system = system
        self.depth = float(depth)
        self.basis = Basis.build(system, shells)
        self.grid = _DiagonalGrid(self.basis)
        qn = np.linalg.norm(self.grid.q_integers @ system.supercell.reciprocal, axis=-1)
        #: v_q = 2π/|q| on the grid of differences (2R0−1, 2R1−1), 0 at q = 0.
        self.v_q = np.where(qn > 1e-12, 2 * np.pi / np.where(qn > 1e-12, qn, 1.0), 0.0)
        self.h = self._one_body()
        self.madelung_energy = 0.5 * system.n_electrons * system.coupling * Ewald(system.supercell).madelung

    def _one_body(self) -> np.ndarray:
        k = self.basis.vectors
        h = np.diag(0.5 * np.sum(k**2, axis=1)).astype(complex)
        qs, coeffs = moire_fourier_components(self.depth, self.system.phase)
        q_int = np.rint(qs @ self.system.supercell.lattice.T / (2 * np.pi)).astype(int)
        diff = self.basis.integers[:, None, :] - self.basis.integers[None, :, :]
        for q, c in zip(q_int, coeffs):
            h += c * np.all(diff == q, axis=-1)
        return h

    def _density_q(self, p_total):
        """ρ_q = Σ_K P_{K+q,K} on the grid of differences q; (2R0−1, 2R1−1)."""
        return self.grid.embed(p_total).sum(axis=(0, 1))

    def _exchange(self, p):
        """F^X_{ab} = −(λ/A) Σ_{q≠0} v_q P_{a+q,b+q}; (M, M)."""
        if self.system.coupling == 0 or not np.any(p):
            return np.zeros_like(p)
        r0, r1 = self.grid.r
        shape = (_fft_size(3 * r0 - 2), _fft_size(3 * r1 - 2))  # linear, not circular, convolution
        q = np.fft.fft2(self.grid.embed(p), s=shape, axes=(0, 1))
        conv = np.fft.ifft2(q * self._v_fft(shape)[:, :, None, None], axes=(0, 1))
        conv = conv[r0 - 1 : 2 * r0 - 1, r1 - 1 : 2 * r1 - 1]
        return -self.system.coupling / self.basis.area * self.grid.extract(conv)

    def _v_fft(self, shape):
        if getattr(self, "_v_fft_cache", (None,))[0] != shape:
            self._v_fft_cache = (shape, np.fft.fft2(self.v_q, s=shape))
        return self._v_fft_cache[1]

    def fock(self, p_up, p_down):
        """Fock matrices (F_up, F_down) and the energy components for density matrices P^σ."""
        lam, area = self.system.coupling, self.basis.area
        rho = self._density_q(p_up + p_down)
        hartree = lam / area * (self.v_q * rho)[self.grid.d0, self.grid.d1]
        x_up, x_down = self._exchange(p_up), self._exchange(p_down)
        kin = np.diag(self.h).real
        comps = {
            "kinetic": float(np.real(np.sum(kin * (np.diag(p_up) + np.diag(p_down))))),
            "potential": float(np.real(np.sum((self.h - np.diag(kin)) * (p_up + p_down).T))),
            "hartree": float(0.5 * lam / area * np.sum(self.v_q * np.abs(rho) ** 2)),
            "exchange": float(0.5 * np.real(np.sum(x_up * p_up.T) + np.sum(x_down * p_down.T))),
            "madelung": float(self.madelung_energy),
        }
        comps["interaction"] = comps["hartree"] + comps["exchange"] + comps["madelung"]
        comps["total"] = comps["kinetic"] + comps["potential"] + comps["interaction"]
        return self.h + hartree + x_up, self.h + hartree + x_down, comps

    def energy(self, coefficients) -> dict:
        """Energy components of the determinant with orbitals `coefficients` = (C_up, C_down)."""
        p = [c @ c.conj().T for c in coefficients]
        return self.fock(*p)[2]

    def initial_coefficients(self, rng: np.random.Generator | None, noise: float):
        """Non-interacting orbitals in this basis, optionally mixed with random noise."""
        gs = noninteracting_ground_state(self.system, self.depth)
        lookup = {tuple(m): i for i, m in enumerate(self.basis.integers)}
        sc = self.system.supercell
        coeffs = []
        for occ in (gs.occupied_up, gs.occupied_down):
            c = np.zeros((self.basis.size, len(occ)), dtype=complex)
            for j, (ik, ib) in enumerate(occ):
                vec = gs.bands.kpoints[ik] + gs.bands.gvectors
                ints = np.rint(vec @ sc.lattice.T / (2 * np.pi)).astype(int)
                for m, val in zip(ints, gs.bands.coefficients[ik, :, ib]):
                    if tuple(m) in lookup:
                        c[lookup[tuple(m)], j] = val
            if rng is not None and noise > 0 and c.shape[1]:
                c = c + noise * (rng.normal(size=c.shape) + 1j * rng.normal(size=c.shape)) / np.sqrt(self.basis.size)
            q, _ = np.linalg.qr(c)
            coeffs.append(q[:, : c.shape[1]])
        return tuple(coeffs)

    def solve(self, coefficients=None, max_iter: int = 200, tol: float = 1e-7, mixing: float = 0.5) -> HFResult:
        """Self-consistent field by damped density mixing, from `coefficients` (default non-interacting).

        Each iteration fills the lowest orbitals of the Fock matrix of the mixed density; the
        mixing halves whenever the energy of that determinant rises (charge sloshing at strong
        coupling). Returns the lowest-energy determinant met, which is a variational bound.
        """
        n = (self.system.n_up, self.system.n_down)
        c = self.initial_coefficients(None, 0.0) if coefficients is None else coefficients
        p_mix = [ci @ ci.conj().T for ci in c]
        best = (self.energy(c), c, (np.zeros(0), np.zeros(0)))
        previous, converged, it = best[0]["total"], False, 0
        for it in range(1, max_iter + 1):
            f_up, f_down, _ = self.fock(*p_mix)
            new_c, eps = [], []
            for f, ns in zip((f_up, f_down), n):
                w, v = np.linalg.eigh(f)
                new_c.append(v[:, :ns])
                eps.append(w[:ns])
            p_new = [ci @ ci.conj().T for ci in new_c]
            comps = self.fock(*p_new)[2]
            if comps["total"] < best[0]["total"]:
                best = (comps, tuple(new_c), tuple(eps))
            change = max(np.max(np.abs(a - b)) for a, b in zip(p_new, p_mix))
            if change < tol:
                converged = True
                break
            if comps["total"] > previous:
                mixing = max(mixing / 2, 0.02)
            previous = comps["total"]
            p_mix = [(1 - mixing) * a + mixing * b for a, b in zip(p_mix, p_new)]
        comps, c, eps = best
        return HFResult(comps["total"], comps, self.basis, tuple(c), tuple(eps), converged, it)


def _fft_size(n: int) -> int:
    return next_fast_len(n)


def hartree_fock(system: System, depth: float, shells: float = DEFAULT_SHELLS, n_starts: int = 4,
                 noise: float = 0.5, seed: int = 0, max_iter: int = 200, tol: float = 1e-7) -> HFResult:
    """Lowest-energy HF solution over the non-interacting start and `n_starts - 1` perturbed ones.

    Random starts let HF find symmetry-broken (crystal) solutions at large depth or coupling.
    """
    hf = HartreeFock(system, depth, shells)
    rng = np.random.default_rng(seed)
    best = None
    for start in range(max(1, n_starts)):
        init = hf.initial_coefficients(rng if start else None, noise)
        result = hf.solve(init, max_iter=max_iter, tol=tol)
        if best is None or result.energy < best.energy - 1e-10:
            best = result
    return best


def plane_wave_determinant_energy(system: System, occupied_k_up, occupied_k_down=()) -> dict:
    """Exact energy components of the determinant of plane waves e^{ik·r} (V = 0).

    kinetic Σ½|k|², interaction λ(N/2)ξ_M − (λ/2A) Σ_σ Σ_{i≠j} 2π/|k_i − k_j| (no Hartree term:
    the density is uniform); energies in E_M per supercell.
    """
    lam, area = system.coupling, system.supercell.area
    kin, exch = 0.0, 0.0
    for ks in (np.asarray(occupied_k_up, float).reshape(-1, 2), np.asarray(occupied_k_down, float).reshape(-1, 2)):
        kin += 0.5 * float(np.sum(ks**2))
        if len(ks) > 1:
            d = np.linalg.norm(ks[:, None] - ks[None], axis=-1)
            off = ~np.eye(len(ks), dtype=bool)
            exch -= 0.5 * lam / area * float(np.sum(2 * np.pi / d[off]))
    madelung = 0.5 * system.n_electrons * lam * Ewald(system.supercell).madelung
    return {"kinetic": kin, "potential": 0.0, "exchange": exch, "madelung": madelung,
            "interaction": exch + madelung, "total": kin + exch + madelung}


def orbital_values(result: HFResult, spin: int, r):
    """HF orbitals of spin 0 (up) or 1 (down) at positions r (..., 2); (..., n_occ) complex."""
    import jax.numpy as jnp

    xp = np if isinstance(r, np.ndarray) else jnp
    c = result.coefficients[spin] / np.sqrt(result.basis.area)
    return xp.exp(1j * (r @ xp.asarray(result.basis.vectors.T))) @ xp.asarray(c)
