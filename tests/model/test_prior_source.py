"""The Hartree–Fock orbital prior (ModelConfig.prior_source = "hartree_fock"), against the HF solver.

At an anchor depth the prior's orbitals must span the occupied space of the Hartree–Fock
solution that `qernel.hartree_fock.hartree_fock` finds on its own (the same starts and cutoff),
and the model with its neural parts at zero must be that determinant: log ψ differences between
configurations equal the HF determinant's (the cusp-free Jastrow is zero at initialisation).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qernel.hartree_fock import hartree_fock, orbital_values
from qernel.hartree_fock_targets import cached_hartree_fock_targets
from qernel.lattice import Supercell
from qernel.model import make_wavefunction
from qernel.reference import HFOptions, choose_shells, hartree_fock_sweep
from qernel.system import System

SYSTEM = System(Supercell.diagonal(2), n_up=2, n_down=1, coupling=4.0, phase=np.deg2rad(45.0))
ANCHORS = (2.0, 8.0)


def _projector(phi):
    q, _ = np.linalg.qr(phi)
    return q @ q.conj().T


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory):
    with jax.enable_x64(True):
        wf = make_wavefunction(SYSTEM, {"preset": "tiny", "prior_anchors": 2, "prior_source": "hartree_fock",
                                        "orbital_init_scale": 0.0, "jastrow_cusp": False, "dtype": "float64"},
                               (ANCHORS,))
        yield wf, wf.init(jax.random.PRNGKey(0))


@pytest.fixture(scope="module")
def hf_solutions():
    """The HF solutions at the anchors, found by the HF solver itself (the prior's options)."""
    options = HFOptions()
    shells, _ = choose_shells(SYSTEM, options)
    return {v: hartree_fock(SYSTEM, v, shells=shells, n_starts=options.starts, seed=0, max_iter=200,
                            search_shells=options.search_shells) for v in ANCHORS}


def test_prior_spans_the_hartree_fock_solution_at_each_anchor(hf_model, hf_solutions):
    wf, _ = hf_model
    points = SYSTEM.supercell.to_cart(np.random.default_rng(0).uniform(size=(40, 2)))
    for v, hf in hf_solutions.items():
        assert hf.converged
        for spin in (0, 1):
            exact = orbital_values(hf, spin, points)
            prior = wf.prior_orbital_values(points, v)[spin]
            assert np.abs(_projector(prior) - _projector(exact)).max() < 1e-8, (v, spin)


def test_model_with_zero_neural_parts_is_the_hartree_fock_determinant(hf_model, hf_solutions):
    wf, params = hf_model
    v = ANCHORS[1]
    hf = hf_solutions[v]
    x = SYSTEM.supercell.to_cart(np.random.default_rng(1).uniform(size=(6, SYSTEM.n_electrons, 2)))

    def log_det(r):
        up = np.linalg.slogdet(orbital_values(hf, 0, r[:SYSTEM.n_up]))
        dn = np.linalg.slogdet(orbital_values(hf, 1, r[SYSTEM.n_up:]))
        return up[1] + dn[1]

    with jax.enable_x64(True):
        cond = jnp.full((len(x), 1), v)
        model = np.asarray(jax.vmap(wf.log_psi, (None, 0, 0))(params, jnp.asarray(x), cond).real)
    exact = np.array([log_det(r) for r in x])
    np.testing.assert_allclose(model - model[0], exact - exact[0], atol=1e-8)


def test_cache_is_read_and_a_corrupt_file_is_recomputed(tmp_path, monkeypatch):
    import qernel.hartree_fock_cache as cache

    first = cached_hartree_fock_targets(SYSTEM, [3.0], directory=tmp_path, shells=2.0)
    files = list(tmp_path.glob("hartree_fock_*.npz"))
    assert len(files) == 1
    solve = cache.hartree_fock

    def refuse(*args, **kwargs):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(cache, "hartree_fock", refuse)
    again = cached_hartree_fock_targets(SYSTEM, [3.0], directory=tmp_path, shells=2.0)
    for a, b in zip(first.coefficients, again.coefficients):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(first.energies, again.energies)
    # the meV labels of a system do not change its Hamiltonian: the same entry
    import dataclasses

    from qernel.units import PhysicalParameters

    labelled = dataclasses.replace(SYSTEM, physical=PhysicalParameters(0.35, 5.0, 8.031))
    labelled_again = cached_hartree_fock_targets(labelled, [3.0], directory=tmp_path, shells=2.0)
    np.testing.assert_array_equal(labelled_again.energies, first.energies)
    monkeypatch.setattr(cache, "hartree_fock", solve)
    for junk in (b"", b"PK\x03\x04junk"):
        files[0].write_bytes(junk)
        redone = cached_hartree_fock_targets(SYSTEM, [3.0], directory=tmp_path, shells=2.0)
        np.testing.assert_allclose(redone.energies, first.energies)
        assert files[0].stat().st_size > 100  # rewritten


def test_reference_rule_and_prior_share_each_solution(tmp_path, monkeypatch):
    """The sweep's HF reference (here in 2 worker processes, as the workflow's rule runs it)
    remembers each depth's solution under the options' key: a prior with the same options then
    solves nothing, and its determinant's energy is the reference energy."""
    import qernel.hartree_fock_cache as cache

    depths = [2.0, 8.0]
    options = HFOptions(shells=2.0, search_shells=2.0)
    ds = hartree_fock_sweep(SYSTEM, depths, None, options, seed=0, cache_directory=tmp_path, workers=2)
    assert len(list(tmp_path.glob("hartree_fock_*.npz"))) == len(depths)

    def refuse(*args, **kwargs):
        raise AssertionError("the prior solved HF again")

    monkeypatch.setattr(cache, "hartree_fock", refuse)
    t = cached_hartree_fock_targets(SYSTEM, depths, reference_depth=5.0, shells=2.0, search_shells=2.0,
                                    starts=options.starts, directory=tmp_path)
    np.testing.assert_allclose(t.energies / SYSTEM.n_electrons, ds["hf_energy"].values, rtol=0, atol=1e-12)


def test_needs_anchors_and_a_depth_range():
    with pytest.raises(ValueError, match="prior_source.*prior_anchors"):
        make_wavefunction(SYSTEM, {"preset": "tiny", "prior_source": "hartree_fock"}, ((0.0, 1.0),))
    with pytest.raises(ValueError, match="prior_source: hartree_fock needs a depth range"):
        make_wavefunction(SYSTEM, {"preset": "tiny", "prior_anchors": 2, "prior_source": "hartree_fock"},
                          ((5.0, 5.0),))
