"""Run by test_sharding.py in a subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=2.

Trains the same tiny problem on a 1-device and a 2-device mesh, resumes a 2-device run on 1
device, checks the walkers are really sharded, and prints a JSON report on the last line.
"""

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from engine.conftest import PHASE  # noqa: E402
from engine.standin import StandInWavefunction  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from qernel import parallel, train  # noqa: E402
from qernel.optim import sr_init  # noqa: E402
from qernel.lattice import Supercell  # noqa: E402
from qernel.system import System  # noqa: E402
from qernel.train import TrainConfig, run_training  # noqa: E402


class _Stop(Exception):
    pass


def main():
    devices = jax.devices()
    assert len(devices) == 2, devices
    system = System(Supercell.diagonal(2), n_up=1, n_down=1, coupling=1.0, phase=PHASE)
    wf = StandInWavefunction(system, ((0.5, 1.5),), shells=1.0, n_stars=1, init_scale=0.1)
    depths = [0.5, 1.5]
    cfg = TrainConfig.from_dict(dict(steps=4, batch_size=8, pretrain_steps=3, burn_in=8, mcmc_steps=4,
                                     checkpoint_every=2, learning_rate=0.01, dtype="float64", log_every=100))
    one, two = parallel.make_mesh(devices[:1]), parallel.make_mesh(devices)
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        a = run_training(system, wf, depths, cfg, tmp / "one", mesh=one, progress=False)
        b = run_training(system, wf, depths, cfg, tmp / "two", mesh=two, progress=False)

        def stop(step, record):
            if step == 3:
                raise _Stop

        try:  # 2 devices up to the checkpoint at step 2 (killed at 3), then resumed on 1 device
            run_training(system, wf, depths, cfg, tmp / "moved", mesh=two, progress=False, callback=stop)
        except _Stop:
            pass
        c = run_training(system, wf, depths, cfg, tmp / "moved", mesh=one, progress=False)
        chunked = TrainConfig.from_dict({**cfg.to_dict(), "max_vmap_batch_size": 4})  # 2 chunks of 4 walkers
        d = run_training(system, wf, depths, chunked, tmp / "chunked", mesh=two, progress=False)
        log_two = (tmp / "two" / "train.log").read_text()
        try:
            run_training(system, wf, depths, TrainConfig.from_dict({**cfg.to_dict(), "batch_size": 6}), tmp / "bad",
                         mesh=two, progress=False)
            report["bad_batch_error"] = None
        except ValueError as err:
            report["bad_batch_error"] = str(err)

    def maxdiff(x, y):
        return max(float(np.max(np.abs(np.asarray(p) - np.asarray(q)))) for p, q in
                   zip(jax.tree.leaves(x), jax.tree.leaves(y)))

    def maxabs(x):
        return max(float(np.max(np.abs(np.asarray(p)))) for p in jax.tree.leaves(x))

    # inside a run, the walkers stay split across the two devices after a step
    state = train.TrainState(b.params, sr_init(b.params), b.mcmc, jnp.asarray(4, jnp.int32), jnp.zeros(2))
    step = train._jit_train_step(system, wf, train._step_key(cfg), 2, True, two)
    with jax.enable_x64(True):
        out, _ = step(parallel.place(jax.tree.map(jnp.asarray, state), two, train.WALKER_AXES), jax.random.PRNGKey(0),
                      jnp.zeros(2))
    walkers = out.mcmc.positions
    report["params_replicated"] = all(len(p.sharding.device_set) == 2 and p.sharding.is_fully_replicated
                                      for p in jax.tree.leaves(out.params))
    report.update(
        params_scale=maxabs(a.params),
        two_vs_one=maxdiff(a.params, b.params),
        moved_vs_one=maxdiff(a.params, c.params),
        chunked_vs_one=maxdiff(a.params, d.params),
        energy_two_vs_one=float(np.max(np.abs(a.history["energy_per_depth"] - b.history["energy_per_depth"]))),
        energy_scale=float(np.max(np.abs(a.history["energy_per_depth"]))),
        shards=len(walkers.addressable_shards),
        shard_rows=[int(s.data.shape[0]) for s in walkers.addressable_shards],
        logged_two_devices="devices: 2 × cpu" in log_two,
        steps=[a.step, b.step, c.step, d.step],
    )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
