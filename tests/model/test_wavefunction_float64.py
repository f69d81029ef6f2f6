"""The assembled wavefunction in float64: exact limits, cell-boundary smoothness, folx Laplacian.

Every test here runs with 64-bit JAX (a module-scoped x64 context).
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qernel.bands import noninteracting_ground_state, orbital_values, slater_log_psi
from qernel.hamiltonian import complex_kinetic_energy, kinetic_energy
from qernel.lattice import Supercell, lattice_points
from qernel.model import ModelConfig, make_wavefunction
from qernel.system import System

from model_helpers import fast_jit

SMALL = ModelConfig(d_model=16, n_layers=1, n_heads=4, n_kv_heads=2, n_experts=3, top_k=2, d_ff=16,
                    film_hidden=8, n_determinants=2, jastrow_hidden=8, orbital_init_scale=1.0, dtype="float64")
RANGE = ((0.0, 10.0),)


@pytest.fixture(scope="module", autouse=True)
def _x64_module():
    with jax.enable_x64(True):
        yield


def _positions(system, n_conf, seed):
    frac = np.random.default_rng(seed).uniform(size=(n_conf, system.n_electrons, 2))
    return jnp.asarray(system.supercell.to_cart(frac))


def _perturbed(params, key, scale=0.1):
    """Random perturbation of every parameter (zero-initialised layers included); host-side, no compile."""
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel())
    return jax.tree.map(lambda a: np.asarray(a + scale * rng.normal(size=a.shape).astype(a.dtype)), params)


def _zero_neural_orbitals(params):
    for name, head in params["params"]["orbitals"].items():
        if name.startswith(("head_", "modulation_")):
            head["kernel"], head["bias"] = jnp.zeros_like(head["kernel"]), jnp.zeros_like(head["bias"])
    return params


@pytest.fixture(scope="module")
def oblique():
    """3 up + 1 down electrons in an oblique 4-cell supercell, λ = 3, prior at V = 3."""
    system = System(Supercell(((2, 1), (0, 2))), n_up=3, n_down=1, coupling=3.0, phase=math.radians(30))
    wf = make_wavefunction(system, dataclasses.replace(SMALL, reference_depth=3.0), RANGE)
    params = wf.init(jax.random.PRNGKey(0))
    assert params["params"]["embed"]["kernel"].dtype == jnp.float64
    return system, wf, params


def test_forward_laplacian_matches_jvp_through_the_full_model(oblique):
    system, wf, params = oblique
    params = _perturbed(params, jax.random.PRNGKey(1))
    cond = jnp.asarray([6.0])
    f = lambda y: wf.log_psi(params, y, cond)
    both = fast_jit(lambda y: (kinetic_energy(f, y, "folx"), kinetic_energy(f, y, "jvp")))
    for x in _positions(system, 2, 2):
        folx_ke, jvp_ke = both(x)
        assert abs(float(folx_ke)) > 1e-3
        np.testing.assert_allclose(folx_ke, jvp_ke, rtol=1e-10)


def test_sparse_forward_laplacian_matches_the_dense_one(oblique):
    """folx with sparsity propagation (used from N = 12 on) = dense folx = the jvp loop, Re and Im."""
    system, wf, params = oblique
    params = _perturbed(params, jax.random.PRNGKey(5))
    cond = jnp.asarray([4.0])
    f = lambda y: wf.log_psi(params, y, cond)
    three = fast_jit(lambda y: (complex_kinetic_energy(f, y, "folx", 0.6), complex_kinetic_energy(f, y, "folx", 0),
                                complex_kinetic_energy(f, y, "jvp")))
    x = _positions(system, 1, 6)[0]
    sparse, dense, jvp = (np.asarray(v) for v in three(x))
    assert abs(sparse[0]) > 1e-3 and abs(sparse[1]) > 1e-6
    np.testing.assert_allclose(sparse, dense, rtol=1e-10)
    np.testing.assert_allclose(sparse, jvp, rtol=1e-10)


def test_smooth_across_the_cell_boundary(oblique):
    # positions are wrapped into the cell: continuity across its faces is the network's own periodicity
    system, wf, params = oblique
    params = _perturbed(params, jax.random.PRNGKey(3))
    apply = fast_jit(wf.apply)
    sc = system.supercell
    frac = np.random.default_rng(4).uniform(size=(4, 2))
    cond = jnp.asarray([2.0])
    for e, face in ((0, 0), (1, 1), (3, 0), (2, 1)):
        f_in, f_out = frac.copy(), frac.copy()
        f_in[e, face], f_out[e, face] = 1e-9, -1e-9
        p1, l1, _ = apply(params, jnp.asarray(sc.to_cart(f_in)), cond)
        p2, l2, _ = apply(params, jnp.asarray(sc.to_cart(f_out)), cond)
        assert abs(float(l1 - l2)) < 1e-6 and abs(np.angle(np.exp(1j * float(p1 - p2)))) < 1e-6


def test_orbital_prior_is_the_exact_noninteracting_orbitals(oblique):
    # neural amplitude switched off: each determinant's orbitals are the bands orbitals at V = 3
    system, wf, params = oblique
    params = _zero_neural_orbitals(jax.tree.map(lambda a: a, params))
    gs = noninteracting_ground_state(system, 3.0)
    orbitals = fast_jit(wf.orbitals)
    for x in _positions(system, 2, 5):
        up, down = orbitals(params, x, jnp.asarray([7.0]))
        exact_up = orbital_values(gs.bands, gs.occupied_up, np.asarray(x[:3]))
        exact_down = orbital_values(gs.bands, gs.occupied_down, np.asarray(x[3:]))
        for d in range(SMALL.n_determinants):
            np.testing.assert_allclose(up[d], exact_up, atol=1e-10)
            np.testing.assert_allclose(down[d], exact_down, atol=1e-10)


def test_prior_modulation_multiplies_the_band_orbitals(oblique):
    # neural amplitude a off and the modulation b a constant β_dj (kernel 0, bias β): every
    # orbital is (1 + β_dj) φ_j(r_i) with φ the band orbital (qernel.bands), the same factor for
    # every electron and position (an additive β·e^{ik·r} would not give a constant ratio), so
    # each determinant is the exact band determinant times a constant.
    system, _, _ = oblique
    wf = make_wavefunction(system, dataclasses.replace(SMALL, reference_depth=3.0, prior_modulation=True), RANGE)
    params = _zero_neural_orbitals(wf.init(jax.random.PRNGKey(0)))
    rng = np.random.default_rng(5)
    for name in ("modulation_up", "modulation_down"):
        bias = params["params"]["orbitals"][name]["bias"]
        params["params"]["orbitals"][name]["bias"] = jnp.asarray(0.5 * rng.normal(size=bias.shape))
    gs = noninteracting_ground_state(system, 3.0)
    orbitals = fast_jit(wf.orbitals)
    ratios = {"up": [], "down": []}
    for x in _positions(system, 3, 11):
        up, down = orbitals(params, x, jnp.asarray([7.0]))
        ratios["up"].append(np.asarray(up) / orbital_values(gs.bands, gs.occupied_up, np.asarray(x[:3]))[None])
        ratios["down"].append(np.asarray(down) / orbital_values(gs.bands, gs.occupied_down, np.asarray(x[3:]))[None])
    for block in ratios.values():
        r = np.stack(block)  # (configuration, determinant, electron, orbital)
        np.testing.assert_allclose(r, np.broadcast_to(r[:1, :, :1], r.shape), atol=1e-9)
    ratios = np.concatenate([np.ravel(r) for r in ratios.values()])
    assert np.max(np.abs(ratios - 1.0)) > 1e-2  # and the factor is not 1: the modulation is on


def test_anchored_prior_is_exact_at_every_anchor_depth_and_interpolates_between():
    # prior_anchors = 3 over V in [0, 10]: with the neural amplitude off, ψ is (up to a constant)
    # the exact non-interacting ground state at V = 0, 5 and 10 (bands solver, independent of the
    # model), and halfway between two anchors it is the average of their orbitals (linear weights).
    system = System(Supercell(((2, 1), (0, 2))), n_up=3, n_down=1, coupling=0.0, phase=math.radians(30))
    wf = make_wavefunction(system, dataclasses.replace(SMALL, prior_anchors=3), RANGE)
    params = _zero_neural_orbitals(wf.init(jax.random.PRNGKey(3)))
    assert params["params"]["orbitals"]["prior_scale_up"].shape == (3, SMALL.n_determinants, 3, 2)
    lp, orbitals = fast_jit(wf.log_psi), fast_jit(wf.orbitals)
    xs = _positions(system, 3, 7)
    for depth in (0.0, 5.0, 10.0):
        exact = slater_log_psi(noninteracting_ground_state(system, depth), system.n_up)
        diff = np.array([complex(lp(params, x, jnp.asarray([depth])) - exact(None, x, None)) for x in xs])
        np.testing.assert_allclose(np.exp(diff - diff[0]), 1.0, atol=1e-9)
    # at V = 7.5: half the V = 5 orbitals plus half the V = 10 ones (column by column)
    up = [orbitals(params, xs[0], jnp.asarray([v]))[0][0] for v in (5.0, 7.5, 10.0)]
    np.testing.assert_allclose(up[1], 0.5 * (up[0] + up[2]), atol=1e-12)
    # and the V = 5 and V = 10 orbitals really differ (the test would not see a constant prior)
    assert np.max(np.abs(up[0] - up[2])) > 1e-2 * np.max(np.abs(up[0]))


def test_plane_wave_determinant_is_the_free_electron_wavefunction():
    # 3×3 supercell, 7 electrons at V = 0: Γ plus the 6 shortest supercell reciprocal vectors
    sc = Supercell.diagonal(3)
    system = System(sc, n_up=7, coupling=0.0)
    cfg = dataclasses.replace(SMALL, orbital_prior=False)
    wf = make_wavefunction(system, cfg, ((0.0, 0.0),))
    params = _perturbed(wf.init(jax.random.PRNGKey(14)), jax.random.PRNGKey(15))
    head = params["params"]["orbitals"]["head_up"]
    head["kernel"] = jnp.zeros_like(head["kernel"])
    n_det, n = cfg.n_determinants, 7
    head["bias"] = jnp.zeros_like(head["bias"]).at[: n_det * n].set(1.0)  # real part 1, imaginary 0: a ≡ 1
    jas = params["params"]["jastrow"]["u_parallel"]["out"]
    jas["kernel"], jas["bias"] = jnp.zeros_like(jas["kernel"]), jnp.zeros_like(jas["bias"])

    q = lattice_points(sc.reciprocal, 1.01 * np.linalg.norm(sc.reciprocal[0]))
    assert len(q) == 7

    def analytic(x):
        return np.linalg.slogdet(np.exp(1j * np.asarray(x) @ q.T))

    xs = _positions(system, 3, 16)
    lp = fast_jit(wf.log_psi)
    for a, b, c in ((0, 1, 0.0), (1, 2, 3.0), (0, 2, 9.0)):  # the condition must not matter (FiLM perturbed)
        d_model = lp(params, xs[a], jnp.asarray([c])) - lp(params, xs[b], jnp.asarray([c]))
        (sa, la), (sb, lb) = analytic(xs[a]), analytic(xs[b])
        assert float(d_model.real) == pytest.approx(la - lb, abs=1e-10)
        np.testing.assert_allclose(np.exp(1j * float(d_model.imag)), sa / sb, atol=1e-10)


def test_real_output():
    # real ψ (all occupied k time-reversal invariant in a 2×2 supercell), no position wrapping
    system = System(Supercell.diagonal(2), n_up=4, n_down=1, coupling=0.0, phase=math.radians(30))
    depth = 3.0
    cfg = dataclasses.replace(SMALL, complex_output=False, reference_depth=depth, wrap_positions=False)
    wf = make_wavefunction(system, cfg, RANGE)
    params = wf.init(jax.random.PRNGKey(17))
    apply = fast_jit(wf.apply)
    xs = _positions(system, 3, 18)
    cond = jnp.asarray([depth])
    assert jax.eval_shape(wf.log_psi, params, xs[0], cond).dtype == jnp.float64
    up, _ = jax.eval_shape(wf.orbitals, params, xs[0], cond)
    assert up.dtype == jnp.float64

    # antisymmetric (sign flip) and periodic (no help from wrapping) with random parameters
    noisy = _perturbed(params, jax.random.PRNGKey(19))
    phase, logabs, _ = apply(noisy, xs[0], cond)
    phase_s, logabs_s, _ = apply(noisy, xs[0][jnp.array([1, 0, 2, 3, 4])], cond)
    assert {float(phase), float(phase_s)} == {0.0, float(np.pi)}
    np.testing.assert_allclose(logabs_s, logabs, rtol=1e-12)
    for e, shift in ((0, system.supercell.lattice[0]), (4, -3 * system.supercell.lattice[1])):
        phase_t, logabs_t, _ = apply(noisy, xs[0].at[e].add(shift), cond)
        assert float(phase_t) == float(phase)
        np.testing.assert_allclose(logabs_t, logabs, rtol=1e-10)

    # neural amplitude off: ψ = const × the exact non-interacting ground state
    exact = fast_jit(slater_log_psi(noninteracting_ground_state(system, depth), system.n_up))
    params = _zero_neural_orbitals(params)
    ratios = []
    for x in xs:
        phase, logabs, _ = apply(params, x, cond)
        ref = exact(None, x, None)
        ratios.append(np.exp(logabs - ref.real + 1j * (phase - ref.imag)))
    np.testing.assert_allclose(np.array(ratios) / ratios[0], 1.0, atol=1e-9)


def test_real_output_requires_conjugation_closed_occupation():
    system = System(Supercell.diagonal(3), n_up=2, coupling=0.0)  # Γ and one k ≠ -k
    with pytest.raises(ValueError, match="complex_output"):
        make_wavefunction(system, dataclasses.replace(SMALL, complex_output=False), ((0.0, 0.0),))


def test_learnable_prior_starts_as_the_prior_and_moves_each_plane_wave_coefficient():
    # learnable_prior: at initialisation ψ equals the model without it (same other parameters);
    # with the anchor-0 correction δ set, the V = 0 orbitals (neural amplitude off) are the plane-wave
    # sum e^{ik·r} Σ_G (c_G + δ_G s_G) e^{iG·r}, s_G the largest |c_G| over the anchors, evaluated
    # here in NumPy from the anchors' tables.
    system = System(Supercell(((2, 1), (0, 2))), n_up=3, n_down=1, coupling=0.0, phase=math.radians(30))
    plain = make_wavefunction(system, dataclasses.replace(SMALL, prior_anchors=3), RANGE)
    wf = make_wavefunction(system, dataclasses.replace(SMALL, prior_anchors=3, learnable_prior=True), RANGE)
    params = _zero_neural_orbitals(wf.init(jax.random.PRNGKey(3)))
    orb = params["params"]["orbitals"]
    base = {"params": {**params["params"], "orbitals": {k: v for k, v in orb.items() if not k.startswith("prior_coef")}}}
    xs = _positions(system, 3, 7)
    lp, lp_plain = fast_jit(wf.log_psi), fast_jit(plain.log_psi)
    for x in xs:
        assert complex(lp(params, x, jnp.asarray([2.0]))) == pytest.approx(complex(lp_plain(base, x, jnp.asarray([2.0]))),
                                                                           abs=1e-10)
    anchors = wf.reference.anchors
    rng = np.random.default_rng(2)
    delta = {}
    for spin, name in enumerate(("up", "down")):
        table = orb[f"prior_coefficients_{name}"]
        d = rng.normal(size=table.shape[1:]) * 0.3
        delta[spin] = d[..., 0] + 1j * d[..., 1]
        orb[f"prior_coefficients_{name}"] = jnp.asarray(table).at[0].set(d)
    up, down = fast_jit(wf.orbitals)(params, xs[0], jnp.asarray([0.0]))
    for spin, (mat, pos) in enumerate(((up, xs[0][:3]), (down, xs[0][3:]))):
        c = anchors.coefficients[spin][0]
        c = c + delta[spin] * np.abs(anchors.coefficients[spin]).max(axis=0)  # each one's largest size
        pos = np.asarray(pos)
        expect = np.exp(1j * pos @ anchors.kpoints[spin][0].T) * (np.exp(1j * pos @ anchors.gvectors.T) @ c)
        for det in range(SMALL.n_determinants):
            np.testing.assert_allclose(mat[det], expect, atol=1e-10)
    assert np.max(np.abs(delta[0])) > 0.1  # the correction is on


def test_learnable_prior_needs_the_prior():
    with pytest.raises(ValueError, match="learnable_prior"):
        dataclasses.replace(SMALL, orbital_prior=False, learnable_prior=True)


@pytest.mark.parametrize("anchors", [1, 3])
def test_without_the_additive_orbitals_the_model_is_the_modulated_prior(anchors):
    # additive_orbitals = false: ψ is the default model's with its additive amplitude a set to zero
    # (same values of every other parameter, all perturbed at random, the modulation b included),
    # so with test_prior_modulation_multiplies_the_band_orbitals each orbital is (c + b(h_i)) φ_j:
    # small wherever the prior orbital is
    system = System(Supercell(((2, 1), (0, 2))), n_up=3, n_down=1, coupling=3.0, phase=math.radians(30))
    spec = dataclasses.replace(SMALL, prior_anchors=anchors, prior_modulation=True)
    full = make_wavefunction(system, spec, RANGE)
    bare = make_wavefunction(system, dataclasses.replace(spec, additive_orbitals=False), RANGE)
    params = _perturbed(bare.init(jax.random.PRNGKey(4)), jax.random.PRNGKey(5))
    assert not any(k.startswith("head_") for k in params["params"]["orbitals"])
    reference = full.init(jax.random.PRNGKey(4))
    orbitals = dict(params["params"]["orbitals"])
    for name in ("head_up", "head_down"):
        orbitals[name] = jax.tree.map(jnp.zeros_like, reference["params"]["orbitals"][name])
    with_zero_heads = {"params": {**params["params"], "orbitals": orbitals}}
    lp, lp_full = fast_jit(bare.log_psi), fast_jit(full.log_psi)
    for x in _positions(system, 3, 9):
        for depth in (1.0, 8.0):
            c = jnp.asarray([depth])
            assert complex(lp(params, x, c)) == pytest.approx(complex(lp_full(with_zero_heads, x, c)), abs=1e-10)
    # and the amplitude a, once nonzero, does enter the default model
    with_heads = {"params": {**params["params"], "orbitals": {
        **orbitals, "head_up": _perturbed({"h": orbitals["head_up"]}, jax.random.PRNGKey(6))["h"]}}}
    assert abs(complex(lp(params, x, c)) - complex(lp_full(with_heads, x, c))) > 1e-4


def test_the_orbitals_without_the_additive_term_need_the_modulated_prior():
    for spec in (dict(orbital_prior=False, prior_modulation=True), dict(orbital_prior=True, prior_modulation=False)):
        with pytest.raises(ValueError, match="additive_orbitals = false needs"):
            dataclasses.replace(SMALL, additive_orbitals=False, **spec)


def test_without_the_additive_orbitals_the_determinants_start_different():
    # without the additive head every per-determinant parameter but the modulation's starts equal
    # across determinants (and equal determinants get equal updates for ever): the modulation's
    # random start (orbital_init_scale) makes them differ; at scale 0 they are the same
    system = System(Supercell(((2, 1), (0, 2))), n_up=3, n_down=1, coupling=3.0, phase=math.radians(30))
    x = _positions(system, 1, 3)[0]
    for scale in (0.1, 0.0):
        spec = dataclasses.replace(SMALL, prior_modulation=True, additive_orbitals=False, orbital_init_scale=scale)
        wf = make_wavefunction(system, spec, RANGE)
        up, _ = fast_jit(wf.orbitals)(wf.init(jax.random.PRNGKey(0)), x, jnp.asarray([4.0]))
        gap = float(np.max(np.abs(np.asarray(up[0]) - np.asarray(up[1]))) / np.max(np.abs(np.asarray(up[0]))))
        assert (gap > 1e-3) if scale > 0 else (gap == 0.0), (scale, gap)
