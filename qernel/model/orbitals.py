"""Spin-blocked generalised Slater orbitals with Bloch envelopes.

For each spin block s (N_s electrons, up first) and determinant d, the orbital matrix is

    Φ^d_ij = a^d_j(h_i) · ε_j(r_i) + (c^d_j + b^d_j(h_i)) · φ_j(r_i)      (i: electron, j: orbital)

(the first term is absent with ModelConfig.additive_orbitals = false, the modulation b with
prior_modulation off, the second term with orbital_prior off; each part below)

- a^d_j(h_i): the neural amplitude, a linear head on the transformer output h_i (two real
  heads, the real and imaginary parts, when ψ is complex). It is a supercell-periodic
  function of all positions (equivariant in the others), so the determinant is antisymmetric.
- ε_j(r) = e^{i k_j·r}: the Bloch envelope, with k_j the supercell k-point of the j-th
  occupied level of the non-interacting ground state at the reference depth. Every k_j is a
  supercell reciprocal vector, so e^{i k_j·L} = 1 and Φ is periodic. For real ψ
  (complex_output = False) ε_j is cos(k_j·r) (or sin(k_j·r) for the partner of a ±k pair).
- φ_j(r): the exact non-interacting orbital of that level (qernel.bands, normalised on the
  supercell: |φ_j| ~ A^{-1/2}), or, for real ψ, a real basis of the same span; c^d_j a
  learnable scale (1 at initialisation). This "orbital prior" is optional
  (ModelConfig.orbital_prior). With ModelConfig.prior_anchors = M > 1 the prior depends on
  the condition: φ_j(r; V) = Σ_m w_m(V) φ^{(m)}_j(r) and c^d_j(V) = Σ_m w_m(V) c^{d,m}_j, with
  φ^{(m)} the exact orbitals at M anchor depths V_m evenly spaced over the condition range
  (gauge-fixed to follow the reference depth's columns, `qernel.pretrain.make_targets`) and
  w_m(V) the piecewise-linear hat functions (w_m(V_n) = δ_mn; constant beyond the ends). At
  every anchor depth one determinant (a = 0, c = 1) is then that depth's exact
  non-interacting ground state. Why: at large V the band orbitals are localised on the moiré
  minima and differ from the reference depth's by high harmonics that the neural amplitude,
  fed by low-harmonic features, fits poorly (docs/validation.md). The neural head is initialised with standard deviation
  init_scale · A^{-1/2}, so the balance of the two terms does not depend on the supercell.

- b^d_j(h_i): the prior's modulation (ModelConfig.prior_modulation, off by default), a second
  linear head on h_i (complex when ψ is), zero at initialisation (the model starts as it would
  without it). It multiplies the prior orbital, so its change to Φ is proportional to φ_j:
  small where the band orbital is small. Why: at large V the orbitals are localised and
  φ_j is exponentially small between the moiré minima; an additive correction a·ε of the size
  needed on the minima dominates there and puts spurious structure in the low-density regions
  (two holes in one minimum), which few walkers visit. Measured (λ = 0, 4 holes in 2×2,
  V = 5 and 10 E_M, prior at V = 7.5, 150 SR steps; notes of issue 17): the local-energy outliers
  at V = 10 sit at log|ψ| ~ 6 below the median with E_L up to +170 E_M. The product of a
  network and an analytic orbital is FermiNet's envelope construction (Pfau et al., Phys. Rev.
  Research 2, 033429 (2020)), with the band orbital as the envelope.

- Learnable prior (ModelConfig.learnable_prior, off by default): the prior's plane-wave
  coefficients become c_G + δ_G s_G, δ complex and learnable, zero at initialisation, s_G the
  coefficient's largest size |c_G| over the anchor depths (each coefficient changes in proportion
  to the size it has somewhere in the range, so plane waves the prior never uses stay unused),
  one table per anchor depth (M, P, N_s), interpolated in V by the same hat functions (without
  anchors one table, s_G = |c_G|). The
  determinant's one-particle part then spans every orbital of the prior's plane-wave basis at
  every anchor depth, exactly and linearly, instead of only what the neural heads (fed by
  low-harmonic features) can make of the anchors' orbitals. Why: at λ = 0 between anchors the
  exact orbitals are not reachable otherwise to the precision a local energy needs (the kinetic
  energy amplifies small high-harmonic errors: the network fitted to the exact orbitals at
  V = 5 E_M, orbital loss 1e-5, kept Var E_L = 0.16 E_M², notes of issue 17). Learnable
  plane-wave orbitals are the one-particle part of plane-wave Hartree–Fock and of DeepSolid-style
  periodic ansätze (Li et al., Nat. Commun. 13, 7895 (2022), which start from HF orbitals).

- Without the additive term (ModelConfig.additive_orbitals = false) a = 0 and the orbitals are
  (c^d_j + b^d_j(h_i)) · φ_j(r_i): the network multiplies the prior (FermiNet's construction,
  network × envelope, Pfau et al. 2020, with the prior orbital as the envelope), so every
  orbital is small wherever its prior orbital is. Why: at large V the prior (Hartree–Fock or
  band orbitals, localised on the moiré minima) decays into the potential's maxima, where the
  additive a·ε, a plane wave times a network of low-harmonic features, does not; the rare
  samples with a hole on a maximum then carry local energies 20–90 E_M above the median and
  most of the variance (demo system at V = 10 E_M, notes of issue 13). Measured on the demo
  sweep (one run each, same recipe): VMC − HF at V = 10 E_M −0.0032(71) with the additive term,
  −0.0143(28) without, Var E_L 9.7 and 3.8 E_M²; at V = 0–2.5 E_M, where the prior is the
  Hartree–Fock crystal and the ground state a liquid, the additive term is worth 0.02–0.06 E_M
  per hole. The modulation's head then starts at random (standard deviation init_scale): every
  other per-determinant parameter starts equal across determinants, and equal determinants
  get equal updates for ever.

With a = b = 0 and c = 1 one determinant is exactly the non-interacting ground state at the
reference depth; with c = 0 and a^d_j ≡ 1 it is the plane-wave determinant det[e^{ik_j·r_i}]
(the free-electron ground state when the occupied levels are the lowest plane waves).
Positions in a_M.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from qernel.bands import GroundState, orbital_values
from qernel.lattice import MOIRE_LATTICE, Supercell
from qernel.model.features import check_supercell_periodic
from qernel.pretrain import make_targets


@dataclasses.dataclass(frozen=True, eq=False)
class SpinReference:
    """Static tables for one spin block (n_s occupied levels).

    kpoints (n_s, 2); envelope_kind (n_s,) 0 = e^{ik·r} / cos, 1 = sin (real ψ only);
    gvectors (P, 2) moiré plane waves of the prior; coefficients (P, n_s) complex, the prior
    φ(r) = e^{ik·r} Σ_G c_G e^{iG·r} with Σ_G |c_G|² = 1/A (or Re[Φ(r) @ mixing] for real ψ,
    mixing (n_s, n_s)).
    """

    kpoints: np.ndarray
    envelope_kind: np.ndarray
    gvectors: np.ndarray
    coefficients: np.ndarray
    mixing: np.ndarray | None

    @property
    def n(self) -> int:
        return len(self.kpoints)


@dataclasses.dataclass(frozen=True, eq=False)
class AnchorTables:
    """The exact orbitals at the prior's anchor depths (ModelConfig.prior_anchors > 1).

    depths (M,) E_M, ascending; gvectors (P, 2) moiré plane waves; per spin σ (up, down):
    kpoints[σ] (M, N_σ, 2) and coefficients[σ] (M, P, N_σ) complex, normalised on the supercell
    (Σ_G |c|² = 1/A), columns ordered and gauge-fixed to follow the reference depth's.
    """

    depths: np.ndarray
    gvectors: np.ndarray
    kpoints: tuple[np.ndarray, np.ndarray]
    coefficients: tuple[np.ndarray, np.ndarray]

    @property
    def n(self) -> int:
        return len(self.depths)


@dataclasses.dataclass(frozen=True, eq=False)
class OrbitalReference:
    """The non-interacting ground state that fixes envelopes and the orbital prior
    (and, when `anchors` is set, the exact orbitals at the anchor depths of a V-dependent prior)."""

    depth: float
    ground_state: GroundState
    up: SpinReference
    down: SpinReference
    anchors: AnchorTables | None = None


def _time_reversal_invariant(k: np.ndarray) -> bool:
    """True if k and -k differ by a moiré reciprocal vector."""
    f = 2.0 * k @ MOIRE_LATTICE.T / (2.0 * np.pi)
    return bool(np.allclose(f, np.round(f), atol=1e-8))


def _real_mixing(bands, occupied, supercell: Supercell, seed: int = 0) -> np.ndarray:
    """W (n, n) complex with Re[Φ(r) @ W] a real basis of span Φ; raises if Φ is not closed under conjugation."""
    n = len(occupied)
    pts = supercell.to_cart(np.random.default_rng(seed).uniform(size=(max(8 * n, 32), 2)))
    phi = orbital_values(bands, occupied, pts)
    r = np.concatenate([phi.real, phi.imag], axis=1)  # (M, 2n)
    _, s, vt = np.linalg.svd(r, full_matrices=False)
    if n < len(s) and s[n] > 1e-8 * s[0]:
        raise ValueError("complex_output=False needs occupied levels whose span is closed under complex "
                         "conjugation (time-reversal invariant k-points, or complete ±k pairs); "
                         "use complex_output=True for this system")
    v = vt[:n].T  # (2n, n)
    return v[:n] - 1j * v[n:]


def _spin_reference(gs: GroundState, occupied, supercell: Supercell, complex_output: bool) -> SpinReference:
    bands = gs.bands
    if len(occupied) == 0:
        return SpinReference(np.zeros((0, 2)), np.zeros(0, int), np.zeros((0, 2)), np.zeros((0, 0), complex), None)
    ik = np.array([o[0] for o in occupied])
    ib = np.array([o[1] for o in occupied])
    k = bands.kpoints[ik]
    check_supercell_periodic(supercell, k)
    c = bands.coefficients[ik, :, ib].T / np.sqrt(bands.area)  # (P, n): orbitals normalised on the supercell
    keep = np.max(np.abs(c), axis=1) > 1e-13 * np.abs(c).max()
    kind = np.zeros(len(k), int)
    mixing = None
    if not complex_output:
        mixing = _real_mixing(bands, occupied, supercell)
        for j, kj in enumerate(k):
            if not _time_reversal_invariant(kj) and (kj[1] < -1e-12 or (abs(kj[1]) <= 1e-12 and kj[0] < 0)):
                kind[j] = 1
    return SpinReference(k, kind, bands.gvectors[keep], c[keep], mixing)


def reference_orbitals(system, ground_state: GroundState, depth: float, complex_output: bool,
                       anchor_depths=None, prior_source: str = "bands") -> OrbitalReference:
    """Tables of envelopes and prior from the non-interacting ground state at `depth`.

    anchor_depths: None, or the (M,) depths (E_M, M >= 2) of a V-dependent prior (complex
    output only; ValueError otherwise). The bands are solved at the plane-wave cutoff of
    `ground_state`'s basis (qernel.bands.DEFAULT_SHELLS when it came from the default solver).
    prior_source: the anchors' orbitals, "bands" or "hartree_fock" (ModelConfig.prior_source;
    the HF cutoff is the workflow HF reference's, `qernel.reference.choose_shells`; ValueError
    when even its smallest basis is over that reference's plane-wave bound).
    """
    sc = system.supercell
    anchors = None
    if anchor_depths is not None:
        if not complex_output:
            raise ValueError("a V-dependent orbital prior (prior_anchors > 1) needs complex_output")
        grid = np.sort(np.asarray(anchor_depths, dtype=float))
        if len(grid) < 2 or np.any(np.diff(grid) <= 0):
            raise ValueError(f"anchor depths must be >= 2 distinct values, got {grid.tolist()}")
        if prior_source == "hartree_fock":
            from qernel.hartree_fock_targets import cached_hartree_fock_targets
            from qernel.reference import HFOptions, choose_shells

            options = HFOptions()
            shells, size = choose_shells(system, options)
            if shells is None:
                raise ValueError(f"model.prior_source: hartree_fock: the smallest HF basis has {size} plane waves, over "
                                 f"the bound of {options.max_plane_waves}; use prior_source: bands for this supercell")
            t = cached_hartree_fock_targets(system, grid, reference_depth=float(depth), shells=shells,
                                            search_shells=min(options.search_shells, shells), starts=options.starts,
                                            seeded=options.seeded, max_iter=options.max_iter)
        elif prior_source == "bands":
            t = make_targets(system, grid, reference_depth=float(depth))
        else:
            raise ValueError(f"prior_source must be 'bands' or 'hartree_fock', got {prior_source!r}")
        for k in t.kpoints:
            check_supercell_periodic(sc, k.reshape(-1, 2))
        anchors = AnchorTables(grid, t.gvectors, t.kpoints, t.coefficients)
    return OrbitalReference(float(depth), ground_state,
                            _spin_reference(ground_state, ground_state.occupied_up, sc, complex_output),
                            _spin_reference(ground_state, ground_state.occupied_down, sc, complex_output),
                            anchors)


def anchor_weights(v, depths: np.ndarray):
    """Hat-function weights w_m(v) (M,) of the anchor depths (M,): linear interpolation, constant beyond the ends."""
    eye = jnp.eye(len(depths), dtype=v.dtype)
    grid = jnp.asarray(depths, v.dtype)
    return jax.vmap(lambda e: jnp.interp(v, grid, e))(eye)


def anchored_prior_orbitals(x, anchors: AnchorTables, spin: int, correction=None):
    """φ^{(m)}_j(r_i) at every anchor m for positions x (..., n, 2) of spin block `spin`; (..., M, n, n) complex.

    correction: None, or (M, P, n) complex added to the anchors' plane-wave coefficients (the
    learnable part of `Orbitals` with `learnable_prior`)."""
    cdtype = jnp.result_type(x.dtype, jnp.complex64)
    plane = jnp.exp(1j * (x @ jnp.asarray(anchors.gvectors.T, dtype=x.dtype)))  # (..., n, P)
    coeff = jnp.asarray(anchors.coefficients[spin], dtype=cdtype)  # (M, P, n)
    if correction is not None:
        coeff = coeff + correction.astype(cdtype)
    k = jnp.asarray(anchors.kpoints[spin], dtype=x.dtype)  # (M, n, 2)
    bloch = jnp.exp(1j * jnp.einsum("...id,mjd->...mij", x, k))  # (..., M, n, n)
    return bloch * jnp.einsum("...ip,mpj->...mij", plane, coeff)


def prior_orbital_values(reference: OrbitalReference, points, depth: float) -> tuple[np.ndarray, np.ndarray]:
    """The orbital prior's orbitals φ_j(r; V) (without the learnable scale or the learnable_prior
    correction) at points (M, 2), a_M, and depth V (E_M): (up (M, N_up), down (M, N_down)) complex, NumPy. With anchors, the
    hat-function interpolation of the module docstring (constant beyond the ends); without, the
    reference depth's orbitals at every V (for real ψ the complex orbitals, which span the same
    space). Where the walkers start (`qernel.determinant_sampling`)."""
    from qernel.determinant_sampling import plane_wave_orbitals

    anchors = reference.anchors
    if anchors is None:
        return tuple(plane_wave_orbitals(points, ref.gvectors, ref.kpoints, ref.coefficients)
                     for ref in (reference.up, reference.down))
    weights = np.asarray(anchor_weights(jnp.asarray(float(depth)), anchors.depths), float)
    return tuple(sum(w * plane_wave_orbitals(points, anchors.gvectors, anchors.kpoints[s][m], anchors.coefficients[s][m])
                     for m, w in enumerate(weights) if w != 0.0) for s in (0, 1))


def bloch_envelope(x, ref: SpinReference, complex_output: bool):
    """ε_j(r_i) for positions x (..., n, 2); (..., n, n_s), complex (e^{ik·r}) or real (cos / sin)."""
    phase = x @ jnp.asarray(ref.kpoints.T, dtype=x.dtype)
    if complex_output:
        return jnp.exp(1j * phase)
    return jnp.where(jnp.asarray(ref.envelope_kind == 1), jnp.sin(phase), jnp.cos(phase))


def prior_orbitals(x, ref: SpinReference, complex_output: bool, correction=None):
    """φ_j(r_i) of the non-interacting levels at positions x (..., n, 2); (..., n, n_s).

    correction: None, or (P, n_s) complex added to the plane-wave coefficients (the learnable
    part of `Orbitals` with `learnable_prior`)."""
    cdtype = jnp.result_type(x.dtype, jnp.complex64)
    plane = jnp.exp(1j * (x @ jnp.asarray(ref.gvectors.T, dtype=x.dtype)))  # (..., n, P)
    coeff = jnp.asarray(ref.coefficients, dtype=cdtype)
    if correction is not None:
        coeff = coeff + correction.astype(cdtype)
    phi = bloch_envelope(x, ref, True) * (plane @ coeff)
    if complex_output:
        return phi
    return jnp.real(phi @ jnp.asarray(ref.mixing, dtype=cdtype))


class Orbitals(nn.Module):
    """h (..., N, d), x (..., N, 2) → [Φ_up (..., n_det, N_up, N_up), Φ_down (..., n_det, N_dn, N_dn)]."""

    reference: OrbitalReference
    n_determinants: int
    complex_output: bool = True
    prior: bool = True
    init_scale: float = 0.1
    modulation: bool = True
    learnable_prior: bool = False
    additive: bool = True

    @nn.compact
    def __call__(self, h, x, cond=None):
        """cond (..., n_cond) is needed (cond[..., 0] = V) when the reference has anchors.

        Raises ValueError when it is needed and None.
        """
        mats, offset = [], 0
        anchors = self.reference.anchors if self.prior else None
        if anchors is not None:
            if cond is None:
                raise ValueError("a V-dependent orbital prior needs the condition")
            weights = jnp.vectorize(lambda v: anchor_weights(v, anchors.depths), signature="()->(m)")(
                cond[..., 0].astype(x.dtype))  # (..., M)
        n_det, n_comp = self.n_determinants, (2 if self.complex_output else 1)
        dtype = jnp.result_type(h.dtype, jnp.complex64) if self.complex_output else h.dtype
        zeros = nn.initializers.zeros
        if self.init_scale > 0:
            area = self.reference.ground_state.bands.area
            kernel_init = nn.initializers.variance_scaling(self.init_scale**2 / area, "fan_in", "normal")
            # the modulation is relative to the prior orbital, so its scale has no 1/A
            mod_init = zeros if self.additive else nn.initializers.variance_scaling(self.init_scale**2, "fan_in",
                                                                                     "normal")
        else:
            kernel_init = mod_init = zeros

        def head(hs, n, init, name):
            """A linear head on h_i: (..., d, i, j), complex when ψ is."""
            out = nn.Dense(n_comp * n_det * n, kernel_init=init, name=name)(hs)
            out = out.reshape(out.shape[:-1] + (n_comp, n_det, n))  # (..., i, comp, d, j)
            out = out[..., 0, :, :] + 1j * out[..., 1, :, :] if self.complex_output else out[..., 0, :, :]
            return jnp.moveaxis(out, -2, -3)

        for name, ref in (("up", self.reference.up), ("down", self.reference.down)):
            n = ref.n
            if n == 0:
                mats.append(jnp.zeros(h.shape[:-2] + (n_det, 0, 0), dtype))
                continue
            hs, xs = h[..., offset:offset + n, :], x[..., offset:offset + n, :]
            offset += n
            if self.additive:
                envelope = bloch_envelope(xs, ref, self.complex_output)
                mat = head(hs, n, kernel_init, f"head_{name}") * envelope[..., None, :, :]
            else:
                mat = 0.0
            if self.prior and self.modulation:
                # beside the additive head, zero at initialisation (the model starts as it did
                # without the modulation; the additive head's random start makes the determinants
                # differ). Without it, this is the head whose random start (init_scale, relative to
                # the prior orbital) makes them differ: every other per-determinant parameter starts
                # equal across determinants, and equal determinants get equal updates for ever.
                mod = head(hs, n, mod_init, f"modulation_{name}")
            else:
                mod = 0.0
            if self.prior and self.learnable_prior:
                # zero at initialisation: the prior starts as the given orbitals
                table = anchors.coefficients[0 if name == "up" else 1] if anchors is not None else ref.coefficients
                dc = self.param(f"prior_coefficients_{name}", nn.initializers.zeros, table.shape + (2,))
                # each coefficient changes by a complex factor of its own size: plane waves the
                # prior does not use stay out (a uniform scale let the first SR steps put weight
                # on high harmonics, whose kinetic energy raised Var E_L ~1000x at λ = 0)
                size = np.abs(table)
                if anchors is not None:
                    # ... its largest size at any anchor depth: a shallow anchor's orbital, nearly a
                    # plane wave, can take on the high harmonics that the orbitals between it and a
                    # deeper anchor need (with each anchor's own sizes, the λ = 0 check's V = 5 Var
                    # E_L ended at 0.057 E_M², with the largest 0.019; notes of issue 17)
                    size = np.broadcast_to(size.max(axis=0, keepdims=True), size.shape)
                correction = jax.lax.complex(dc[..., 0], dc[..., 1]) * jnp.asarray(size, h.dtype)
            else:
                correction = None
            if self.prior and anchors is not None:
                init = lambda key, shape: jnp.zeros(shape).at[..., 0].set(1.0)
                c = self.param(f"prior_scale_{name}", init, (anchors.n, n_det, n, n_comp))
                c = c[..., 0] + 1j * c[..., 1]  # (M, d, j)
                w = weights.astype(c.dtype)
                c_v = jnp.einsum("...m,mdj->...dj", w, c)  # (..., d, j)
                phi_v = jnp.einsum("...m,...mij->...ij", w, anchored_prior_orbitals(xs, anchors, 0 if name == "up" else 1,
                                                                                    correction))
                mat = mat + (c_v[..., :, None, :] + mod) * phi_v[..., None, :, :]
            elif self.prior:
                init = lambda key, shape: jnp.zeros(shape).at[..., 0].set(1.0)
                c = self.param(f"prior_scale_{name}", init, (n_det, n, n_comp))
                c = c[..., 0] + 1j * c[..., 1] if self.complex_output else c[..., 0]
                mat = mat + (c[:, None, :] + mod) * prior_orbitals(xs, ref, self.complex_output, correction)[..., None, :, :]
            mats.append(mat.astype(dtype))
        return mats
