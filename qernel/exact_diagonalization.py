"""Exact ground-state energy of one spin-up and one spin-down electron (plane-wave diagonalisation).

The interacting reference the variational pipeline is checked against (docs/validation.md):

    H = Σ_{i=1,2} [−½∇_i² + Δ_V(r_i)] + λ v_E(r_1 − r_2) + λ ξ_M          (E_M, a_M; DESIGN.md §1)

with v_E(r) = (2π/A) Σ_{q≠0} e^{iq·r}/|q| (the Ewald potential is exactly this Fourier series)
and (N/2) λ ξ_M = λ ξ_M for N = 2. The electrons have opposite spins, so the two-particle basis
|p_1, p_2⟩ of supercell plane waves needs no antisymmetrisation: p_i runs over the supercell
reciprocal vectors with |p| <= shells · |b| (|b| = 4π/√3, the moiré reciprocal length). The
moiré potential couples p to p ± g_j with Δ_{±g_j} = −V e^{±iφ}; the interaction couples
|p_1, p_2⟩ to |p_1 + q, p_2 − q⟩. The lowest eigenvalue comes from scipy's Lanczos (eigsh).

The cutoff error falls as about shells^−2.6 (the Coulomb cusp): `extrapolated_energy` fits
E(s) = E_∞ + a s^−p to several cutoffs.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
from scipy.optimize import curve_fit
from scipy.sparse.linalg import eigsh

from qernel.ewald import Ewald
from qernel.lattice import Supercell
from qernel.moire import moire_fourier_components

MOIRE_RECIPROCAL_LENGTH = 4.0 * math.pi / math.sqrt(3.0)


def two_electron_energy(supercell: Supercell, depth: float, coupling: float, phase: float,
                        shells: float = 6.0) -> float:
    """Ground-state energy (E_M, total for both electrons) of one up + one down electron.

    depth V (E_M) >= 0, coupling λ >= 0, phase φ in radians, shells: plane-wave cutoff in units
    of the moiré reciprocal length. Basis size (number of momenta)² — 517² at shells = 12 in 1×1.
    Raises ValueError for depth < 0 or coupling < 0.
    """
    if depth < 0 or coupling < 0:
        raise ValueError(f"depth and coupling must be >= 0, got V = {depth}, λ = {coupling}")
    rec = supercell.reciprocal
    momenta = supercell.reciprocal_vectors(shells * MOIRE_RECIPROCAL_LENGTH, include_origin=True)
    n = len(momenta)
    integer = np.rint(np.linalg.solve(rec.T, momenta.T).T).astype(int)
    index = {tuple(m): i for i, m in enumerate(integer)}

    def shifted(q) -> np.ndarray:
        """Index of p + q for every basis momentum p (−1 outside the cutoff)."""
        mq = np.rint(np.linalg.solve(rec.T, np.asarray(q))).astype(int)
        return np.array([index.get(tuple(m + mq), -1) for m in integer])

    rows, cols, vals = [np.arange(n)], [np.arange(n)], [0.5 * np.sum(momenta**2, axis=1).astype(complex)]
    for q, coeff in zip(*moire_fourier_components(depth, phase)):
        target = shifted(q)  # ⟨p + q| Δ |p⟩ = Δ_q
        ok = target >= 0
        rows.append(target[ok]), cols.append(np.flatnonzero(ok)), vals.append(np.full(ok.sum(), coeff))
    one_body = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    eye = sp.identity(n, format="csr")
    hamiltonian = sp.kron(one_body, eye) + sp.kron(eye, one_body)

    if coupling > 0:
        rows, cols, vals = [], [], []
        arange = np.arange(n)
        for q in supercell.reciprocal_vectors(2.0 * shells * MOIRE_RECIPROCAL_LENGTH, include_origin=False):
            t1, t2 = shifted(q), shifted(-q)
            i1, i2 = np.meshgrid(arange[t1 >= 0], arange[t2 >= 0], indexing="ij")
            if i1.size == 0:
                continue
            cols.append((i1 * n + i2).ravel())
            rows.append((t1[i1] * n + t2[i2]).ravel())
            vals.append(np.full(i1.size, coupling * 2.0 * math.pi / (supercell.area * np.linalg.norm(q))))
        hamiltonian = hamiltonian + sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n * n, n * n))
    lowest = eigsh(hamiltonian, k=1, which="SA", tol=1e-12)[0][0]
    return float(lowest) + coupling * Ewald(supercell).madelung


def extrapolated_energy(supercell: Supercell, depth: float, coupling: float, phase: float,
                        shells=(6.0, 8.0, 10.0, 12.0)) -> tuple[float, np.ndarray]:
    """(E_∞, energies at `shells`): the fit E(s) = E_∞ + a s^−p over the cutoffs (E_M, total)."""
    shells = np.asarray(shells, float)
    energies = np.array([two_electron_energy(supercell, depth, coupling, phase, s) for s in shells])
    if coupling == 0 or np.ptp(energies) < 1e-12:
        return float(energies[-1]), energies
    (e_inf, _, _), _ = curve_fit(lambda s, e, a, p: e + a * s ** (-p), shells, energies,
                                 p0=(energies[-1], energies[0] - energies[-1], 2.0), maxfev=10000)
    return float(e_inf), energies


def main(argv=None) -> int:
    """python -m qernel.exact_diagonalization --depths 1 5 --coupling 2 --phase-deg 45 [--supercell 1 1]"""
    import argparse

    ap = argparse.ArgumentParser(description="Exact energy of one up + one down electron (E_M per electron).")
    ap.add_argument("--depths", type=float, nargs="+", required=True, help="depths V in E_M")
    ap.add_argument("--coupling", type=float, required=True, help="λ = a_M / a_B*")
    ap.add_argument("--phase-deg", type=float, required=True, help="the moiré phase φ in degrees")
    ap.add_argument("--supercell", type=int, nargs=2, default=(1, 1), metavar=("N1", "N2"),
                    help="diagonal supercell N1 × N2 (default 1 1)")
    ap.add_argument("--shells", type=float, nargs="+", default=[6.0, 8.0, 10.0, 12.0],
                    help="plane-wave cutoffs to extrapolate from (moiré reciprocal lengths)")
    args = ap.parse_args(argv)
    supercell = Supercell.diagonal(*args.supercell)
    for depth in args.depths:
        e_inf, energies = extrapolated_energy(supercell, depth, args.coupling, math.radians(args.phase_deg),
                                              args.shells)
        steps = ", ".join(f"{s:g}: {e / 2:.6f}" for s, e in zip(args.shells, energies))
        print(f"V = {depth:g} E_M: E/N = {e_inf / 2:.6f} E_M extrapolated (cutoff shells → E/N: {steps})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
