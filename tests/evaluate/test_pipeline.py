"""evaluate_depth → evaluation.nc → compute_observables → aggregate, on an exact model file.

The "model" is `SlaterModel`: the exact λ = 0 determinant of each depth, saved as a model file
and evaluated in an interacting system (λ = 1). It is an eigenstate of the one-body part, so
for every sample kinetic + moiré = Σ occupied levels exactly, and the total local energy is that
plus the sample's interaction energy: the components and their sum can be checked sample by
sample against `qernel.hamiltonian.potential_energies` on the sampled positions.
"""

import json

import jax
import numpy as np
import pytest
import xarray as xr

from qernel import checkpoint
from qernel import io as qio
from qernel.aggregate import aggregate
from qernel.evaluate import EvalConfig, SamplingInterrupted, evaluate_depth, work_dir
from qernel.hamiltonian import potential_energies
from qernel.observables import compute_observables
from qernel.train import finetune as train_finetune

from .models import SlaterModel

DEPTHS = (1.0, 4.0)
CFG = {"samples": 16 * 24, "batch_size": 16, "mcmc_steps": 3, "burn_in": 30, "density_bins": 4,
       "structure_factor_shells": 1.0, "pair_correlation_bins": 6}


def _system_meta(system):
    return {"supercell": [list(r) for r in system.supercell.matrix], "n_up": system.n_up,
            "n_down": system.n_down, "coupling": system.coupling}


@pytest.fixture(scope="module")
def setup(pair_2x2, tmp_path_factory):
    system = pair_2x2
    model = SlaterModel(system, reference_depth=2.5)
    folder = tmp_path_factory.mktemp("pipeline")
    models = {}
    for v in DEPTHS:  # one exact "model file" per depth (dtype float64 recorded as the pretraining's)
        models[v] = checkpoint.save_model(folder / f"model_{v:g}.msgpack", model.params_at(v),
                                          {"system": _system_meta(system), "train_config": {"dtype": "float64"}})
    return system, model, folder, models


def _run(setup, v, out, callback=None, seed=11, **overrides):
    system, model, folder, models = setup
    cfg = EvalConfig.from_dict({**CFG, **overrides})
    attrs = qio.provenance_attrs({"system": _system_meta(system), "evaluate": CFG}, "test", 2.0)
    return evaluate_depth(system, model, models[v], v, cfg, out, seed=seed, attrs=attrs, callback=callback,
                          finetune=train_finetune)


@pytest.fixture(scope="module")
def evaluated(setup):
    system, model, folder, _ = setup
    records = {}
    for v in DEPTHS:
        rec = records[v] = []

        def keep(t, state, stats, rec=rec):
            rec.append((t, np.asarray(state.positions), float(stats["local_energy_variance"])))

        _run(setup, v, folder / f"{v:g}" / "evaluation.nc", callback=keep)
    return records


def test_components_sum_sample_by_sample(setup, evaluated):
    system, model, folder, _ = setup
    n = system.n_electrons
    for v in DEPTHS:
        ds = qio.read_netcdf(folder / f"{v:g}" / "evaluation.nc")
        e0 = model.ground_state(v).energy
        assert ds.attrs["dtype"] == "float64"  # the model file's pretraining dtype
        assert ds.sizes["step"] == 24 and [t for t, *_ in evaluated[v]] == list(range(1, 25))
        x = np.stack([p for _, p, _ in evaluated[v]])  # (T, W, N, 2): the walkers of every measurement
        with jax.enable_x64(True):
            energies = jax.jit(lambda x: potential_energies(system, x, v))
            pot, inter = (np.asarray(a) for a in energies(x))  # (T, W) per sample
        np.testing.assert_allclose(ds["potential_energy"].values, pot.mean(1) / n, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(ds["interaction_energy"].values, inter.mean(1) / n, rtol=1e-10)
        # kinetic + moiré = Σ ε for every sample, so the total is e0 + inter sample by sample:
        # its walker mean is the stored energy, and its walker variance the stored variance
        np.testing.assert_allclose(ds["energy"].values, (e0 + inter).mean(1) / n, rtol=1e-9)
        np.testing.assert_allclose(ds["local_energy_variance"].values, inter.var(1), rtol=1e-7, atol=1e-12)
        np.testing.assert_allclose([r for *_, r in evaluated[v]], inter.var(1), rtol=1e-7, atol=1e-12)
        np.testing.assert_allclose((ds["kinetic_energy"] + ds["potential_energy"]).values, e0 / n, atol=1e-8)
        np.testing.assert_allclose(
            (ds["kinetic_energy"] + ds["potential_energy"] + ds["interaction_energy"]).values,
            ds["energy"].values, rtol=0, atol=1e-12)
        assert np.std(inter.mean(1)) > 1e-4  # the interaction fluctuates: these checks are not trivial

        obs = compute_observables(folder / f"{v:g}" / "evaluation.nc", folder / f"{v:g}" / "observables.nc")
        # the variance of E_L over all T·W samples, from the per-step moments
        np.testing.assert_allclose(float(obs["variance"]), np.var(e0 + inter, ddof=1), rtol=1e-8)
        assert int(obs["n_samples"]) == inter.size
        np.testing.assert_allclose(float(obs["energy"]), np.mean(e0 + inter) / n, rtol=1e-10)


def test_roundtrip_to_phase_diagram(setup, evaluated):
    system, model, folder, _ = setup
    paths = []
    for v in DEPTHS:
        out = folder / f"{v:g}" / "observables.nc"
        obs = compute_observables(folder / f"{v:g}" / "evaluation.nc", out, attrs={"sweep": "test"})
        paths.append(out)
        # the error bar is the reblocked one of the per-step series, reported with n_eff
        from qernel.stats import reblock

        ev = qio.read_netcdf(folder / f"{v:g}" / "evaluation.nc")
        r = reblock(ev["energy"].values, warn=False)
        assert float(obs["energy_stderr"]) == pytest.approx(float(r.stderr), rel=1e-12)
        assert float(obs["energy_stderr"]) > 0 and float(obs["n_eff"]) > 0
        assert obs.attrs["depth"] == v and obs.attrs["depth_meV"] == pytest.approx(2.0 * v)
        for key in ("config", "config_hash", "qernel_version", "git_commit", "units"):
            assert key in obs.attrs
        assert obs["density"].dims == ("x", "y") and obs["structure_factor"].dims == ("k",)
        assert obs["energy"].attrs["units"] == "E_M"
    diagram = aggregate(paths[::-1], folder / "phase_diagram.nc")  # any order: sorted by V
    again = xr.open_dataset(folder / "phase_diagram.nc")
    try:
        np.testing.assert_allclose(again["V"].values, DEPTHS)
        np.testing.assert_allclose(again["V_meV"].values, 2.0 * np.array(DEPTHS))
        for name in ("energy", "kinetic_energy", "potential_energy", "interaction_energy"):
            assert again[name].dims == ("V",) and again[f"{name}_stderr"].dims == ("V",)
            assert again[name].attrs["units"] == "E_M"
        assert again["density"].dims == ("V", "x", "y")
        assert again["structure_factor"].dims == ("V", "k") and "kx" in again.coords and "ky" in again.coords
        assert "transition_depth_interaction" in again
        n = system.n_electrons
        for i, v in enumerate(DEPTHS):
            e0 = model.ground_state(v).energy / n
            assert float(again["kinetic_energy"][i] + again["potential_energy"][i]) == pytest.approx(e0, abs=1e-8)
            obs = qio.read_netcdf(paths[i])
            assert float(again["energy"][i]) == float(obs["energy"])
            np.testing.assert_array_equal(again["density"][i].values, obs["density"].values)
    finally:
        again.close()
    assert diagram.attrs["sweep"] == "test"


def test_killed_sampling_resumes_to_the_same_chain(setup, evaluated):
    system, model, folder, _ = setup
    out = folder / "resume" / "evaluation.nc"

    def kill_at_7(t, state, stats):
        return t == 7

    with pytest.raises(SamplingInterrupted):
        _run(setup, DEPTHS[0], out, callback=kill_at_7)
    assert not out.exists()
    assert [p.name for _, p in checkpoint.list_checkpoints(work_dir(out) / "sampling")] == ["ckpt_00000007.msgpack"]
    _run(setup, DEPTHS[0], out)  # resumes at step 7
    assert not (work_dir(out) / "sampling").exists()  # sampling checkpoints removed once written
    resumed = qio.read_netcdf(out)
    fresh = qio.read_netcdf(folder / f"{DEPTHS[0]:g}" / "evaluation.nc")  # the same seed, uninterrupted
    for name in ("energy", "kinetic_energy", "local_energy_variance", "density", "rho_k_real", "acceptance"):
        np.testing.assert_allclose(resumed[name].values, fresh[name].values, rtol=1e-12, atol=1e-14)
    # a changed setup does not resume from stale checkpoints: they are kept aside by their
    # setup's hash (qernel.checkpoint.claim), never deleted
    with pytest.raises(SamplingInterrupted):
        _run(setup, DEPTHS[0], out, callback=kill_at_7)
    _run(setup, DEPTHS[0], out, seed=12)
    kept = [p for p in work_dir(out).parent.iterdir() if p.name.startswith(work_dir(out).name + ".")]
    assert len(kept) == 1, kept
    assert [p.name for _, p in checkpoint.list_checkpoints(kept[0] / "sampling")] == ["ckpt_00000007.msgpack"]
    assert not np.allclose(qio.read_netcdf(out)["energy"].values, fresh["energy"].values)


def test_missing_or_bad_checkpoint_is_a_clear_error(setup, tmp_path):
    system, model, folder, models = setup
    cfg = EvalConfig.from_dict(CFG)
    missing = tmp_path / "pretrain" / "model.msgpack"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        evaluate_depth(system, model, missing, 1.0, cfg, tmp_path / "evaluation.nc")
    corrupt = tmp_path / "corrupt.msgpack"
    corrupt.write_bytes(models[1.0].read_bytes()[:-40])  # a truncated file
    with pytest.raises(ValueError, match=str(corrupt)):
        evaluate_depth(system, model, corrupt, 1.0, cfg, tmp_path / "evaluation.nc")
    other = checkpoint.save(tmp_path / "not_a_model.msgpack", {"state": np.zeros(3)})
    with pytest.raises(ValueError, match="not a model file"):
        evaluate_depth(system, model, other, 1.0, cfg, tmp_path / "evaluation.nc")
    wrong = checkpoint.save_model(tmp_path / "wrong.msgpack", {"params": {"w": np.zeros(3)}}, {})
    with pytest.raises(ValueError, match="does not match the model"):
        evaluate_depth(system, model, wrong, 1.0, cfg, tmp_path / "evaluation.nc")
    meta = {"system": {**_system_meta(system), "n_up": 3}}
    other_system = checkpoint.save_model(tmp_path / "other.msgpack", model.params_at(1.0), meta)
    with pytest.raises(ValueError, match="another system"):
        evaluate_depth(system, model, other_system, 1.0, cfg, tmp_path / "evaluation.nc")
    # fine-tuning needs the training function (the evaluation does not import qernel.train)
    with pytest.raises(ValueError, match=r"finetune_steps = 2 needs a training function"):
        evaluate_depth(system, model, models[1.0], 1.0, EvalConfig.from_dict({**CFG, "finetune_steps": 2}),
                       tmp_path / "evaluation.nc")
    assert not (tmp_path / "evaluation.nc").exists()


def test_finetuning_starts_from_the_model_and_resumes(setup, evaluated):
    system, model, folder, models = setup
    out = folder / "finetune" / "evaluation.nc"
    finetune = {"optimizer": "adam", "learning_rate": 1e-3, "burn_in": 6, "mcmc_steps": 3, "moe_loss_weight": 0.0}
    _run(setup, DEPTHS[0], out, finetune_steps=3, finetune=finetune)
    ft = work_dir(out) / "finetune"
    ds = qio.read_netcdf(out)
    assert ds.attrs["finetune_steps"] == 3
    tcfg = json.loads(ds.attrs["finetune_config"])
    assert tcfg["steps"] == 3 and tcfg["pretrain_steps"] == 0 and tcfg["optimizer"] == "adam"
    assert tcfg["dtype"] == "float64" and tcfg["batch_size"] == CFG["batch_size"]
    first = checkpoint.load(checkpoint.checkpoint_path(ft / "checkpoints", 0))
    saved, _ = checkpoint.load_model(models[DEPTHS[0]])
    # fine-tuning started from the loaded model (not from wf.init, which is another depth's determinant)
    np.testing.assert_array_equal(first["state"]["params"]["params"]["c_up_re"], saved["params"]["c_up_re"])
    tuned, _ = checkpoint.load_model(ft / "model.msgpack")
    assert not np.array_equal(tuned["params"]["c_up_re"], saved["params"]["c_up_re"])  # it did train
    np.testing.assert_array_equal(tuned["params"]["g"], saved["params"]["g"])  # lattice data untouched
    train = qio.read_netcdf(ft / "train.nc")
    assert train.sizes["step"] == 3 and np.all(np.isfinite(train["energy"].values))
    # a rerun (e.g. after a kill during sampling) reuses the finished fine-tuning instead of redoing it
    ckpts = {p.name: p.stat().st_mtime_ns for _, p in checkpoint.list_checkpoints(ft / "checkpoints")}
    assert "ckpt_00000000.msgpack" in ckpts and "ckpt_00000003.msgpack" in ckpts
    _run(setup, DEPTHS[0], out, finetune_steps=3, finetune=finetune)
    assert {p.name: p.stat().st_mtime_ns for _, p in checkpoint.list_checkpoints(ft / "checkpoints")} == ckpts
    assert qio.read_netcdf(ft / "train.nc").sizes["step"] == 3


def test_nonfinite_local_energies_are_retried_then_reported(setup, evaluated, monkeypatch, caplog):
    """A step with a non-finite local energy is redone with new random numbers; if it keeps
    failing, the evaluation stops with an error naming the depth and the step."""
    import qernel.evaluate as ev

    real = ev._compiled
    calls = []

    def patched(*args):
        burn, measure = real(*args)

        def flaky(params, state, key):
            new, stats = measure(params, state, key)
            calls.append(1)
            if len(calls) in bad_calls:  # pretend some walkers hit a node
                stats = {**stats, "n_nonfinite": stats["n_nonfinite"] + 2}
            return new, stats

        return burn, flaky

    monkeypatch.setattr(ev, "_compiled", patched)
    system, model, folder, _ = setup
    bad_calls = {3}  # the first attempt of step 3 fails, its retry succeeds
    _run(setup, DEPTHS[0], folder / "retry" / "evaluation.nc")
    assert len(calls) == 24 + 1 and "measurement step 3: 2 walker(s) with non-finite" in caplog.text
    ds = qio.read_netcdf(folder / "retry" / "evaluation.nc")
    assert ds.sizes["step"] == 24 and np.all(np.isfinite(ds["energy"].values))
    calls.clear()
    bad_calls = set(range(5, 5 + ev.MAX_RETRIES + 1))  # step 5 fails every attempt
    with pytest.raises(FloatingPointError, match=r"depth V = 1 E_M stopped at measurement step 5"):
        _run(setup, DEPTHS[0], folder / "retry2" / "evaluation.nc")
