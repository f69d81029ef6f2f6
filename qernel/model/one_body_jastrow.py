"""One-body Jastrow factor of the moiré potential, ψ ∝ e^{Σ_i χ(r_i; c)}.

    χ(r; c) = u(s(r), p(r), c),   s(r) = [cos(g_j·r + φ), sin(g_j·r + φ)]_{j=1..3},
                                  p(r) = −(1/3) Σ_j cos(g_j·r + φ) = Δ(r) / (6V)

g_j: the first shell of the moiré reciprocal lattice and φ the potential's phase (qernel.moire,
DESIGN.md §1), so s and p are the potential's own harmonics and its shape (p is lowest at the
minima: −1 at φ = 0, −0.707 at φ = 45°); c: the normalised condition (the depth, mapped to
[−1, 1] as for FiLM, qernel.model.film). u is a small MLP (tanh) whose last layer is zero-initialised: at the start
χ = 0 and the wavefunction is the one without it.

χ has the moiré lattice's periodicity (so the supercell's), is the same function for every
electron (a sum over electrons: symmetric under permutations, the antisymmetry stays the
determinants') and is real (the phase of ψ is unchanged). A factor with the moiré lattice's
periodicity weights every arrangement of holes over the minima alike, so it neither makes nor
forbids a crystal: that stays the determinants' job.

Why (issue 13): at large V the ground state decays into the potential's maxima, ψ ~ e^{−∫κ},
κ = √(2(Δ − ε)) (H = −½∇² + Δ in E_M and a_M: about 12 a_M⁻¹ at the maxima at V = 10 E_M, Δ = +58
E_M against the lowest band's ε ≈ −13.5 E_M), and the model's
orbitals do not: the Hartree–Fock prior is a 3-shell plane-wave sum and the neural modulation reads
the first moiré shell only. Measured on the demo (6 holes in 3×3, λ = 10.62, V = 10 E_M, shared
model trained with clip_mad 20): 0.2 % of the evaluation's samples have a hole high on the
potential (Δ = +30 … +50 E_M per hole), with E_L 20–90 E_M above the median and log|ψ| only 4–6
below it; they carry about 0.012 E_M per hole of the mean energy (the whole margin over
Hartree–Fock) and most of Var E_L. This is the electron–nucleus term of the Jastrow factors of
QMC for solids (Foulkes, Mitas, Needs, Rajagopal, Rev. Mod. Phys. 73, 33 (2001), §VI.A), with the
moiré potential in the role of the ions, and conditioned on the depth as the pair term is
(qernel.model.jastrow).

Opt-in (`model.one_body_jastrow`). Measured on the demo system at
V = 10 E_M (2-core CPU, 2026-12-01), the shared model (800 steps, clip_mad 20) fine-tuned 40 steps
at that depth with 144 walkers, three evaluation seeds each: VMC − HF +0.0015(86), −0.0143(31),
−0.0156(71) E_M per hole, Var E_L 8.2, 2.2, 6.7 with it; +0.0237(72), +0.0062(70), +0.0287(95),
Var E_L 13.4, 9.9, 23.2 without. Without the fine-tuning (16 walkers per depth, one run each) the
difference was within the run-to-run spread: its rare samples are too few there to train it. In the
whole demo (make run with its fine-tuning, one run each) 7 of 9 depths were below HF by 3σ with it,
8 of 9 without (V = 8.75, 10: −0.0037(66), −0.0084(36) with; −0.0188(35), −0.0032(71) without).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from qernel.moire import G_SHELL, moire_potential


def potential_features(x, phase: float):
    """[cos(g_j·r + φ), sin(g_j·r + φ) (j = 1..3), Δ(r)/(6V)] at positions x (..., 2) in a_M; (..., 7)."""
    arg = x @ jnp.asarray(G_SHELL.T, dtype=x.dtype) + jnp.asarray(phase, x.dtype)
    shape = moire_potential(x, 1.0, phase)[..., None] / 6.0
    return jnp.concatenate([jnp.cos(arg), jnp.sin(arg), shape.astype(x.dtype)], axis=-1)


class OneBodyJastrow(nn.Module):
    """(x (N, 2) in a_M, c_norm (n_cond,)) → Σ_i χ(r_i; c) (real scalar).

    phase: φ of the moiré potential (radians, `System.phase`); hidden: width of u's two layers.
    """

    phase: float
    hidden: int = 16

    @nn.compact
    def __call__(self, x, c_norm):
        f = potential_features(x, self.phase)  # (N, 7)
        c = jnp.broadcast_to(c_norm.astype(x.dtype), (x.shape[0], c_norm.shape[-1]))
        h = jnp.tanh(nn.Dense(self.hidden, name="hidden_0")(jnp.concatenate([f, c], axis=-1)))
        h = jnp.tanh(nn.Dense(self.hidden, name="hidden_1")(h))
        chi = nn.Dense(1, kernel_init=nn.initializers.zeros, name="out")(h)[..., 0]
        return jnp.sum(chi)
