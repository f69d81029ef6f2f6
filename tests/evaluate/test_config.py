"""EvalConfig: defaults, validation with the offending key named, the fine-tuning options
(`qernel.train.finetune_config`: fine-tuning is training, built from the evaluation's options)."""

import dataclasses

import pytest

from qernel.evaluate import EvalConfig, resolve_dtype
from qernel.train import check_finetune_options, finetune_config


def test_defaults_and_steps():
    cfg = EvalConfig.from_dict({"finetune_steps": 0, "samples": 100_000})  # the demo sweep's mapping
    assert cfg.finetune_steps == 0 and cfg.samples == 100_000 and cfg.batch_size == 512
    assert cfg.n_steps == 196  # ceil(100000 / 512)
    assert EvalConfig.from_dict(None) == EvalConfig()
    assert EvalConfig.from_dict({"density_bins": 12}).density_bins == (12, 12)
    assert EvalConfig.from_dict({"density_bins": [12, 8]}).density_bins == (12, 8)
    assert EvalConfig.from_dict({"init_width": 1}).init_width == 1.0
    d = EvalConfig.from_dict({"finetune": {"learning_rate": 0.01}}).to_dict()
    assert d["finetune"] == {"learning_rate": 0.01} and d["density_bins"] == [24, 24]
    assert EvalConfig.from_dict(d) == EvalConfig.from_dict({"finetune": {"learning_rate": 0.01}})


@pytest.mark.parametrize("mapping, key", [
    ({"sampels": 10}, "sampels"),
    ({"samples": 0}, "samples"),
    ({"batch_size": 2.5}, "batch_size"),
    ({"mcmc_steps": 0}, "mcmc_steps"),
    ({"burn_in": -1}, "burn_in"),
    ({"max_vmap_batch_size": -1}, "max_vmap_batch_size"),
    ({"laplacian": "fd"}, "laplacian"),
    ({"dtype": "float16"}, "dtype"),
    ({"density_bins": [4, 0]}, "density_bins"),
    ({"target_acceptance": 1.0}, "target_acceptance"),
    ({"finetune": {"steps": 10}}, "finetune_steps"),
    ({"finetune": {"pretrain_steps": 10}}, "finetune.pretrain_steps"),
    ({"finetune": [1]}, "finetune"),
])
def test_bad_keys_are_named(mapping, key):
    with pytest.raises(ValueError, match=key):
        EvalConfig.from_dict(mapping)


def test_unknown_finetune_keys_are_named():
    """The training options of `finetune:` are checked by the training module (the evaluation does
    not import it): check_finetune_options, and finetune_config before any fine-tuning."""
    with pytest.raises(ValueError, match=r"finetune\.learning_rat"):
        check_finetune_options({"learning_rat": 0.1})
    cfg = EvalConfig.from_dict({"finetune_steps": 4, "finetune": {"learning_rat": 0.1}})
    with pytest.raises(ValueError, match=r"finetune\.learning_rat"):
        finetune_config(cfg, {})
    check_finetune_options({"learning_rate": 0.1, "optimizer": "adam"})  # known keys pass


def test_finetune_config_continues_the_pretraining():
    meta = {"train_config": {"optimizer": "sr", "learning_rate": 0.1, "lr_decay_steps": 100.0, "steps": 300,
                             "batch_size": 504, "dtype": "float64", "pretrain_steps": 50, "clip_mad": 3.0,
                             "a_key_from_another_version": 1}}
    cfg = EvalConfig.from_dict({"finetune_steps": 40, "batch_size": 64})
    t = finetune_config(cfg, meta)
    assert t.steps == 40 and t.pretrain_steps == 0 and t.batch_size == 64 and t.dtype == "float64"
    assert t.optimizer == "sr" and t.clip_mad == 3.0 and t.depth_weighting == "uniform"
    assert t.max_vmap_batch_size == 0
    assert finetune_config(dataclasses.replace(cfg, max_vmap_batch_size=16), meta).max_vmap_batch_size == 16
    # the evaluation's sampler settings, not the pretraining's recorded ones (unless finetune says)
    hops = {"train_config": {**meta["train_config"], "hop_moves": 5}}
    assert finetune_config(dataclasses.replace(cfg, hop_moves=1), hops).hop_moves == 1
    assert finetune_config(dataclasses.replace(cfg, hop_moves=1, finetune={"hop_moves": 3}), hops).hop_moves == 3
    assert t.learning_rate == pytest.approx(0.1 / (1 + 300 / 100))  # where the schedule ended
    t = finetune_config(dataclasses.replace(cfg, finetune={"learning_rate": 0.02}), meta)
    assert t.learning_rate == 0.02
    t = finetune_config(dataclasses.replace(cfg, finetune={"optimizer": "adam"}), meta)
    assert t.optimizer == "adam" and t.lr == 1e-3  # another optimizer: its own default rate
    # the sweep's pretrain mapping (the CLI's fallback metadata) works as well
    t = finetune_config(cfg, {"config": '{"pretrain": {"steps": 10, "optimizer": "adam"}}'})
    assert t.optimizer == "adam" and t.steps == 40
    assert resolve_dtype(EvalConfig(), meta) == "float64"
    assert resolve_dtype(EvalConfig(dtype="float32"), meta) == "float32"
    assert resolve_dtype(EvalConfig(), {}) == "float32"


def test_evaluation_does_not_import_training():
    """The layering of docs/architecture.md: qernel.evaluate imports neither qernel.train nor
    qernel.pretrain (what both drivers need lives in qernel.vmc and qernel.parallel)."""
    import subprocess
    import sys

    code = ("import sys, qernel.evaluate; bad = [m for m in ('qernel.train', 'qernel.pretrain', 'qernel.optim') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
