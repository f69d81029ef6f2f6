"""Checkpoint/resume (bit-identical), corrupt checkpoints, the NaN/inf guard, outputs."""

import re

import jax
import numpy as np
import pytest
import xarray as xr

from qernel import checkpoint
from qernel.train import TrainConfig, run_training

from .standin import StandInWavefunction

DEPTHS = [0.5, 1.5]
# variance weighting with re-splits every 2 steps: the resumed run must reproduce them too
CFG = TrainConfig.from_dict(dict(steps=6, batch_size=16, pretrain_steps=4, burn_in=10, mcmc_steps=4,
                                 checkpoint_every=3, learning_rate=0.01, depth_weighting="variance",
                                 reweight_every=2, log_every=100))


@pytest.fixture(scope="module")
def wf(pair_system):
    return StandInWavefunction(pair_system, ((0.5, 1.5),), shells=1.0, n_stars=1, init_scale=0.1)


@pytest.fixture(scope="module")
def reference(pair_system, wf, tmp_path_factory):
    """The uninterrupted run."""
    out = tmp_path_factory.mktemp("uninterrupted")
    return run_training(pair_system, wf, DEPTHS, CFG, out, seed=3)


class _Kill(Exception):
    pass


def _assert_same_params(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))  # bit for bit


def test_outputs_of_a_run(reference):
    out = reference.out_dir
    assert reference.step == 6
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["ckpt_00000000.msgpack", "ckpt_00000003.msgpack", "ckpt_00000006.msgpack"]
    ds = xr.open_dataset(out / "train.nc")
    assert list(ds.step.values) == [1, 2, 3, 4, 5, 6]
    assert ds.energy_per_depth.dims == ("step", "depth") and list(ds.depth.values) == DEPTHS
    assert ds.expert_usage.dims == ("step", "layer", "expert")
    for name in ("energy", "variance", "acceptance", "learning_rate", "energy_per_depth", "variance_per_depth",
                 "acceptance_per_depth", "expert_usage"):
        assert np.all(np.isfinite(ds[name].values)), name
    np.testing.assert_allclose(ds.energy.values, ds.energy_per_depth.values.mean(axis=1))
    assert ds.attrs["units"] == "E_M" and "config_hash" in ds.attrs
    assert ds.walkers_per_depth.values.sum(axis=1).tolist() == [16] * 6
    params, meta = checkpoint.load_model(out / "model.msgpack")
    assert meta["step"] == 6 and meta["depths"] == DEPTHS
    _assert_same_params(params, reference.params)
    ds.close()


def test_kill_and_resume_is_bit_identical(pair_system, wf, reference, tmp_path):
    def kill(step, record):
        if step == 5:  # after the checkpoint at step 3, before the one at 6
            raise _Kill

    with pytest.raises(_Kill):
        run_training(pair_system, wf, DEPTHS, CFG, tmp_path, seed=3, callback=kill)
    assert checkpoint.latest(tmp_path / "checkpoints").name == "ckpt_00000003.msgpack"
    resumed = run_training(pair_system, wf, DEPTHS, CFG, tmp_path, seed=3)
    _assert_same_params(resumed.params, reference.params)
    _assert_same_params(resumed.mcmc, reference.mcmc)
    for key in ("energy", "energy_per_depth", "walkers_per_depth", "acceptance_per_depth", "pretrain_loss"):
        np.testing.assert_array_equal(resumed.history[key], reference.history[key])
    log = (tmp_path / "train.log").read_text()
    assert log.count("devices:") == 2  # appended, not truncated
    assert "resumed from ckpt_00000003.msgpack at step 3" in log
    assert "step 1/6" in log and "step 6/6" in log

    # a corrupt newest checkpoint: reported, skipped, and the previous one used
    newest = tmp_path / "checkpoints" / "ckpt_00000006.msgpack"
    newest.write_bytes(newest.read_bytes()[:100])
    with pytest.warns(RuntimeWarning, match="corrupt checkpoint ckpt_00000006"):
        again = run_training(pair_system, wf, DEPTHS, CFG, tmp_path, seed=3)
    _assert_same_params(again.params, reference.params)
    assert (tmp_path / "train.log").read_text().count("resumed from ckpt_00000003.msgpack") == 2
    assert checkpoint.verify(newest)  # rewritten


def test_a_poisoned_step_is_retried(pair_system, wf, reference, tmp_path):
    poisoned = []

    def inject(step, attempt):
        if step == 2 and attempt == 0:
            poisoned.append(step)
            return [1]  # NaN local energies at the second depth
        return None

    res = run_training(pair_system, wf, DEPTHS, CFG, tmp_path, seed=3, fault_injector=inject)
    assert poisoned == [2] and res.step == 6
    assert res.history["retries"].tolist() == [0, 1, 0, 0, 0, 0]
    assert all(np.all(np.isfinite(np.asarray(p))) for p in jax.tree.leaves(res.params))
    assert np.all(np.isfinite(res.history["energy_per_depth"]))
    # step 1 is untouched by the fault; step 2 was redone with other random numbers
    assert res.history["energy"][0] == reference.history["energy"][0]
    assert res.history["energy"][1] != reference.history["energy"][1]
    log = (tmp_path / "train.log").read_text()
    assert "step 2: attempt 1 rejected: non-finite local energies at depth(s) V = [1.5]" in log


def test_repeated_failure_stops_naming_step_and_depth(pair_system, wf, tmp_path, monkeypatch):
    import qernel.train as train

    monkeypatch.setattr(train, "MAX_ROLLBACKS", 1)  # each rollback compiles a step with a smaller rate
    always = lambda step, attempt: [1] if step == 2 else None
    with pytest.raises(FloatingPointError, match=r"step 2: non-finite local energies at depth\(s\) V = \[1.5\] E_M "
                                                 r"in 4 attempts \(max_retries = 3\), after 1 rollback\(s\)"):
        run_training(pair_system, wf, DEPTHS, CFG, tmp_path, seed=3, fault_injector=always)
    ds = xr.open_dataset(tmp_path / "train.nc")
    assert list(ds.step.values) == [1]  # the good history is kept
    ds.close()
    assert checkpoint.latest(tmp_path / "checkpoints").name == "ckpt_00000000.msgpack"


def test_laplacian_switch_and_progress_bar(pair_system, wf, reference, tmp_path, capsys):
    """laplacian="jvp" (the reference loop) gives the same first step as folx; progress=True draws a bar."""
    cfg = TrainConfig.from_dict({**CFG.to_dict(), "steps": 1, "laplacian": "jvp"})
    res = run_training(pair_system, wf, DEPTHS, cfg, tmp_path, seed=3, progress=True)
    np.testing.assert_allclose(res.history["energy_per_depth"][0], reference.history["energy_per_depth"][0],
                               rtol=1e-4)
    err = capsys.readouterr().err
    assert "train" in err and "E=" in err and "acc=" in err


def test_variance_weighting_split():
    from qernel.train import _reassign, _split_counts

    counts = _split_counts(np.array([1.0, 3.0, 0.0]), total=24, minimum=2)
    assert counts.sum() == 24 and counts.min() >= 2
    assert counts.tolist() == [7, 15, 2]  # 20 free walkers ∝ σ = (1, 3, 0), then the minimum of 2 each
    assert _split_counts(np.zeros(3), 12, 1).tolist() == [4, 4, 4]
    group = np.arange(24) % 3
    new = _reassign(group, counts)
    assert np.bincount(new, minlength=3).tolist() == counts.tolist()
    assert np.sum(new != group) == 7  # only the surplus walkers move: 1 of depth 0, 6 of depth 2


def test_variance_weighting_moves_walkers_to_the_noisier_depth(reference):
    """Each re-split (after steps 2 and 4) gives the depth whose running mean of the recorded
    variance (qernel.train: the first step's, then 0.9 · old + 0.1 · new) is larger at least as
    many walkers, strictly more when the standard deviations differ by over 20 % (Neyman: n_d ∝ σ_d)."""
    walkers = reference.history["walkers_per_depth"]
    variance = reference.history["variance_per_depth"]
    assert walkers[0].tolist() == [8, 8]  # uniform until the first re-split (after step 2)
    ema = variance[0].astype(float)
    moved = False
    for t in range(1, len(variance)):
        ema = 0.9 * ema + 0.1 * variance[t]
        step = t + 1
        if step % 2 == 0 and step < len(variance):
            after = walkers[step]  # the next step runs with the new split
            sigma = np.sqrt(ema)
            noisier = int(np.argmax(sigma))
            assert after.sum() == 16 and after[noisier] >= after[1 - noisier], (step, ema, after)
            if sigma[noisier] > 1.2 * sigma[1 - noisier]:
                assert after[noisier] > 8, (step, ema, after)
                moved = True
    assert moved  # the run's variances are far enough apart for the split to move walkers


def _fail_first_time_through(step_to_fail, n_attempts):
    """A fault injector that poisons every attempt of `step_to_fail` the first time it is reached
    (as broken parameters would), and nothing after a rollback."""
    calls = []

    def inject(step, attempt):
        if step == step_to_fail and len(calls) < n_attempts:
            calls.append(attempt)
            return [0, 1]
        return None

    return inject


def test_a_step_failing_every_retry_rolls_back_with_half_the_learning_rate(pair_system, wf, reference, tmp_path):
    """Issue 15 item 7, the mechanics: every retry of step 2 fails, so the run goes back to the
    newest checkpoint before it (step 0), replays with half the learning rate and step cap for the
    rest of the run, and finishes (the cap binds here: halving the rate alone would change
    nothing); a run killed after the rollback resumes with the halved rate and ends bit
    for bit where the uninterrupted one does."""
    n_attempts = CFG.max_retries + 1
    res = run_training(pair_system, wf, DEPTHS, CFG, tmp_path / "a", seed=3,
                       fault_injector=_fail_first_time_through(2, n_attempts))
    assert res.step == 6 and res.history["step"].tolist() == [1, 2, 3, 4, 5, 6]
    ref = reference.history
    np.testing.assert_allclose(res.history["learning_rate"], 0.5 * ref["learning_rate"], rtol=1e-6)
    # step 1 measures with the parameters of the checkpoint (the same as the reference's); later steps differ
    assert res.history["energy"][0] == ref["energy"][0] and res.history["energy"][1] != ref["energy"][1]
    assert res.history["retries"].tolist() == [0] * 6  # the replayed step 2 went through at once
    log = (tmp_path / "a" / "train.log").read_text()
    assert (f"step 2: non-finite local energies at depth(s) V = [0.5, 1.5] E_M in {n_attempts} attempts: rolling "
            "back to the checkpoint at step 0 with the learning rate and step cap × 0.5 (rollback 1 of at most 3)") in log
    meta = checkpoint.load(tmp_path / "a" / "checkpoints" / "ckpt_00000006.msgpack")["meta"]
    assert float(meta["lr_scale"]) == 0.5 and int(meta["rollbacks"]) == 1

    def kill(step, record):
        if step == 5:  # after the checkpoint at step 3 (written after the rollback)
            raise _Kill

    with pytest.raises(_Kill):
        run_training(pair_system, wf, DEPTHS, CFG, tmp_path / "b", seed=3, callback=kill,
                     fault_injector=_fail_first_time_through(2, n_attempts))
    resumed = run_training(pair_system, wf, DEPTHS, CFG, tmp_path / "b", seed=3)
    _assert_same_params(resumed.params, res.params)
    np.testing.assert_array_equal(resumed.history["learning_rate"], res.history["learning_rate"])
    assert "(learning rate and step cap × 0.5 after 1 rollback(s))" in (tmp_path / "b" / "train.log").read_text()


def test_a_diverging_learning_rate_rolls_back_then_stops_in_one_line(pair_system, wf, tmp_path, monkeypatch):
    """Issue 15 item 7, the example: learning_rate 1e6 with no step cap. The first updates are
    accepted but leave parameters whose local energies are NaN at every later attempt; the run
    rolls back further at each failure, with the rate halved each time (here at most once, to
    keep the test cheap), then stops with one line naming the step, the depths and the rollbacks.
    The checkpoint it went back to and the good history stay."""
    import qernel.train as train

    monkeypatch.setattr(train, "MAX_ROLLBACKS", 1)
    cfg = TrainConfig.from_dict({**CFG.to_dict(), "learning_rate": 1.0e6, "max_update_norm": 0, "pretrain_steps": 0,
                                 "depth_weighting": "uniform", "max_retries": 1})
    with pytest.raises(FloatingPointError) as info:
        run_training(pair_system, wf, DEPTHS, cfg, tmp_path, seed=3)
    message = str(info.value)
    assert "\n" not in message
    assert re.search(r"^training stopped at step \d: non-finite local energies at depth\(s\) V = \[[0-9., ]+\] E_M "
                     r"in 2 attempts \(max_retries = 1\), after 1 rollback\(s\) to the last checkpoint with the "
                     r"learning rate and step cap × 0.5 \(at most 1\); last good checkpoint in ", message), message
    log = (tmp_path / "train.log").read_text()
    assert "rolling back to the checkpoint at step 0 with the learning rate and step cap × 0.5 (rollback 1 of at most 1)" in log
    lr = [float(v) for v in re.findall(r"step \d/6 .* lr ([0-9.e+]+)", log)]
    assert lr[0] == pytest.approx(1e6, rel=1e-2) and lr[-1] == pytest.approx(5e5, rel=1e-2)  # before, after
    assert checkpoint.latest(tmp_path / "checkpoints").name == "ckpt_00000000.msgpack"
    ds = xr.open_dataset(tmp_path / "train.nc")
    failed_at = int(re.search(r"stopped at step (\d)", message).group(1))
    assert list(ds.step.values) == list(range(1, failed_at))  # the replayed good steps are kept
    ds.close()
