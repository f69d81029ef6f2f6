"""The optimisers: kernel-form SR (explicit reference against the parameter-space formulas; the
on-the-fly step against the explicit one), the float32-robust kernel solve, the schedule, the
Fisher-norm cap and the optimiser registry."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qernel import optim
from qernel.optim import Samples, learning_rate_schedule, solve_kernel
from qernel.optim.reference import ExplicitSPRING, fisher_norm_scale, spring_direction, sr_matrices
from qernel.optim.sr import SPRING, centred_kernel


@pytest.mark.parametrize("m,p", [(12, 40), (40, 12)])
def test_minsr_equals_parameter_space_sr(m, p, x64):
    rng = np.random.default_rng(0)
    o = jnp.asarray(rng.normal(size=(m, p)))
    eps = jnp.asarray(rng.normal(size=m))
    lam = 1e-2
    # the same step from the P×P matrix: (OᵀO + λ)⁻¹ Oᵀ ε (push-through identity)
    expected = np.linalg.solve(o.T @ o + lam * np.eye(p), o.T @ eps)
    for solver in ("cholesky", "eigh"):
        phi = spring_direction(o, eps, jnp.zeros(p), lam, 0.0, solver)
        np.testing.assert_allclose(phi, expected, rtol=1e-9, atol=1e-12)


def test_spring_momentum_solves_the_regularised_problem(x64):
    # φ = argmin ‖Oφ − ε‖² + λ‖φ − μ φ_prev‖² = (OᵀO + λ)⁻¹ (Oᵀε + λ μ φ_prev)
    rng = np.random.default_rng(1)
    m, p, lam, mu = 10, 30, 3e-2, 0.9
    o, eps, prev = (jnp.asarray(rng.normal(size=s)) for s in ((m, p), (m,), (p,)))
    phi = spring_direction(o, eps, prev, lam, mu)
    expected = np.linalg.solve(o.T @ o + lam * np.eye(p), o.T @ eps + lam * mu * prev)
    np.testing.assert_allclose(phi, expected, rtol=1e-9, atol=1e-12)


def test_sr_matrices_centre_per_group_and_stack_complex_parts(x64):
    rng = np.random.default_rng(2)
    w, p = 8, 5
    jac = rng.normal(size=(w, 2, p))  # rows Re, Im of ∂ log ψ
    eps = rng.normal(size=w) + 1j * rng.normal(size=w)
    group = np.array([0, 1, 0, 1, 1, 0, 1, 1])
    o, e = sr_matrices(jnp.asarray(jac), jnp.asarray(eps), jnp.asarray(group), 2, True)
    assert o.shape == (2 * w, p) and e.shape == (2 * w,)
    d = jac[:, 0] + 1j * jac[:, 1]
    centred = d.copy()
    for g in (0, 1):
        centred[group == g] -= d[group == g].mean(axis=0)
    # Oᵀε = (1/W) Re Σ_w ε_w^* (∂log ψ_w − mean_g): half the unbiased energy gradient
    np.testing.assert_allclose(o.T @ e, np.real(np.conj(eps) @ centred) / w, rtol=1e-12)
    # OᵀO = Re S, S = (1/W) Σ (∂log ψ − mean)^† (∂log ψ − mean)
    np.testing.assert_allclose(o.T @ o, np.real(centred.conj().T @ centred) / w, rtol=1e-12)
    o_real, _ = sr_matrices(jnp.asarray(jac), jnp.asarray(eps.real), jnp.asarray(group), 2, False)
    assert o_real.shape == (w, p)


def test_learning_rate_schedule():
    sched = learning_rate_schedule(0.1, 100.0)
    np.testing.assert_allclose([sched(0), sched(100), sched(300)], [0.1, 0.05, 0.025], rtol=1e-6)
    np.testing.assert_allclose(learning_rate_schedule(0.1, 0)(1000), 0.1)


def test_fisher_norm_constraint():
    o = jnp.eye(3)
    delta = jnp.asarray([3.0, 4.0, 0.0])  # ‖Oδ‖ = 5
    assert float(fisher_norm_scale(o, delta, 1.0)) == pytest.approx(0.2)
    assert float(fisher_norm_scale(o, delta, 10.0)) == 1.0
    assert float(fisher_norm_scale(o, delta, 0.0)) == 1.0
    # the on-the-fly form takes O φ and the step size
    assert float(optim.fisher_norm_scale(o @ delta, 0.5, 1.0)) == pytest.approx(0.4)


# -- the on-the-fly step against the explicit Jacobian ---------------------------------------------

def _toy_log_psi(is_complex: bool):
    """A small two-layer network of x (N, 2) and cond (1,): log ψ (complex with a phase head)."""

    def log_psi(params, x, cond):
        h = jnp.tanh(jnp.concatenate([x.reshape(-1), cond]) @ params["w"] + params["b"])
        out = h @ params["v"]
        return out + 1j * (h @ params["u"]) if is_complex else out

    return log_psi


def _toy(is_complex, w=12, n=3, hidden=7, seed=0):
    rng = np.random.default_rng(seed)
    params = {"w": rng.normal(size=(2 * n + 1, hidden)) * 0.5, "b": rng.normal(size=hidden) * 0.1,
              "v": rng.normal(size=hidden), "u": rng.normal(size=hidden)}
    params = jax.tree.map(jnp.asarray, params)
    x = jnp.asarray(rng.uniform(-1, 1, size=(w, n, 2)))
    group = jnp.asarray(np.array([0, 1, 2, 0, 1, 1, 2, 0, 0, 1, 2, 2][:w]))
    cond = jnp.asarray(np.array([0.0, 2.0, 5.0])[np.asarray(group)][:, None])
    e = rng.normal(size=w) + (1j * rng.normal(size=w) if is_complex else 0.0)
    # centred per group as qernel.loss does
    eps = np.array(e)
    for g in range(3):
        eps[np.asarray(group) == g] -= eps[np.asarray(group) == g].mean()
    samples = Samples(x, cond, group, jnp.asarray(e), jnp.asarray(eps))
    return params, samples


def _pair(is_complex, chunk, momentum, log_psi, n_groups=3, damping=1e-3, cap=0.0):
    args = dict(log_psi=log_psi, n_groups=n_groups, is_complex=is_complex, learning_rate=0.05, decay_steps=100.0,
                max_update_norm=cap, damping=damping, momentum=momentum, chunk_size=chunk)
    return SPRING(**args), ExplicitSPRING(**args)


@pytest.mark.parametrize("is_complex,chunk,momentum,cap", [
    (True, 0, 0.9, 0.0), (True, 3, 0.0, 0.0), (False, 6, 0.5, 0.0), (True, 4, 0.9, 1e-3)])
def test_on_the_fly_update_equals_explicit_jacobian_update(is_complex, chunk, momentum, cap, x64):
    """SPRING without the M × P matrix = the explicit-Jacobian SPRING step (float64, to 1e-8):
    per-group centring, Re/Im rows, chunks of walkers, momentum, the Fisher cap, the extra gradient."""
    log_psi = _toy_log_psi(is_complex)
    params, samples = _toy(is_complex)
    new, ref = _pair(is_complex, chunk, momentum, log_psi, cap=cap)
    rng = np.random.default_rng(5)
    flat = jax.flatten_util.ravel_pytree(params)[0]
    state = {"phi": jnp.asarray(rng.normal(size=flat.shape) * 0.1)}
    extra = jax.tree.map(lambda a: jnp.full_like(a, 0.01), params)
    p_new, s_new, st_new = jax.jit(new.update)(params, state, samples, jnp.asarray(3), extra)
    p_ref, s_ref, st_ref = jax.jit(ref.update)(params, state, samples, jnp.asarray(3), extra)
    scale = float(jnp.max(jnp.abs(s_ref["phi"])))
    np.testing.assert_allclose(s_new["phi"], s_ref["phi"], rtol=0, atol=1e-8 * scale)
    for a, b in zip(jax.tree.leaves(p_new), jax.tree.leaves(p_ref)):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(st_new["update_norm"], st_ref["update_norm"], rtol=1e-8)
    if cap:
        assert float(st_new["update_norm"]) == pytest.approx(cap, rel=1e-8)  # the cap was active


def test_centred_kernel_equals_o_ot_in_any_chunking(x64):
    """The kernel accumulated block by block (any chunk size) = O Oᵀ of the explicit matrix, up to
    the row order (chunk i = walkers i, i + n, ...; rows (walker, Re/Im))."""
    from qernel.optim.reference import log_derivatives

    log_psi = _toy_log_psi(True)
    params, s = _toy(True)
    jac, _ = log_derivatives(log_psi, params, s.x, s.cond)
    o, _ = sr_matrices(jac, s.eps, s.group, 3, True)  # rows: all Re, then all Im
    w = s.x.shape[0]
    for chunk in (0, 4, 3):
        k, n = jax.jit(centred_kernel, static_argnums=(0, 5, 6, 7))(log_psi, params, s.x, s.cond, s.group, 3, True,
                                                                     chunk)
        b = w // n
        walker = np.arange(w).reshape(b, n).T.reshape(-1)  # walker of each chunk-order position
        rows = np.stack([walker, walker + w], axis=1).reshape(-1)  # (walker, Re) then (walker, Im)
        np.testing.assert_allclose(k, (o @ o.T)[np.ix_(rows, rows)], rtol=1e-12, atol=1e-14)


@pytest.mark.slow  # ~75 s on the 2-core CPU (compiling both steps of the network in float64)
def test_on_the_fly_equals_explicit_on_the_tiny_wavefunction(pair_system, x64):
    """The same equality on the real network (a one-layer tiny model, complex ψ, two depth groups,
    MoE, determinants, Jastrow), float64."""
    from qernel.model import make_wavefunction

    small = {"n_layers": 1, "d_model": 16, "n_heads": 2, "n_kv_heads": 1, "d_ff": 16, "n_experts": 2, "top_k": 1}
    wf = make_wavefunction(pair_system, small, ((0.0, 4.0),))
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), wf.init(jax.random.PRNGKey(0)))
    w = 8
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.uniform(0, 1.5, size=(w, 2, 2)))
    group = jnp.asarray(np.arange(w) % 2)
    cond = jnp.asarray(np.array([1.0, 3.0])[np.arange(w) % 2][:, None])
    eps = rng.normal(size=w) + 1j * rng.normal(size=w)
    for g in (0, 1):
        eps[np.arange(w) % 2 == g] -= eps[np.arange(w) % 2 == g].mean()
    samples = Samples(x, cond, group, jnp.asarray(eps), jnp.asarray(eps))
    new, ref = _pair(True, 0, 0.9, wf.log_psi, n_groups=2)
    flat = jax.flatten_util.ravel_pytree(params)[0]
    state = {"phi": jnp.asarray(rng.normal(size=flat.shape) * 1e-3)}
    _, s_new, _ = jax.jit(new.update)(params, state, samples, jnp.asarray(0))
    _, s_ref, _ = jax.jit(ref.update)(params, state, samples, jnp.asarray(0))
    scale = float(jnp.max(jnp.abs(s_ref["phi"])))
    np.testing.assert_allclose(s_new["phi"], s_ref["phi"], rtol=0, atol=1e-8 * scale)


# -- the float32-robust solve --------------------------------------------------------------------

def test_rank_deficient_kernel_in_float32_gives_the_pseudo_inverse_solution():
    """O Oᵀ of rank 8 < M = 64 with damping 1e-10: Cholesky of K + λI is NaN in float32; the
    eigendecomposition drops the null space and returns the pseudo-inverse solution."""
    rng = np.random.default_rng(7)
    m, r = 64, 8
    q, _ = np.linalg.qr(rng.normal(size=(m, r)))
    a = q * np.linspace(1.0, 3.0, r)  # singular values 1 ... 3
    k64 = a @ a.T
    rhs64 = rng.normal(size=m)
    k, rhs = jnp.asarray(k64, jnp.float32), jnp.asarray(rhs64, jnp.float32)
    chol = jnp.linalg.cholesky(k + 1e-10 * jnp.eye(m, dtype=jnp.float32))
    assert not np.all(np.isfinite(np.asarray(chol)))  # the failure being guarded against
    y = np.asarray(solve_kernel(k, rhs, 1e-10))
    assert y.dtype == np.float32 and np.all(np.isfinite(y))
    expected = np.linalg.pinv(k64, rcond=1e-6) @ rhs64
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-4 * np.max(np.abs(expected)))


def test_solve_kernel_damping_rules(x64):
    rng = np.random.default_rng(8)
    a = rng.normal(size=(6, 4))
    k = jnp.asarray(a @ a.T)
    rhs = jnp.asarray(rng.normal(size=6))
    # the absolute and relative damping add: λ_eff = λ + λ_rel tr(K)/M
    lam = 0.1 + 0.5 * np.trace(a @ a.T) / 6
    np.testing.assert_allclose(solve_kernel(k, rhs, 0.1, 0.5), np.linalg.solve(a @ a.T + lam * np.eye(6), rhs),
                               rtol=1e-10)
    # a non-symmetric rounding of K is symmetrised
    kn = k.at[0, 1].add(1e-3)
    np.testing.assert_allclose(solve_kernel(kn, rhs, 0.1), solve_kernel(0.5 * (kn + kn.T), rhs, 0.1), rtol=1e-12)
    # a zero kernel with zero damping: every direction dropped, y = 0 (finite)
    np.testing.assert_array_equal(solve_kernel(jnp.zeros((6, 6)), rhs, 0.0), np.zeros(6))


def test_float32_sr_update_with_many_more_parameters_than_walkers_is_finite():
    """W·R = 16 rows, P = 2310 parameters, damping 1e-9 in float32: the update is finite."""
    log_psi = _toy_log_psi(True)
    params, s = _toy(True, w=8, n=5, hidden=210)
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)
    s = Samples(*(jnp.asarray(a, jnp.float32) if jnp.issubdtype(a.dtype, jnp.floating) else
                  (jnp.asarray(a, jnp.complex64) if jnp.iscomplexobj(a) else a) for a in s))
    new, _ = _pair(True, 0, 0.9, log_psi, damping=1e-9, cap=0.03)
    state = new.init(params)
    update = jax.jit(new.update)
    for t in range(3):
        params, state, stats = update(params, state, s, jnp.asarray(t))
        assert all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(params))
        assert np.isfinite(float(stats["update_norm"]))


# -- the registry ----------------------------------------------------------------------------------

def test_registry_builds_each_optimiser_with_its_defaults():
    from qernel.train import TrainConfig

    log_psi = _toy_log_psi(False)
    for name, (lr, cap) in (("sr", (0.05, 0.03)), ("adam", (1e-3, 0.3))):
        cfg = TrainConfig(optimizer=name)
        assert optim.defaults(name) == (lr, cap) and (cfg.lr, cfg.update_cap) == (lr, cap)
        opt = optim.make_optimizer(name, cfg, log_psi=log_psi, n_groups=1, is_complex=False)
        assert opt.name == name and hasattr(opt, "init") and hasattr(opt, "update")
    with pytest.raises(ValueError, match="optimizer must be one of"):
        optim.make_optimizer("kfac", TrainConfig(), log_psi=log_psi, n_groups=1, is_complex=False)
