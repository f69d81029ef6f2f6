"""Second-order Møller–Plesset (MP2) correlation energy on top of the symmetry-broken HF.

The reference is a converged determinant of `qernel.hartree_fock.hartree_fock` (unrestricted:
spin-polarised or not) in its supercell plane-wave basis, φ_p(r) = A^{-1/2} Σ_K C_{Kp} e^{iK·r}
over the M plane waves |K| <= shells·|b|. In that basis the Hamiltonian of `qernel.system.System`
has the two-electron integrals (physicist notation, E_M)

    ⟨pq|rs⟩ = (λ/A) Σ_{q≠0} v_q M_pr(q) M_qs(−q),   M_pr(q) = Σ_K C*_{K+q,p} C_{K,r},   v_q = 2π/|q|

(M_pr(q) = ∫ φ_p* e^{iq·r} φ_r; the sum over K keeps K and K + q inside the basis: the
truncation of the HF functional and of `qernel.exact_diagonalization`), plus the constant
λ(N/2)ξ_M. The second-order energy (Szabo & Ostlund, Modern Quantum Chemistry, §6.5, eq. 6.74
in spin orbitals; split by spin as in unrestricted MP2) is

    E2 = ¼ Σ_σ Σ_{ijab ∈ σ} |⟨ij||ab⟩|² / (ε_i + ε_j − ε_a − ε_b)
         + Σ_{i a ∈ ↑, j b ∈ ↓} |⟨ij|ab⟩|² / (ε_i + ε_j − ε_a − ε_b),
    ⟨ij||ab⟩ = ⟨ij|ab⟩ − ⟨ij|ba⟩

with i, j occupied and a, b virtual orbitals and ε their orbital energies. The orbitals are the
semicanonical ones: the Fock matrix of the determinant's density (`HartreeFock.fock`) is
diagonalised separately in the occupied space and in its orthogonal complement (the virtual
space: the other M − n_σ orbitals of the basis). At self-consistency the occupied–virtual block
F_ia vanishes (Brillouin's theorem) and these are the canonical HF orbitals; the singles term
Σ |F_ia|²/(ε_i − ε_a) is reported as a measure of the residual, not added.

E2 is the first correction beyond HF in the Coulomb coupling: E_exact − E_HF = E2 + O(λ³) (the
tests check both spin channels against exact diagonalisation at weak coupling). It needs an
aufbau reference (every virtual above every occupied orbital of its spin) so that every
denominator is negative and E2 <= 0: `mp2` raises ValueError otherwise.

Demo (3×3, 6 spin-polarised holes, λ = 10.62, φ = 45°, HF with 2-shell search refined at 3
shells, M = 301): E2/N = −0.0743, −0.0313, −0.0213, −0.0149 E_M per hole at V = 5, 7.5, 8.75,
10 E_M (4 shells: −0.0744, −0.0314, −0.0213, −0.0149); at V = 0 the converged HF (a triangular
crystal) is not aufbau (gap −1.16 E_M) and MP2 does not apply.

Cost: one pair-density table per spin pair, O(n_q M n) for n_q ≈ 4M momentum transfers, and
O(n_q n_occ² n_vir²) for the doubles (~1 s at M = 301, 6 holes); memory O(n_occ n_vir² + n_q n M).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from qernel.hartree_fock import HFResult, HartreeFock
from qernel.lattice import MOIRE_RECIPROCAL
from qernel.system import System

#: Default bound on max |F_ia| (E_M): above it the determinant is no HF solution of the given
#: system and depth (a converged SCF leaves ~1e-7; the direct minimisation stops at 1e-4).
BRILLOUIN_TOL = 1e-3


@dataclasses.dataclass(frozen=True)
class MP2Energy:
    """The MP2 energy of an HF determinant and its diagnostics; energies in E_M per supercell.

    energy: E2 = same_spin + opposite_spin (<= 0); same_spin: the antisymmetrised ↑↑ and ↓↓
    doubles; opposite_spin: the ↑↓ doubles; singles: Σ_σ Σ_ia |F_ia|²/(ε_i − ε_a), the
    non-Brillouin residual (not in `energy`); brillouin: max |F_ia|; gap: the smallest
    ε_LUMO − ε_HOMO over the spins with occupied orbitals (> 0); reference_energy: the HF energy
    rebuilt from the orbital integrals, Σ_i h_ii + ½ Σ_ij (⟨ij|ij⟩ − δ_σiσj ⟨ij|ji⟩) + λ(N/2)ξ_M
    (equals the HF energy to rounding: a check of the integrals).
    """

    energy: float
    same_spin: float
    opposite_spin: float
    singles: float
    brillouin: float
    gap: float
    reference_energy: float


def _transfer_table(hf: HartreeFock):
    """Every nonzero difference q of basis vectors: v_q (n_q,), the index of −q, and per q the
    rows (K + q, K) of the basis vectors with both inside."""
    basis = hf.basis
    m = basis.integers
    qs = np.unique((m[:, None, :] - m[None, :, :]).reshape(-1, 2), axis=0)
    qs = qs[np.any(qs != 0, axis=1)]
    v = 2 * np.pi / np.linalg.norm(qs @ hf.system.supercell.reciprocal, axis=1)
    lookup = {tuple(x): i for i, x in enumerate(qs)}
    neg = np.array([lookup[tuple(-x)] for x in qs], dtype=int)
    pairs = []
    for mq in qs:
        shift = basis.index_of(m + mq)
        ok = np.flatnonzero(shift >= 0)
        pairs.append((shift[ok], ok))
    return v, neg, pairs


class _Integrals:
    """⟨pq|rs⟩ for orbital blocks given as plane-wave coefficients (module docstring)."""

    def __init__(self, hf: HartreeFock):
        v, self.neg, self.pairs = _transfer_table(hf)
        self.weight = hf.system.coupling / hf.basis.area * v

    def pair_density(self, cl, cr):
        """M(q)_{pr} = Σ_K conj(cl[K+q, p]) cr[K, r]; (n_q, n_l, n_r)."""
        out = np.empty((len(self.pairs), cl.shape[1], cr.shape[1]), complex)
        for n, (kq, k) in enumerate(self.pairs):
            out[n] = cl[kq].conj().T @ cr[k]
        return out

    def eri(self, m13, m24, i=slice(None)):
        """T[p, r, q, s] = ⟨pq|rs⟩ from m13 = pair_density(c1, c3), m24 = pair_density(c2, c4)
        (p restricted to the rows `i` of c1); (n_p, n_r, n_q, n_s)."""
        a = m13[:, i] * self.weight[:, None, None]
        b = m24[self.neg]
        nq, n1, n3 = a.shape
        _, n2, n4 = b.shape
        return (a.reshape(nq, n1 * n3).T @ b.reshape(nq, n2 * n4)).reshape(n1, n3, n2, n4)


def _semicanonical(hf: HartreeFock, coefficients):
    """Per spin (C_occ (M, n), ε_occ (n,), C_vir (M, M − n), ε_vir (M − n,), F_ov (n, M − n)):
    the Fock matrix of the determinant diagonalised in the occupied and the virtual space."""
    f_up, f_down, _ = hf.fock(*[c @ c.conj().T for c in coefficients])
    out = []
    for f, c in zip((f_up, f_down), coefficients):
        m, n = c.shape
        if not np.allclose(c.conj().T @ c, np.eye(n), atol=1e-8):
            raise ValueError("the HF orbitals are not orthonormal")
        w, v = np.linalg.eigh(np.eye(m) - c @ c.conj().T)  # the virtual space: eigenvalue 1
        cv = v[:, w > 0.5]
        eo, uo = np.linalg.eigh(c.conj().T @ f @ c)
        ev, uv = np.linalg.eigh(cv.conj().T @ f @ cv)
        co, cv = c @ uo, cv @ uv
        out.append((co, eo, cv, ev, co.conj().T @ f @ cv))
    return out


def _shells_of(basis) -> float:
    """The cutoff (in |b|) whose basis is `basis`: its longest vector's length."""
    return float(np.max(np.linalg.norm(basis.vectors, axis=1)) / np.linalg.norm(MOIRE_RECIPROCAL[0]))


def mp2(result: HFResult, system: System, depth: float, brillouin_tol: float = BRILLOUIN_TOL) -> MP2Energy:
    """MP2 energy (E_M per supercell) of the HF determinant `result` for `system` at `depth` (E_M).

    result: a converged `qernel.hartree_fock.hartree_fock` (or `HartreeFock.solve`) result of
    that system and depth, in its own basis. Returns `MP2Energy` (E2, its spin channels and
    diagnostics). Raises ValueError when the result is not converged, when its basis is not the
    HF basis of `system`, when max |F_ia| > brillouin_tol (not an HF solution of this system and
    depth), or when it is not an aufbau determinant (some virtual orbital at or below an occupied
    one of the same spin: negative gap, where second-order perturbation theory does not apply).
    """
    if not result.converged:
        raise ValueError(f"MP2 needs a converged HF determinant; this one ({result.label or 'solve'}) is not")
    hf = HartreeFock(system, depth, _shells_of(result.basis))
    if not np.array_equal(hf.basis.integers, result.basis.integers):
        raise ValueError("the HF result's plane-wave basis is not the HF basis of this system")
    if [c.shape[1] for c in result.coefficients] != [system.n_up, system.n_down]:
        raise ValueError(f"the HF result has {[c.shape[1] for c in result.coefficients]} orbitals per spin, "
                         f"the system {system.n_up, system.n_down} electrons")
    orbs = _semicanonical(hf, result.coefficients)
    brillouin = max((float(np.max(np.abs(o[4]))) for o in orbs if o[4].size), default=0.0)
    if brillouin > brillouin_tol:
        raise ValueError(f"max |F_ia| = {brillouin:.2e} E_M > {brillouin_tol:g}: not an HF solution of this system "
                         f"at V = {depth:g}")
    gap = min((float(o[3][0] - o[1][-1]) for o in orbs if o[1].size and o[3].size), default=np.inf)
    if gap <= 0:
        raise ValueError(f"the HF determinant is not aufbau (gap {gap:.4f} E_M <= 0): MP2 does not apply")
    ints = _Integrals(hf)
    occ = [ints.pair_density(o[0], o[0]) for o in orbs]  # M_ij(q) per spin
    exc = [ints.pair_density(o[0], o[2]) for o in orbs]  # M_ia(q) per spin

    # the reference energy from the orbital integrals
    e_ref = sum(float(np.real(np.einsum("ki,kl,li->", o[0].conj(), hf.h, o[0]))) for o in orbs)
    for s1 in range(2):
        for s2 in range(2):
            if orbs[s1][1].size and orbs[s2][1].size:
                t = ints.eri(occ[s1], occ[s2])  # T[i, i', j, j'] = ⟨ij|i'j'⟩
                e_ref += 0.5 * float(np.real(np.einsum("iijj->", t) - (np.einsum("ijji->", t) if s1 == s2 else 0)))
    e_ref += hf.madelung_energy

    same = singles = 0.0
    for s, (co, eo, cv, ev, fov) in enumerate(orbs):
        if eo.size and ev.size:
            singles += float(np.sum(np.abs(fov) ** 2 / (eo[:, None] - ev[None, :])))
        if eo.size >= 2 and ev.size:
            for i in range(eo.size):  # one occupied orbital at a time: memory n_occ n_vir²
                t = ints.eri(exc[s], exc[s], [i])[0]  # T[a, j, b] = ⟨ij|ab⟩
                anti = t - t.transpose(2, 1, 0)
                den = eo[i] + eo[None, :, None] - ev[:, None, None] - ev[None, None, :]
                same += 0.25 * float(np.sum(np.abs(anti) ** 2 / den))
    opposite = 0.0
    (_, eu, _, evu, _), (_, ed, _, evd, _) = orbs
    if eu.size and ed.size and evu.size and evd.size:
        for i in range(eu.size):
            t = ints.eri(exc[0], exc[1], [i])[0]  # T[a, j, b] = ⟨ij|ab⟩, i a ↑, j b ↓
            den = eu[i] + ed[None, :, None] - evu[:, None, None] - evd[None, None, :]
            opposite += float(np.sum(np.abs(t) ** 2 / den))
    return MP2Energy(same + opposite, same, opposite, singles, brillouin, gap, float(e_ref))


def mp2_energy(result: HFResult, system: System, depth: float) -> float:
    """E2 (E_M per supercell, <= 0): `mp2(result, system, depth).energy`. Raises ValueError as `mp2`."""
    return mp2(result, system, depth).energy
