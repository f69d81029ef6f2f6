"""Checkpoints: round trip of every kind of state, atomic writes, corrupt files detected and skipped."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from qernel import checkpoint
from qernel.mcmc import MCMCState


def _tree():
    params = {"params": {"dense": {"kernel": jnp.arange(6.0).reshape(2, 3), "bias": jnp.ones(3)}}}
    opt = optax.adam(1e-3)
    opt_state = opt.update(params, opt.init(params), params)[1]
    mcmc = MCMCState(jnp.ones((4, 2, 2)), jnp.zeros((4, 1)), jnp.arange(4.0), jnp.asarray([0.1, 0.2]),
                     jnp.asarray([0.5, 0.4]), jnp.asarray([0, 1, 0, 1], jnp.int32))
    return {"params": params, "opt": opt_state, "mcmc": mcmc, "step": jnp.asarray(7, jnp.int32),
            "key": jax.random.PRNGKey(3), "history": {"energy": np.linspace(0, 1, 5)}, "note": "hello"}


def test_round_trip_with_template(tmp_path):
    tree = _tree()
    path = checkpoint.save(tmp_path / "ckpt_00000007.msgpack", tree)
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    back = checkpoint.load(path, tree)
    assert jax.tree.structure(back) == jax.tree.structure(tree)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(tree)):
        if isinstance(b, str):
            assert a == b
        else:
            assert isinstance(a, np.ndarray)  # host arrays: restorable on any device count
            np.testing.assert_array_equal(a, np.asarray(b))
            assert a.dtype == np.asarray(b).dtype
    raw = checkpoint.load(path)  # without a template: the raw state dict
    np.testing.assert_array_equal(raw["mcmc"]["width"], np.asarray([0.1, 0.2], np.float32))
    # no pickles: the file is msgpack with a format tag
    assert b"qernel-checkpoint" in path.read_bytes()[:64]


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "garbage"])
def test_corrupt_file_is_detected(tmp_path, damage):
    path = checkpoint.save(tmp_path / "ckpt_00000001.msgpack", _tree())
    blob = bytearray(path.read_bytes())
    if damage == "truncate":
        blob = blob[: len(blob) // 2]
    elif damage == "flip":
        blob[len(blob) - 40] ^= 0xFF
    elif damage == "empty":
        blob = bytearray()
    else:
        blob = bytearray(b"not a checkpoint at all")
    path.write_bytes(bytes(blob))
    assert not checkpoint.verify(path)
    with pytest.raises(checkpoint.CorruptCheckpointError):
        checkpoint.load(path)


def test_latest_skips_corrupt_newest_with_a_warning(tmp_path):
    for step in (3, 6, 9):
        checkpoint.save(checkpoint.checkpoint_path(tmp_path, step), {"step": step})
    assert checkpoint.latest(tmp_path).name == "ckpt_00000009.msgpack"
    p9 = checkpoint.checkpoint_path(tmp_path, 9)
    p9.write_bytes(p9.read_bytes()[:-10])  # a partial write
    (tmp_path / "ckpt_00000012.msgpack").write_bytes(b"")  # a crash before anything was written
    with pytest.warns(RuntimeWarning, match="corrupt"):
        best = checkpoint.latest(tmp_path)
    assert best.name == "ckpt_00000006.msgpack"
    assert int(checkpoint.load(best)["step"]) == 6
    assert checkpoint.latest(tmp_path / "missing") is None


def test_model_file(tmp_path):
    params = {"params": {"w": jnp.ones((2, 2))}}
    path = checkpoint.save_model(tmp_path / "model.msgpack", params, {"depths": [0.0, 1.0], "step": 3})
    back, meta = checkpoint.load_model(path, params)
    np.testing.assert_array_equal(back["params"]["w"], np.ones((2, 2)))
    assert meta == {"depths": [0.0, 1.0], "step": 3}
