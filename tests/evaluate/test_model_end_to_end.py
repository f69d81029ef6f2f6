"""evaluate_depth end to end on a (very small) `qernel.model` checkpoint."""

import math

import jax
import numpy as np
import pytest

from qernel import checkpoint
from qernel import io as qio
from qernel.evaluate import EvalConfig, evaluate_depth
from qernel.lattice import Supercell
from qernel.observables import MOIRE_CELL_AREA, compute_observables
from qernel.system import System

model = pytest.importorskip("qernel.model")

SPEC = {"d_model": 8, "n_layers": 1, "n_heads": 2, "n_kv_heads": 1, "n_experts": 2, "top_k": 1, "d_ff": 8,
        "film_hidden": 8, "n_determinants": 1, "jastrow_hidden": 4, "jastrow_shells": 1, "supercell_shells": 1}


def test_tiny_model_checkpoint_end_to_end(tmp_path):
    system = System(Supercell.diagonal(2), n_up=2, n_down=0, coupling=1.0, phase=math.radians(45))
    wf = model.make_wavefunction(system, model.ModelConfig.from_spec(SPEC), cond_range=((0.0, 4.0),))
    params = wf.init(jax.random.PRNGKey(0))
    meta = {"system": {"supercell": [[2, 0], [0, 2]], "n_up": 2, "n_down": 0, "coupling": 1.0},
            "train_config": {"dtype": "float32"}}
    path = checkpoint.save_model(tmp_path / "pretrain" / "model.msgpack", params, meta)
    cfg = EvalConfig.from_dict({"samples": 8 * 8, "batch_size": 8, "mcmc_steps": 2, "burn_in": 10, "density_bins": 3,
                                "structure_factor_shells": 1.0, "pair_correlation_bins": 4})
    out = tmp_path / "depth" / "2.000" / "evaluation.nc"
    attrs = qio.provenance_attrs({"system": meta["system"], "evaluate": cfg.to_dict()}, "tiny", 3.3756)
    evaluate_depth(system, wf, path, 2.0, cfg, out, seed=5, attrs=attrs)
    ds = qio.read_netcdf(out)
    assert ds.sizes["step"] == 8 and ds.attrs["dtype"] == "float32" and ds.attrs["depth"] == 2.0
    assert ds.attrs["model_sha256"] and ds.attrs["config_hash"] == attrs["config_hash"]
    for name in ("energy", "kinetic_energy", "potential_energy", "interaction_energy", "local_energy_variance"):
        assert np.all(np.isfinite(ds[name].values)), name
    np.testing.assert_allclose(
        (ds["kinetic_energy"] + ds["potential_energy"] + ds["interaction_energy"]).values, ds["energy"].values,
        rtol=1e-5, atol=1e-5)
    assert 0.0 < float(ds["acceptance"].mean()) < 1.0
    obs = compute_observables(out, out.with_name("observables.nc"))
    np.testing.assert_allclose(float(obs["density"].mean()) * MOIRE_CELL_AREA, system.filling, rtol=1e-5)
    assert obs.attrs["depth_meV"] == pytest.approx(2.0 * 3.3756)

    # a checkpoint of another model size is refused, naming the file
    other = model.make_wavefunction(system, model.ModelConfig.from_spec({**SPEC, "d_model": 16, "d_ff": 16}),
                                    cond_range=((0.0, 4.0),))
    with pytest.raises(ValueError, match="does not match the model"):
        evaluate_depth(system, other, path, 2.0, cfg, tmp_path / "other" / "evaluation.nc")
