"""Unrestricted Hartree–Fock in the supercell plane-wave basis (moiré units).

Orbitals are supercell-periodic: φ(r) = A^{-1/2} Σ_K c_K e^{iK·r}, K over the supercell
reciprocal lattice with |K| <= shells·|b|, so HF may break the moiré translation symmetry
(the generalised Wigner crystal). With one-body density matrices P^σ_{KK'} = Σ_occ c_K c*_K',
the energy of a Slater determinant under H (DESIGN.md §1) is

    E = Σ_σ Tr(h P^σ) + λ(N/2)ξ_M + (λ/2A) Σ_{q≠0} v_q |ρ_q|² − (λ/2A) Σ_σ Σ_{q≠0} v_q Σ_{KK'} P^σ_{KK'} P^σ_{K'+q,K+q}

with h_{KK'} = ½|K|² δ_{KK'} + Δ_{K−K'}, v_q = 2π/|q| (the Fourier transform of the Ewald
interaction per unit area, DESIGN.md §1), ρ_q = Σ_σ Σ_K P^σ_{K+q,K} (= ⟨Σ_i e^{−iq·r_i}⟩, the
convention of `qernel.observables.rho_k`). It is exact for a determinant (the Ewald v_E has no
q = 0 component; the Madelung term is the self-image). Written E = Σ_σ Tr(h P^σ) +
½ Σ_σ Tr(G^σ[P] P^σ) + λ(N/2)ξ_M with G linear in P (Hartree + exchange), F^σ = h + G^σ.

SCF: the optimal damping algorithm (ODA; E. Cancès and C. Le Bris, Int. J. Quantum Chem. 79,
82 (2000)): each iteration fills the lowest orbitals of the Fock matrix of the current
(mixed) density P̃ (aufbau) and moves P̃ toward that projector by the step that minimises the
(quadratic) energy along the line, so the energy of P̃ never rises; at convergence P̃ is the
projector of a self-consistent determinant. The G of the new projector is the only two-body
evaluation per iteration (G is linear, so G[P̃] follows by the same mixing).

Starts (`hartree_fock`): the non-interacting (band) orbitals, randomly perturbed ones, and
crystal-seeded ones (orbitals localised on a √3×√3 triangular or honeycomb subset of the
moiré potential minima: the generalised Wigner crystals at ν = 1/3 and 2/3); the lowest
converged energy is kept.

Observables of a determinant (exact, by Wick's theorem, `determinant_observables`): ⟨ρ_k⟩,
⟨|ρ_k|²⟩ = N + |⟨ρ_k⟩|² − Σ_σ Tr(a_k P^σ a_k† P^σ) with (a_k)_{KK'} = δ_{K,K'−k}, the structure
factor in the conventions of `qernel.observables` (S(k) = ⟨|ρ_k|²⟩/N − |⟨ρ_k⟩|²/N and the
uncorrected ⟨|ρ_k|²⟩/N), the density folded onto the moiré cell, and the total crystal momentum
from ⟨Φ|T_a|Φ⟩ = Π_σ det(C_σ† T_a C_σ) (|·| = 1 iff the determinant is invariant under the
moiré translation a).

The cost grows as M² log M (two-body) plus M³ (diagonalisation) per iteration for M plane
waves: fine for the CPU-size supercells (3×3: M = 127 at 2 shells, 301 at 3 shells).

Each solve runs its linear algebra on one BLAS thread (`threadpoolctl`). Matrices of a few
hundred plane waves gain nothing from BLAS's threads, and where solves run side by side (the
reference's worker processes, `qernel.reference`; jobs that Snakemake runs at once) the threads
oversubscribe the cores: on a 2-core CPU two solves side by side take 1.2× as long with the
default threads, one alone the same (`benchmarks/bench_hartree_fock.py`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.fft
import scipy.optimize
from threadpoolctl import threadpool_limits

from qernel.bands import noninteracting_ground_state
from qernel.ewald import Ewald
from qernel.lattice import MOIRE_LATTICE, MOIRE_RECIPROCAL
from qernel.moire import moire_fourier_components, moire_potential
from qernel.system import System

DEFAULT_SHELLS = 3.0
#: Width (a_M) of the Gaussian orbitals of the crystal-seeded starts.
SEED_WIDTH = 0.2


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

    def index_of(self, integers) -> np.ndarray:
        """Row of each integer vector (..., 2) in the basis, −1 where it is outside; (...,) int."""
        m = np.asarray(integers, int)
        lo = self.integers.min(axis=0)
        span = self.integers.max(axis=0) - lo + 1
        table = np.full(tuple(span), -1, dtype=int)
        table[tuple((self.integers - lo).T)] = np.arange(self.size)
        u = m - lo
        inside = np.all((u >= 0) & (u < span), axis=-1)
        out = np.full(m.shape[:-1], -1, dtype=int)
        out[inside] = table[tuple(u[inside].T)]
        return out


def band_orbitals_in_basis(system: System, basis: Basis, depth: float):
    """The occupied non-interacting orbitals at `depth` (E_M) in the supercell plane-wave `basis`,
    per spin: (M, n_σ) each, columns in the order of `noninteracting_ground_state(...).occupied_*`;
    plane waves outside the basis are dropped (so columns are normalised up to that truncation)."""
    gs = noninteracting_ground_state(system, depth)
    sc = system.supercell
    out = []
    for occ in (gs.occupied_up, gs.occupied_down):
        c = np.zeros((basis.size, len(occ)), dtype=complex)
        for j, (ik, ib) in enumerate(occ):
            vec = gs.bands.kpoints[ik] + gs.bands.gvectors
            rows = basis.index_of(np.rint(vec @ sc.lattice.T / (2 * np.pi)).astype(int))
            inside = rows >= 0
            c[rows[inside], j] = gs.bands.coefficients[ik, :, ib][inside]
        out.append(c)
    return tuple(out)


class _DiagonalGrid:
    """P_{ab} stored as Q[d, u_a] with d = u_a − u_b (the differences that occur, compressed)
    and u_a = m_a − min on the integer grid of the basis.

    With K = m·B (m integer), the exchange F_{ab} = Σ_q v_q P_{a+q,b+q} is, for each fixed
    difference d, a 2D correlation of v with Q[d, ·] over u: one FFT convolution for all d at
    once, O(M² log M) instead of O(M³). The convolution is circular of length L >= 2R − 1 per
    axis (R: the extent of u), which reproduces the linear one on the window that is kept.
    """

    def __init__(self, basis: Basis):
        m = basis.integers
        self.u = m - m.min(axis=0)  # (M, 2) in [0, R)
        self.r = self.u.max(axis=0) + 1
        d = self.u[:, None, :] - self.u[None, :, :] + (self.r - 1)  # (M, M, 2) in [0, 2R-1)
        flat = d[..., 0] * (2 * self.r[1] - 1) + d[..., 1]
        uniq, self.d_index = np.unique(flat, return_inverse=True)
        self.d_index = self.d_index.reshape(flat.shape)  # (M, M) → row of Q
        self.d0, self.d1 = d[..., 0], d[..., 1]
        self.n_d = len(uniq)
        self.fft_shape = tuple(int(scipy.fft.next_fast_len(int(2 * r - 1))) for r in self.r)
        self.ua = np.broadcast_to(self.u[:, None, :], d.shape)  # u_a for every (a, b)
        q = np.stack(np.meshgrid(np.arange(-self.r[0] + 1, self.r[0]), np.arange(-self.r[1] + 1, self.r[1]),
                                 indexing="ij"), -1)
        self.q_integers = q  # (2R0-1, 2R1-1, 2): every difference of basis vectors

    def embed(self, p):
        q = np.zeros((self.n_d,) + tuple(self.fft_shape), dtype=complex)
        q[self.d_index, self.ua[..., 0], self.ua[..., 1]] = p
        return q

    def extract(self, f):
        return f[self.d_index, self.ua[..., 0], self.ua[..., 1]]


@dataclasses.dataclass(frozen=True)
class HFResult:
    """A converged (or best) HF determinant; energies in E_M per supercell.

    energy_history: the energy of the SCF's mixed density P̃ per ODA iteration (non-increasing by
    construction); determinant_history: the energy of each ODA iteration's aufbau determinant;
    descent_history: the determinant energy per step of the direct minimisation (non-increasing;
    empty when ODA converged); gradient_history: the orbital gradient max |(1 − P)FC| per step.
    label: which start produced it; attempts: (label, energy, converged, iterations) of every
    start of `hartree_fock` (empty for a single `solve`).
    """

    energy: float
    components: dict
    basis: Basis
    coefficients: tuple  # (up (M, n_up), down (M, n_down)) complex
    orbital_energies: tuple
    converged: bool
    iterations: int
    energy_history: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    determinant_history: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    label: str = ""
    attempts: tuple = ()
    gradient_history: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    descent_history: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))

    def density_matrices(self):
        return tuple(c @ c.conj().T for c in self.coefficients)


class HartreeFock:
    """The HF energy functional and Fock matrices for one system and depth.

    system: the `System` (supercell, n_up, n_down, λ, φ); depth: V in E_M; shells: plane-wave
    cutoff |K| <= shells·|b|. Matrices are (M, M) complex over `basis`; energies in E_M per
    supercell.
    """

    def __init__(self, system: System, depth: float, shells: float = DEFAULT_SHELLS):
        self.system = system
        self.depth = float(depth)
        self.shells = float(shells)
        self.basis = Basis.build(system, shells)
        self.grid = _DiagonalGrid(self.basis)
        g = self.grid
        flat_q = g.q_integers.reshape(-1, 2)
        qn = np.linalg.norm(flat_q @ system.supercell.reciprocal, axis=-1)
        v = np.where(qn > 1e-12, 2 * np.pi / np.where(qn > 1e-12, qn, 1.0), 0.0)
        #: v_q = 2π/|q| on the grid of differences (2R0−1, 2R1−1), 0 at q = 0.
        self.v_q = v.reshape(g.q_integers.shape[:2])
        w = np.zeros(g.fft_shape)
        w[flat_q[:, 0] % g.fft_shape[0], flat_q[:, 1] % g.fft_shape[1]] = v
        self._v_fft = scipy.fft.fft2(w)
        #: v_q at each occurring difference d (the rows of the compressed grid).
        d_first = np.zeros(g.n_d, dtype=int)
        d_first[g.d_index.ravel()] = np.arange(g.d_index.size)
        a, b = np.unravel_index(d_first, g.d_index.shape)
        self._v_d = self.v_q[g.d0[a, b], g.d1[a, b]]
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

    def _exchange(self, p):
        """F^X_{ab} = −(λ/A) Σ_{q≠0} v_q P_{a+q,b+q}; (M, M)."""
        if self.system.coupling == 0 or not np.any(p):
            return np.zeros_like(p)
        q = scipy.fft.fft2(self.grid.embed(p), axes=(-2, -1), overwrite_x=True)
        q *= self._v_fft
        conv = scipy.fft.ifft2(q, axes=(-2, -1), overwrite_x=True)
        return -self.system.coupling / self.basis.area * self.grid.extract(conv)

    def two_body(self, p_up, p_down):
        """(G^up, G^down): Hartree + exchange matrices, linear in the density matrices P^σ."""
        lam, area = self.system.coupling, self.basis.area
        rho = np.bincount(self.grid.d_index.ravel(), weights=np.ravel(p_up + p_down).real, minlength=self.grid.n_d) \
            + 1j * np.bincount(self.grid.d_index.ravel(), weights=np.ravel(p_up + p_down).imag, minlength=self.grid.n_d)
        hartree = lam / area * (self._v_d * rho)[self.grid.d_index]
        return hartree + self._exchange(p_up), hartree + self._exchange(p_down)

    def components(self, p_up, p_down, g=None) -> dict:
        """Energy components (E_M per supercell) of density matrices P^σ (G from `two_body`)."""
        g_up, g_down = self.two_body(p_up, p_down) if g is None else g
        kin = np.diag(self.h).real
        x_up, x_down = self._exchange(p_up), self._exchange(p_down)
        total_two = 0.5 * np.real(np.sum(g_up * p_up.T) + np.sum(g_down * p_down.T))
        exchange = 0.5 * np.real(np.sum(x_up * p_up.T) + np.sum(x_down * p_down.T))
        comps = {
            "kinetic": float(np.real(np.sum(kin * (np.diag(p_up) + np.diag(p_down))))),
            "potential": float(np.real(np.sum((self.h - np.diag(kin)) * (p_up + p_down).T))),
            "hartree": float(total_two - exchange),
            "exchange": float(exchange),
            "madelung": float(self.madelung_energy),
        }
        comps["interaction"] = comps["hartree"] + comps["exchange"] + comps["madelung"]
        comps["total"] = comps["kinetic"] + comps["potential"] + comps["interaction"]
        return comps

    def _total(self, p, g) -> float:
        return float(sum(np.real(np.sum(self.h * pp.T)) + 0.5 * np.real(np.sum(gg * pp.T)) for pp, gg in zip(p, g))
                     + self.madelung_energy)

    def fock(self, p_up, p_down):
        """Fock matrices (F_up, F_down) and the energy components for density matrices P^σ."""
        g = self.two_body(p_up, p_down)
        return self.h + g[0], self.h + g[1], self.components(p_up, p_down, g)

    def energy(self, coefficients) -> dict:
        """Energy components of the determinant with orbitals `coefficients` = (C_up, C_down)."""
        p = [c @ c.conj().T for c in coefficients]
        return self.components(*p)

    def initial_coefficients(self, rng: np.random.Generator | None, noise: float):
        """Non-interacting orbitals in this basis, optionally mixed with random noise."""
        coeffs = []
        for c in band_orbitals_in_basis(self.system, self.basis, self.depth):
            if rng is not None and noise > 0 and c.shape[1]:
                c = c + noise * (rng.normal(size=c.shape) + 1j * rng.normal(size=c.shape)) / np.sqrt(self.basis.size)
            q, _ = np.linalg.qr(c)
            coeffs.append(q[:, : c.shape[1]])
        return tuple(coeffs)

    def localized_coefficients(self, centres_up, centres_down, width: float = SEED_WIDTH):
        """Orthonormalised (Löwdin) periodic Gaussians of width `width` (a_M) at the centres
        (n_σ, 2) in a_M: c_K ∝ exp(−|K|²w²/2 − iK·R). A crystal-seeded start."""
        k = self.basis.vectors
        out = []
        for centres in (centres_up, centres_down):
            centres = np.asarray(centres, float).reshape(-1, 2)
            # a centre that repeats gets a plane-wave factor e^{iq·r} (q from the first shell of the
            # moiré reciprocal lattice) per repeat, so that the orbitals stay independent
            _, first, counts = np.unique(np.round(centres, 8), axis=0, return_inverse=True, return_counts=True)
            first = first.ravel()
            repeat = np.array([np.count_nonzero(first[:j] == first[j]) for j in range(len(centres))], dtype=int)
            shell = np.concatenate([np.zeros((1, 2)), MOIRE_RECIPROCAL, -MOIRE_RECIPROCAL,
                                    (MOIRE_RECIPROCAL[0] - MOIRE_RECIPROCAL[1])[None]])
            q = shell[repeat % len(shell)]  # (n, 2)
            kq = k[:, None, :] - q[None]  # (M, n, 2)
            c = np.exp(-0.5 * width**2 * np.sum(kq**2, axis=-1)) * np.exp(-1j * k @ centres.T)
            if c.shape[1]:
                s = c.conj().T @ c
                w, v = np.linalg.eigh(s)
                c = c @ (v @ np.diag(w**-0.5) @ v.conj().T)
            out.append(c)
        return tuple(out)

    def solve(self, coefficients=None, max_iter: int = 300, tol: float = 1e-7, gtol: float = 1e-4,
              max_descent: int | None = None) -> HFResult:
        """Self-consistent field from `coefficients` (default: the non-interacting orbitals).

        1. The optimal damping algorithm: each iteration diagonalises F[P̃], fills the lowest
           n_σ orbitals (P_new) and sets P̃ ← P̃ + α(P_new − P̃) with the α in [0, 1] that
           minimises the quadratic E(P̃ + αΔ) = E(P̃) + α s + α² c, s = Σ_σ Tr(F^σ Δ^σ) <= 0,
           c = ½ Σ_σ Tr(G^σ[Δ] Δ^σ). Done when max |P_new − P̃| < tol.
        2. If that does not converge within max_iter (near-degenerate levels at the Fermi energy,
           where the aufbau determinant oscillates and P̃ stays fractional): direct minimisation
           of the determinant energy from the lowest determinant met, by projected steepest
           descent on the Grassmann manifold, C ← qr(C − t(1 − P)K(1 − P)FC) with the kinetic
           preconditioner K = diag(1/(1 + ½|K|²/τ)), Barzilai–Borwein steps and an Armijo
           backtracking safeguard (monotone), at most max_descent (default max_iter) steps.
        Converged: step 1 converged, or the orbital gradient max |(1 − P)F C| < gtol in step 2.
        Returns the lowest-energy determinant met (a variational bound) with the histories
        (`energy_history`: E(P̃) in step 1; `descent_history`: the determinant energy in step 2).
        """
        n = (self.system.n_up, self.system.n_down)
        c = self.initial_coefficients(None, 0.0) if coefficients is None else coefficients
        p = [ci @ ci.conj().T for ci in c]
        g = self.two_body(*p)
        e_mix = self._total(p, g)
        best = (e_mix, tuple(c), (np.zeros(0), np.zeros(0)))
        history, det_history, grad_history, converged, it = [e_mix], [e_mix], [], False, 0
        descent_history = []
        for it in range(1, max_iter + 1):
            new_c, eps = [], []
            for gg, ns in zip(g, n):
                w, v = np.linalg.eigh(self.h + gg)
                new_c.append(v[:, :ns])
                eps.append(w[:ns])
            p_new = [ci @ ci.conj().T for ci in new_c]
            g_new = self.two_body(*p_new)
            e_new = self._total(p_new, g_new)
            det_history.append(e_new)
            grad_history.append(self._gradient_norm(new_c, p_new, g_new))
            if e_new < best[0]:
                best = (e_new, tuple(new_c), tuple(eps))
            delta = [a - b for a, b in zip(p_new, p)]
            change = max(float(np.max(np.abs(d))) if d.size else 0.0 for d in delta)
            if change < tol:
                converged = True
                history.append(e_new)
                break
            s = sum(np.real(np.sum((self.h + gg) * d.T)) for gg, d in zip(g, delta))
            curv = 0.5 * sum(np.real(np.sum((gn - gg) * d.T)) for gn, gg, d in zip(g_new, g, delta))
            alpha = 1.0 if curv <= 0 or -s >= 2 * curv else max(0.0, -s / (2 * curv))
            p = [a + alpha * d for a, d in zip(p, delta)]
            g = tuple(gg + alpha * (gn - gg) for gg, gn in zip(g, g_new))
            e_mix = self._total(p, g)  # = E(P̃) + α s + α² c, recomputed against drift
            history.append(e_mix)
        if not converged:
            e, c, steps, converged, d_hist, d_grad = self._descend(best[1], max_descent or max_iter, gtol)
            it += steps
            descent_history = d_hist
            grad_history += d_grad
            if e < best[0]:
                best = (e, c, tuple(np.linalg.eigvalsh(ci.conj().T @ (self.h + gg) @ ci) if ci.size else np.zeros(0)
                                    for ci, gg in zip(c, self.two_body(*[x @ x.conj().T for x in c]))))
        e, c, eps = best
        return HFResult(e, self.energy(c), self.basis, tuple(c), tuple(eps), converged, it,
                        np.array(history), np.array(det_history), gradient_history=np.array(grad_history),
                        descent_history=np.array(descent_history))

    def _gradient_norm(self, c, p, g) -> float:
        """max |(1 − P^σ) F^σ C^σ| over spins: the orbital gradient of the determinant energy."""
        out = 0.0
        for ci, pi, gi in zip(c, p, g):
            if ci.size:
                fc = (self.h + gi) @ ci
                out = max(out, float(np.max(np.abs(fc - pi @ fc))))
        return out

    def _descend(self, c, max_steps: int, gtol: float):
        """Projected steepest descent with Barzilai–Borwein steps and Armijo backtracking.
        Returns (energy, coefficients, steps, converged, energy history, gradient history)."""
        def evaluate(cc):
            pp = [x @ x.conj().T for x in cc]
            gg = self.two_body(*pp)
            grads = [((self.h + gi) @ x - pi @ ((self.h + gi) @ x)) for x, pi, gi in zip(cc, pp, gg)]
            return self._total(pp, gg), grads

        def retract(cc, step):
            return tuple(np.linalg.qr(x - step_i)[0] if x.size else x for x, step_i in zip(cc, step))

        e, grads = evaluate(c)
        # kinetic preconditioner (Teter–Payne–Allan-like): high plane waves move less
        kin = 0.5 * np.sum(self.basis.vectors**2, axis=1)
        scale = max(1.0, float(np.mean([np.real(np.sum(kin[:, None] * np.abs(x) ** 2)) / max(1, x.shape[1])
                                         for x in c if x.size] or [1.0])))
        precond = (1.0 / (1.0 + kin / scale))[:, None]

        def direction(cc, gg):
            out = []
            for x, gr in zip(cc, gg):
                d = precond * gr
                out.append(d - x @ (x.conj().T @ d))  # back onto the tangent space
            return out

        t, e_hist, g_hist, converged, k = 0.05, [], [], False, 0
        prev = None
        for k in range(1, max_steps + 1):
            gnorm = max((float(np.max(np.abs(gr))) for gr in grads if gr.size), default=0.0)
            if gnorm < gtol:
                converged, k = True, k - 1
                break
            if prev is not None:  # Barzilai–Borwein step from the last move (ignoring transport)
                dx = sum(np.vdot(a, a).real for a in prev[0])
                dxg = sum(np.vdot(a, b - b0).real for a, b, b0 in zip(prev[0], prev[1], prev[2]))
                if dxg > 0:
                    t = min(max(dx / dxg, 1e-4), 100.0)
            dirs = direction(c, grads)
            g2 = sum(np.vdot(gr, d).real for gr, d in zip(grads, dirs))
            while True:
                c_new = retract(c, [t * d for d in dirs])
                e_new, grads_new = evaluate(c_new)
                if e_new <= e - 1e-4 * t * g2:
                    break
                t *= 0.5
                if t < 1e-10:
                    return e, tuple(c), k, False, e_hist, g_hist
            prev = ([a - b for a, b in zip(c_new, c)], direction(c_new, grads_new), dirs)
            c, e, grads = c_new, e_new, grads_new
            e_hist.append(e)
            g_hist.append(gnorm)
        return e, tuple(c), k, converged, e_hist, g_hist

# -- crystal seeds ----------------------------------------------------------------------------
def potential_minimum(phase: float) -> np.ndarray:
    """Position (2,) in a_M of the minimum of the moiré potential shape −Σ_j cos(g_j·r + φ) in
    the moiré unit cell (grid search refined by Nelder–Mead; one minimum per cell for φ ≠ 0
    mod 60°, the lowest of the degenerate ones otherwise)."""
    f = (np.arange(60) + 0.5) / 60
    frac = np.stack(np.meshgrid(f, f, indexing="ij"), -1).reshape(-1, 2)
    r = frac @ MOIRE_LATTICE
    start = r[int(np.argmin(moire_potential(r, 1.0, phase)))]
    res = scipy.optimize.minimize(lambda x: float(moire_potential(np.asarray(x), 1.0, phase)), start,
                                  method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-12})
    return np.asarray(res.x)


def crystal_site_patterns(system: System) -> dict[str, np.ndarray]:
    """Ordered site lists (n_cells, 2) in a_M of the moiré potential minima of the supercell,
    named by the generalised Wigner crystal that their first sites form.

    With the √3×√3 order commensurate (the moiré K point is a supercell reciprocal vector):
    "triangular" (one √3×√3 sublattice first: ν = 1/3) and "honeycomb" (two sublattices first:
    ν = 2/3); always "sites" (every minimum: ν = 1). A seeded start puts the up electrons on the
    first n_up sites and the down ones on the next n_down (cyclically).
    """
    sc = system.supercell
    sites = sc.moire_translations + potential_minimum(system.phase)
    sites = sc.wrap(sites)
    out = {"sites": sites}
    k_point = (MOIRE_RECIPROCAL[0] + 2 * MOIRE_RECIPROCAL[1]) / 3  # a Brillouin-zone corner, |K| = 4π/3
    m = k_point @ sc.lattice.T / (2 * np.pi)
    if np.allclose(m, np.rint(m), atol=1e-8):
        sub = np.rint(3 * (sc.moire_translations @ k_point) / (2 * np.pi)).astype(int) % 3
        out["triangular"] = np.concatenate([sites[sub == 0], sites[sub != 0]])
        out["honeycomb"] = np.concatenate([sites[sub != 0], sites[sub == 0]])
    return out


def _seed_centres(system: System, sites: np.ndarray):
    n_sites = len(sites)
    up = sites[np.arange(system.n_up) % n_sites]
    down = sites[(system.n_up + np.arange(system.n_down)) % n_sites]
    return up, down


def embed_coefficients(coefficients, source: Basis, target: Basis):
    """Orbitals (C_up, C_down) on the plane waves of `source` → the same orbitals on `target`
    (coefficients of plane waves absent from `target` dropped), re-orthonormalised."""
    rows = target.index_of(source.integers)
    inside = rows >= 0
    out = []
    for c in coefficients:
        new = np.zeros((target.size, c.shape[1]), dtype=complex)
        new[rows[inside]] = c[inside]
        out.append(np.linalg.qr(new)[0] if c.shape[1] else new)
    return tuple(out)


@threadpool_limits.wrap(limits=1, user_api="blas")
def hartree_fock(system: System, depth: float, shells: float = DEFAULT_SHELLS, n_starts: int = 4,
                 noise: float = 0.5, seed: int = 0, max_iter: int = 300, tol: float = 1e-7,
                 seeded: bool = True, search_shells: float | None = None) -> HFResult:
    """Lowest-energy HF solution over several starts (the lowest converged one if any converged,
    else the lowest met, with converged False).

    Starts: the non-interacting orbitals, `n_starts − 1` randomly perturbed ones (noise: the
    weight of complex Gaussian noise per coefficient, seed: its generator's), and with `seeded`
    the crystal-seeded ones of `crystal_site_patterns` (the patterns whose occupied sites
    differ). Random and seeded starts let HF find the symmetry-broken (crystal) solutions.
    search_shells (< shells): run the starts in that smaller basis, then refine the lowest
    solution in the full basis (one SCF from its embedded orbitals; `converged` is the
    refinement's). Runs on one BLAS thread (module docstring).
    Energies in E_M per supercell. Raises ValueError for n_starts < 1 or max_iter < 1.
    """
    if n_starts < 1 or max_iter < 1:
        raise ValueError(f"n_starts and max_iter must be >= 1, got {n_starts} and {max_iter}")
    if search_shells is not None and search_shells < shells:
        coarse = hartree_fock(system, depth, search_shells, n_starts, noise, seed, max_iter, tol, seeded)
        hf = HartreeFock(system, depth, shells)
        # near a solution already: a short ODA, then the direct minimisation if needed
        r = hf.solve(embed_coefficients(coarse.coefficients, coarse.basis, hf.basis), max_iter=min(max_iter, 30),
                     tol=tol, max_descent=max_iter)
        label = f"{coarse.label} refined at {shells:g} shells"
        attempts = tuple((f"{a[0]} ({search_shells:g} shells)",) + tuple(a[1:]) for a in coarse.attempts)
        return dataclasses.replace(r, label=label, attempts=attempts + ((label, r.energy, r.converged, r.iterations),))
    hf = HartreeFock(system, depth, shells)
    rng = np.random.default_rng(seed)
    starts = [("band", lambda: hf.initial_coefficients(None, noise))]
    starts += [(f"random{i}", lambda: hf.initial_coefficients(rng, noise)) for i in range(1, n_starts)]
    if seeded:
        seen = set()
        for name, sites in crystal_site_patterns(system).items():
            up, down = _seed_centres(system, sites)
            key = (frozenset(map(tuple, np.round(up, 6))), frozenset(map(tuple, np.round(down, 6))))
            if key not in seen:
                seen.add(key)
                starts.append((f"crystal:{name}", lambda up=up, down=down: hf.localized_coefficients(up, down)))
    results = []
    for label, make in starts:
        r = hf.solve(make(), max_iter=max_iter, tol=tol)
        results.append(dataclasses.replace(r, label=label))
    pool = [r for r in results if r.converged] or results
    best = min(pool, key=lambda r: r.energy)
    attempts = tuple((r.label, r.energy, r.converged, r.iterations) for r in results)
    return dataclasses.replace(best, attempts=attempts)


# -- observables of a determinant ---------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class DeterminantObservables:
    """Exact observables of a Slater determinant (Wick's theorem).

    kvectors (K, 2) in 1/a_M; rho_mean (K,) complex ⟨ρ_k⟩ (ρ_k = Σ_i e^{−ik·r_i});
    structure_factor (K,) = (⟨|ρ_k|²⟩ − |⟨ρ_k⟩|²)/N; structure_factor_uncorrected (K,) =
    ⟨|ρ_k|²⟩/N (the conventions of `qernel.observables`); translation_overlap (2,) =
    |⟨Φ|T_{a_i}|Φ⟩| for the moiré lattice vectors a_1, a_2 (1 iff invariant); momentum (2,):
    the total crystal momentum in 1/a_M (mod the moiré reciprocal lattice) when the
    determinant is translation invariant, else NaN.
    """

    kvectors: np.ndarray
    rho_mean: np.ndarray
    structure_factor: np.ndarray
    structure_factor_uncorrected: np.ndarray
    translation_overlap: np.ndarray
    momentum: np.ndarray


def determinant_observables(result: HFResult, kvectors, invariance_tol: float = 1e-6) -> DeterminantObservables:
    """⟨ρ_k⟩, S(k) and the moiré-translation eigenvalues of the determinant `result` at the
    supercell reciprocal vectors `kvectors` (K, 2). Raises ValueError if a k is not one."""
    basis = result.basis
    k = np.asarray(kvectors, float).reshape(-1, 2)
    # integer coordinates of k in the supercell reciprocal basis: K_i = m_i·B with B from the basis
    b = np.linalg.lstsq(basis.integers.astype(float), basis.vectors, rcond=None)[0]  # (2, 2) rows B1, B2
    m = k @ np.linalg.inv(b)
    if not np.allclose(m, np.rint(m), atol=1e-6):
        raise ValueError("structure-factor k vectors must be supercell reciprocal lattice vectors")
    m = np.rint(m).astype(int)
    p = result.density_matrices()
    n = sum(c.shape[1] for c in result.coefficients)
    rho = np.zeros(len(k), complex)
    exch = np.zeros(len(k))
    for i, mk in enumerate(m):
        shift = basis.index_of(basis.integers + mk)  # row of K + k, −1 outside
        ok = np.flatnonzero(shift >= 0)
        for pp in p:
            rho[i] += np.sum(pp[shift[ok], ok])
            # Tr(a P a† P) = Σ_{K1,K3} P_{K1+k,K3+k} P_{K3,K1}
            exch[i] += np.real(np.sum(pp[np.ix_(shift[ok], shift[ok])] * pp[np.ix_(ok, ok)].T))
    s_conn = 1.0 - exch / n
    s_unc = s_conn + np.abs(rho) ** 2 / n
    overlaps, phases = [], []
    for a in MOIRE_LATTICE:
        t = np.exp(-1j * basis.vectors @ a)
        val = np.prod([np.linalg.det(c.conj().T @ (t[:, None] * c)) for c in result.coefficients if c.shape[1]])
        overlaps.append(abs(val))
        phases.append(-np.angle(val))  # T_a Φ = e^{−iP·a} Φ  →  P·a = −arg
    overlaps = np.array(overlaps)
    if np.all(np.abs(overlaps - 1) < invariance_tol):
        momentum = np.linalg.solve(MOIRE_LATTICE, np.array(phases))
        frac = momentum @ MOIRE_LATTICE.T / (2 * np.pi)  # wrap into [−½, ½) in the b basis
        momentum = (frac - np.floor(frac + 0.5 + 1e-9)) @ MOIRE_RECIPROCAL
    else:
        momentum = np.full(2, np.nan)
    return DeterminantObservables(k, rho, s_conn, s_unc, overlaps, momentum)


def cell_density(result: HFResult, bins=(24, 24)) -> np.ndarray:
    """The determinant's density folded onto the moiré unit cell (averaged over the supercell's
    cells), electrons per a_M², at the bin centres u = (i + ½)/n_x, v = (j + ½)/n_y along
    a1, a2 (the grid of `qernel.observables.DensityAccumulator`); (n_x, n_y). Its mean times
    √3/2 is ν. Point values at the centres (not bin averages)."""
    basis = result.basis
    p = sum(result.density_matrices())
    q = basis.vectors[:, None, :] - basis.vectors[None, :, :]  # K − K'
    g_frac = q @ MOIRE_LATTICE.T / (2 * np.pi)
    keep = np.all(np.abs(g_frac - np.rint(g_frac)) < 1e-8, axis=-1)  # moiré reciprocal vectors only
    fu = (np.arange(bins[0]) + 0.5) / bins[0]
    fv = (np.arange(bins[1]) + 0.5) / bins[1]
    r = np.stack(np.meshgrid(fu, fv, indexing="ij"), -1) @ MOIRE_LATTICE  # (nx, ny, 2)
    qk, pk = q[keep], p[keep]
    return np.real(np.exp(1j * r @ qk.T) @ pk) / basis.area


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
