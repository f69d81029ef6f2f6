"""The moiré potential Δ(r) = -2V Σ_{j=1..3} cos(g_j·r + φ) (DESIGN.md §1).

Positions in a_M, V in E_M (V >= 0 is the depth), φ in radians.
"""

from __future__ import annotations

import numpy as np

from qernel.lattice import first_shell_vectors

#: g1, g2, g3 as rows, (3, 2), in 1/a_M.
G_SHELL = first_shell_vectors()


def moire_potential(r, depth, phase):
    """Δ(r) in E_M for positions r (..., 2); `depth` broadcasts against r[..., 0].

    Works on numpy and jax arrays (JAX is imported only for the latter).
    """
    if isinstance(r, np.ndarray):
        xp = np
    else:
        import jax.numpy as xp
    g = xp.asarray(G_SHELL, dtype=r.dtype)
    arg = r @ g.T + phase  # (..., 3)
    return -2.0 * depth * xp.sum(xp.cos(arg), axis=-1)


def moire_fourier_components(depth: float, phase: float) -> tuple[np.ndarray, np.ndarray]:
    """The potential as Σ_q Δ_q e^{iq·r}: returns (q (6, 2), Δ_q (6,) complex).

    Δ_{g_j} = -V e^{iφ}, Δ_{-g_j} = -V e^{-iφ}.
    """
    q = np.concatenate([G_SHELL, -G_SHELL])
    coeff = np.concatenate([np.full(3, -depth * np.exp(1j * phase)), np.full(3, -depth * np.exp(-1j * phase))])
    return q, coeff
