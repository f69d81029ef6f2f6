"""TrainConfig: defaults, unknown keys, bad values; batch-size divisibility."""

import pytest

from qernel.parallel import check_batch_size
from qernel.train import TrainConfig


def test_defaults_and_round_trip():
    cfg = TrainConfig.from_dict({})
    assert cfg == TrainConfig()
    assert cfg.optimizer == "sr" and cfg.clip_mad == 5.0 and cfg.lr == 0.05
    assert TrainConfig.from_dict({"optimizer": "adam"}).lr == 1e-3
    assert cfg.update_cap == 0.03 and TrainConfig.from_dict({"optimizer": "adam"}).update_cap == 0.3
    assert TrainConfig.from_dict({"max_update_norm": 1}).update_cap == 1.0
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    # the keys of the demo sweep (DESIGN.md §6)
    demo = TrainConfig.from_dict({"steps": 2000, "batch_size": 512, "optimizer": "sr"})
    assert (demo.steps, demo.batch_size) == (2000, 512)
    assert TrainConfig.from_dict({"learning_rate": 1}).learning_rate == 1.0


def test_unknown_key_is_named():
    with pytest.raises(ValueError, match="learning_rat"):
        TrainConfig.from_dict({"learning_rat": 0.1})


@pytest.mark.parametrize("key,value", [
    ("optimizer", "kfac2"), ("batch_size", 0), ("steps", -1), ("steps", 1.5), ("sr_momentum", 1.0),
    ("target_acceptance", 1.2), ("dtype", "float16"), ("laplacian", "hessian"), ("max_vmap_batch_size", -2), ("depth_weighting", "random"),
    ("sr_damping", 0.0), ("mcmc_steps", 0), ("clip_mad", float("nan")),
])
def test_bad_values_name_the_key(key, value):
    with pytest.raises(ValueError, match=key):
        TrainConfig.from_dict({key: value})


def test_batch_size_must_divide_devices_times_depths():
    check_batch_size(12, n_devices=2, n_groups=3)
    with pytest.raises(ValueError, match="batch_size"):
        check_batch_size(10, n_devices=2, n_groups=3)
    with pytest.raises(ValueError, match="batch_size"):
        check_batch_size(8, n_devices=1, n_groups=3)
