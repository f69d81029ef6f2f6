"""The memory model of one training step (qernel.memory) against XLA's compiled memory, and the
sweep check that refuses what cannot fit."""

import math

import pytest

from qernel import memory
from qernel.lattice import Supercell
from qernel.model.config import ModelConfig
from qernel.system import System
from qernel.train import TrainConfig


@pytest.mark.parametrize("cells,n,over,walkers,chunk", [
    ((2, 2), 4, {}, 32, 0),
    # chunked: the scan over kernel blocks compiles slowly on CPU (minutes on a loaded 2-core machine)
    pytest.param((2, 2), 4, {}, 64, 16, marks=pytest.mark.slow),
])
def test_memory_model_agrees_with_the_compiled_step(cells, n, over, walkers, chunk):
    """The model's peak is within MODEL_FACTOR of XLA's temp_size_in_bytes of the compiled step
    (CPU; compile only). Measured when the constants were set: 1.05 (W = 32), 1.04 (W = 64),
    0.87 (W = 64 in chunks of 16)."""
    system = System(Supercell.diagonal(*cells), n_up=n, n_down=0, coupling=10.62, phase=math.radians(45))
    model = ModelConfig.from_spec(dict(over))
    cfg = TrainConfig(batch_size=walkers, max_vmap_batch_size=chunk)
    measured = memory.compiled_step_analysis(system, model, cfg, [0.0, 5.0])
    est = memory.step_estimate(n, measured["n_params"], walkers, model, chunk)
    ratio = est.peak_bytes / measured["temp_bytes"]
    assert 1 / memory.MODEL_FACTOR <= ratio <= memory.MODEL_FACTOR, (ratio, est.describe(), measured)


def test_no_jacobian_sized_term_and_chunks_bound_the_sr_memory():
    """The SR terms of the model scale with the chunk, not with walkers × parameters."""
    model = ModelConfig.from_spec("paper")
    big = memory.step_estimate(24, 9_560_000, 4096, model, chunk=64)
    small = memory.step_estimate(24, 9_560_000, 4096, model, chunk=32)
    assert big.terms["jacobian_chunks"] == pytest.approx(2 * small.terms["jacobian_chunks"])
    assert big.terms["jacobian_chunks"] < 4096 * 2 * 9_560_000 * 4 / 20
    with pytest.raises(ValueError, match="do not split"):
        memory.step_estimate(24, 100, 10, model, devices=3)


def _sweep(batch, chunk, gpus=1, gpu_memory_gb=None):
    from qernel import config as qconfig

    res = {"gpu": gpus} if gpu_memory_gb is None else {"gpu": gpus, "gpu_memory_gb": gpu_memory_gb}
    spec = {"system": {"supercell": [[6, 0], [0, 6]], "n_up": 24, "n_down": 0, "units": "moire", "coupling": 10.62,
                       "phase_deg": 45},
            "depths": [0.0, 5.0], "model": "paper",
            "pretrain": {"batch_size": batch, "max_vmap_batch_size": chunk}, "resources": {"pretrain": res}}
    return qconfig.build_sweep("big", spec)


def test_check_sweep_refuses_a_step_that_cannot_fit_and_names_the_keys():
    with pytest.raises(ValueError) as e:
        memory.check_sweep(_sweep(4096, 0))
    msg = str(e.value)
    for key in ("sweeps.big", "pretrain.batch_size", "pretrain.max_vmap_batch_size", "resources.pretrain.gpu",
                "gpu_memory_gb"):
        assert key in msg
    assert "\n" not in msg
    assert memory.check_sweep(_sweep(256, 32)).peak_gb < 0.85 * 80
    with pytest.raises(ValueError):  # the same sweep on a 16 GB GPU
        memory.check_sweep(_sweep(256, 32, gpu_memory_gb=4))


def test_parameter_count_is_remembered_for_the_same_arguments_and_sources(tmp_path, monkeypatch):
    """The workflow's start counts the model's parameters once per working directory
    (parameter_count with a cache_dir): the same count as building the model, and counted anew
    for other arguments or once any source file of the package changed."""
    system = System(Supercell.diagonal(2), n_up=2, n_down=0, coupling=1.0, phase=math.radians(45))
    model, grid = ModelConfig.from_spec("tiny"), ((0.0, 1.0),)
    n = memory.parameter_count(system, model, grid, cache_dir=tmp_path)
    assert n == memory.parameter_count(system, model, grid) > 1000
    assert (tmp_path / memory.PARAMETER_COUNT_CACHE).is_file()
    monkeypatch.setattr(memory, "_n_params", lambda *args: pytest.fail("counted again"))
    assert memory.parameter_count(system, model, grid, cache_dir=tmp_path) == n
    counted = []
    monkeypatch.setattr(memory, "_n_params", lambda *args: counted.append(args) or 7)
    assert memory.parameter_count(system, ModelConfig.from_spec({"d_model": 16}), grid, cache_dir=tmp_path) == 7
    assert memory.parameter_count(system, model, ((0.0, 1.0), (1.0, 2.0)), ("depth", "coupling"),
                                  cache_dir=tmp_path) == 7
    monkeypatch.setattr(memory, "_source_digest", lambda: "an edited package")
    assert memory.parameter_count(system, model, grid, cache_dir=tmp_path) == 7
    assert len(counted) == 3


@pytest.mark.slow  # traces the paper model's initialisation for four systems
def test_paper_sweeps_of_the_config_fit_their_gpus():
    from qernel import config as qconfig

    from pathlib import Path

    sweeps = qconfig.load_config(Path(__file__).resolve().parents[2] / qconfig.DEFAULT_CONFIG_PATH)
    for name in ("paper_6x6", "paper_9x9", "paper_12x12", "paper_15x15"):
        est = memory.check_sweep(sweeps[name])
        assert est.peak_gb <= 0.85 * memory.gpu_memory_gb(sweeps[name])


def test_qernel_info_prints_the_step_memory_and_flops(capsys):
    from pathlib import Path

    from qernel import cli

    config = Path(__file__).resolve().parents[2] / "config" / "config.yaml"
    assert cli.main(["info", "--config", str(config), "--sweep", "demo", "-q"]) == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith("training step (qernel.memory model"))
    assert "GB per device" in line and "FLOPs per step" in line and "jacobian_chunks" in line
    assert "resources.pretrain.gpu_memory_gb" in out


def test_each_site_hop_is_a_forward_pass_of_every_walker():
    """The MCMC block evaluates ψ once per Gaussian move and once per site hop (qernel.mcmc), so
    two more hops add two forward passes per walker to a step's FLOPs; a sweep's estimate takes
    the hops from its `pretrain.hop_moves`."""
    model = ModelConfig.from_spec("tiny")
    no_hops = memory.step_estimate(6, 10_000, 64, model, hop_moves=0)
    hops = memory.step_estimate(6, 10_000, 64, model, hop_moves=2)
    assert hops.flops - no_hops.flops == pytest.approx(2 * 64 * memory.forward_flops(6, model))
    assert hops.peak_bytes == no_hops.peak_bytes  # the hops run in a scan, as the moves do: no more memory
    from qernel import config as qconfig

    spec = {"system": {"supercell": [[2, 0], [0, 2]], "n_up": 4, "n_down": 0, "units": "moire", "coupling": 1.0,
                       "phase_deg": 45}, "depths": [0.0, 5.0], "model": "tiny"}
    est = {h: memory.sweep_estimate(qconfig.build_sweep("s", {**spec, "pretrain": {"hop_moves": h}})).flops
           for h in (0, 3)}
    assert est[3] > est[0]


def test_the_forward_flops_count_the_orbital_heads_the_model_has():
    """One linear head on h_i (d_model → n_det · N outputs per electron) for the additive amplitude
    and one for the modulation: a model without the additive term has one head's multiply–adds
    (n_det · d_model · N² per walker, ×2 FLOPs) fewer."""
    import dataclasses

    both = ModelConfig.from_spec({"prior_modulation": True})
    modulation_only = dataclasses.replace(both, additive_orbitals=False)
    n = 6
    fewer = memory.forward_flops(n, both) - memory.forward_flops(n, modulation_only)
    assert fewer == pytest.approx(2 * both.n_determinants * both.d_model * n * n)
