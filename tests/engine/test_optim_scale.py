"""SPRING with far more parameters than walkers (P ≫ M, a rank-deficient kernel) and the matmul
precision of the step. The `paper` preset itself (9.6M parameters) is run by
benchmarks/bench_paper.py and benchmarks/gpu_check.sh: compiling its step takes minutes on a CPU."""

import math

import jax
import numpy as np
import pytest

from qernel.lattice import Supercell
from qernel.system import System
from qernel.train import TrainConfig


#: A model with P ≈ 2.7e5 parameters, 10⁴ × the kernel's rows at 8 walkers (M = 16 for complex
#: ψ), with every piece of the paper preset (GQA, MoE, several determinants), fast to compile.
WIDE = {"d_model": 32, "n_layers": 1, "n_heads": 4, "n_kv_heads": 2, "n_experts": 4, "top_k": 2, "d_ff": 1024,
        "n_determinants": 4}


@pytest.mark.slow  # 20 SR steps of a 2.7e5-parameter model
def test_far_more_parameters_than_walkers_rejects_no_sr_step(tmp_path):
    """20 SR steps of a model with P ≫ M on the demo system in float32 with the default damping:
    no step is rejected (max_retries = 0 would stop the run with FloatingPointError), every
    energy is finite and the Fisher-norm cap holds. Issue 14 saw a non-finite update at step 1 on
    a GPU with the Cholesky solve of the same rank-deficient kernel."""
    from qernel.model import ModelConfig, make_wavefunction
    from qernel.train import run_training

    system = System(Supercell.diagonal(3), n_up=6, n_down=0, coupling=10.62, phase=math.radians(45))
    wf = make_wavefunction(system, ModelConfig.from_spec(WIDE), ((0.0, 10.0),))
    n_params = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(wf.init(jax.random.PRNGKey(0))))
    assert n_params > 10_000 * 2 * 8  # P ≫ M (complex ψ: 2 kernel rows per walker)
    cfg = TrainConfig(steps=20, batch_size=8, pretrain_steps=0, burn_in=10, mcmc_steps=2, max_retries=0,
                      max_vmap_batch_size=4, checkpoint_every=100, log_every=100)
    result = run_training(system, wf, [0.0, 10.0], cfg, tmp_path, seed=0, progress=False)
    h = result.history
    assert len(h["step"]) == 20 and np.all(h["retries"] == 0)
    assert np.all(np.isfinite(h["energy_per_depth"])) and np.all(np.isfinite(h["update_norm"]))
    assert np.all(h["update_norm"] <= 0.03 * (1 + 1e-4))  # the Fisher-norm cap holds


@pytest.mark.parametrize("precision,expect", [("highest", True), ("default", False)])
def test_matmul_precision_is_applied_to_the_training_step(precision, expect):
    """TrainConfig.matmul_precision reaches every matrix product of the lowered step: with
    "highest" the dots carry HIGHEST operand precision in the HLO, with "default" none does."""
    from qernel.memory import lowered_step

    system = System(Supercell.diagonal(2), n_up=2, n_down=0, coupling=1.0, phase=math.radians(45))
    cfg = TrainConfig(batch_size=4, mcmc_steps=1, matmul_precision=precision)
    small = {"n_layers": 1, "d_model": 16, "n_heads": 2, "n_kv_heads": 1, "d_ff": 16, "n_experts": 2, "top_k": 1}
    lowered, _ = lowered_step(system, small, cfg, [0.0, 1.0])
    text = lowered.as_text()
    n_dots = text.count("stablehlo.dot_general")
    n_highest = text.count("precision = [HIGHEST, HIGHEST]")
    assert n_dots > 10
    if expect:
        assert n_highest == n_dots
    else:
        assert n_highest == 0
    assert jax.config.jax_default_matmul_precision is None  # the setting does not leak out of the step
