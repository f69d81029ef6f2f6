"""Reblocking and autocorrelation times against series with known statistics."""

import warnings

import numpy as np
import pytest
from scipy.signal import lfilter

from qernel.stats import Reblocker, autocorrelation_time, reblock


def ar1(rng, rho, t, m, burn=2000):
    """m independent stationary AR(1) series x_t = ρ x_{t-1} + ε_t (ε ~ N(0, 1)); (t, m)."""
    e = rng.standard_normal((t + burn, m))
    return lfilter([1.0], [1.0, -rho], e, axis=0)[burn:]


def ar1_stderr(rho, t):
    """Analytic standard error of the mean: σ²/T (1+ρ)/(1−ρ), σ² = 1/(1−ρ²)."""
    return np.sqrt(1.0 / (1.0 - rho**2) / t * (1.0 + rho) / (1.0 - rho))


@pytest.mark.parametrize("rho", [0.5, 0.9])
def test_ar1_stderr_matches_analytic_within_10_percent(rho):
    t = 2**20
    x = ar1(np.random.default_rng(11), rho, t, 4)
    exact = ar1_stderr(rho, t)
    res = reblock(x)  # default criterion
    assert np.all(res.converged)
    np.testing.assert_allclose(res.stderr / exact, 1.0, atol=0.10)
    tau_exact = (1 + rho) / (1 - rho)
    np.testing.assert_allclose(res.tau / tau_exact, 1.0, atol=0.2)
    np.testing.assert_allclose(res.n_eff, t / res.tau)
    # the blocks are much longer than the correlation time
    assert np.all(res.block_size >= 4 * tau_exact)
    res_j = reblock(x, criterion="jonsson")
    np.testing.assert_allclose(res_j.stderr / exact, 1.0, atol=0.10)


def test_iid_stderr_matches_naive():
    t = 2**16
    x = np.random.default_rng(3).standard_normal((t, 8)) * 2.5 + 7.0
    naive = x.std(axis=0, ddof=1) / np.sqrt(t)
    for criterion in ("wolff", "jonsson"):
        res = reblock(x, criterion=criterion)
        np.testing.assert_allclose(res.stderr / naive, 1.0, atol=0.10)
        np.testing.assert_allclose(res.naive_stderr, naive, rtol=1e-10)
        np.testing.assert_allclose(res.mean, x.mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(res.variance, x.var(axis=0, ddof=1), rtol=1e-9)


@pytest.mark.parametrize("rho", [0.0, 0.8])
def test_autocorrelation_time_ar1(rho):
    x = ar1(np.random.default_rng(5), rho, 2**18, 3)
    tau = autocorrelation_time(x)
    np.testing.assert_allclose(tau, (1 + rho) / (1 - rho), rtol=0.1)
    assert np.ndim(autocorrelation_time(x[:, 0])) == 0


def direct_blocking(x):
    """Flyvbjerg–Petersen table computed the textbook way: sqrt(Var/(n−1)) per level."""
    out = []
    while len(x) >= 2:
        out.append(np.sqrt(x.var(axis=0, ddof=1) / len(x)))
        n = len(x) // 2
        x = 0.5 * (x[0:2 * n:2] + x[1:2 * n:2])
    return np.array(out)


def test_online_batches_equal_one_pass_and_textbook():
    x = ar1(np.random.default_rng(0), 0.7, 3001, 5) + 100.0  # odd length, large offset
    one = Reblocker().update(x).result()
    online = Reblocker()
    i = 0
    for size in [1, 2, 7, 64, 1, 500, 13, 2000, 413]:
        online.update(x[i:i + size])
        i += size
    assert i == len(x)
    on = online.result()
    np.testing.assert_allclose(on.stderr_by_level, one.stderr_by_level, rtol=1e-9)
    np.testing.assert_allclose(on.mean, x.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(one.stderr_by_level, direct_blocking(x), rtol=1e-8)
    np.testing.assert_array_equal(on.block_size, one.block_size)


def test_jonsson_statistic_matches_direct_autocovariance():
    """The online lag-1 sums reproduce the autocovariance test computed directly."""
    x = ar1(np.random.default_rng(2), 0.6, 2**12, 1)[:, 0]
    res = reblock(x, criterion="jonsson")
    # direct implementation of the test (power-of-two length, as in Jonsson's paper)
    from scipy.stats import chi2
    y, terms = x.copy(), []
    while len(y) >= 2:
        n = len(y)
        mu = y.mean()
        gamma = np.sum((y[:-1] - mu) * (y[1:] - mu)) / n
        terms.append(n * (gamma / y.var()) ** 2)
        y = 0.5 * (y[0::2] + y[1::2])
    terms = np.array(terms)
    m = np.cumsum(terms[::-1])[::-1]
    d = len(terms)
    passed = m < chi2.ppf(0.99, d - np.arange(d))
    assert res.block_size == 2 ** int(np.argmax(passed))


def test_joint_linear_combination_equals_direct():
    rng = np.random.default_rng(4)
    a = ar1(rng, 0.5, 5000, 6).reshape(5000, 2, 3)
    w = np.array([1.0, -0.3, 2.0])
    joint = Reblocker(joint=True).update(a[:1000]).update(a[1000:]).result(w)
    direct = reblock(a @ w)
    np.testing.assert_allclose(joint.stderr_by_level, direct.stderr_by_level, rtol=1e-8)
    np.testing.assert_allclose(joint.mean, direct.mean, rtol=1e-12)
    comp = Reblocker(joint=True).update(a).component_result(1)
    np.testing.assert_allclose(comp.stderr, reblock(a[..., 1]).stderr, rtol=1e-10)


def test_degenerate_series():
    const = reblock(np.full(100, 3.0))
    assert const.mean == 3.0 and const.stderr == 0.0 and const.tau == 1.0
    single = Reblocker().update(np.array([1.0])).result()
    assert single.mean == 1.0 and np.isnan(single.stderr)
    with pytest.raises(ValueError):
        Reblocker().result()


def test_warns_without_plateau():
    x = ar1(np.random.default_rng(1), 0.999, 256, 1)[:, 0]
    with pytest.warns(RuntimeWarning, match="no plateau"):
        res = reblock(x)
    assert not res.converged
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reblock(np.random.default_rng(0).standard_normal(4096))
