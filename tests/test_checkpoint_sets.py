"""Checkpoint sets keyed by config (`qernel.checkpoint.claim`): a config edit and its revert never
lose a set, a set is never overwritten by another, and the log says where each set is."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from qernel import checkpoint

H1, H2, H3 = "a" * 64, "b" * 64, "c" * 64


def fill(directory, *steps):
    for step in steps:
        checkpoint.save(checkpoint.checkpoint_path(directory, step), {"step": np.int32(step)})


def steps(directory):
    return sorted(step for step, _ in checkpoint.list_checkpoints(directory))


def test_a_config_edit_and_its_revert_resume_the_first_set(tmp_path, caplog):
    ckpts = tmp_path / "checkpoints"
    assert checkpoint.claim(ckpts, H1, {"seed": 0}).action == "new"
    fill(ckpts, 0, 5)
    assert checkpoint.claim(ckpts, H1).action == "resume" and steps(ckpts) == [0, 5]

    with caplog.at_level(logging.INFO, logger="qernel.checkpoint"):
        claim = checkpoint.claim(ckpts, H2, {"seed": 1})  # the edit
    assert claim.action == "new" and claim.kept == tmp_path / f"checkpoints.{H1[:12]}"
    assert steps(claim.kept) == [0, 5] and steps(ckpts) == []
    assert str(claim.kept) in caplog.text  # the log says exactly where the old set is
    assert (ckpts / checkpoint.CONFIG_HASH_FILE).read_text().strip() == H2
    assert '"seed":1' in (ckpts / checkpoint.CONFIG_FILE).read_text()
    fill(ckpts, 0)

    claim = checkpoint.claim(ckpts, H1)  # the revert: the first set comes back, the second is kept
    assert claim.action == "restored" and steps(ckpts) == [0, 5]
    assert claim.kept == tmp_path / f"checkpoints.{H2[:12]}" and steps(claim.kept) == [0]
    assert checkpoint.latest(ckpts).name == "ckpt_00000005.msgpack"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints", f"checkpoints.{H2[:12]}"]


def test_a_set_is_never_overwritten(tmp_path):
    ckpts = tmp_path / "checkpoints"
    checkpoint.claim(ckpts, H1)
    fill(ckpts, 3)
    occupied = tmp_path / f"checkpoints.{H1[:12]}"  # a kept set's name already taken (e.g. a copy)
    occupied.mkdir()
    (occupied / "mine.txt").write_text("keep me")
    claim = checkpoint.claim(ckpts, H2)
    assert claim.kept == tmp_path / f"checkpoints.{H1[:12]}.2" and steps(claim.kept) == [3]
    assert (occupied / "mine.txt").read_text() == "keep me"
    assert checkpoint.claim(ckpts, H1).action == "restored" and steps(ckpts) == [3]


def test_an_unmarked_folder_is_kept_and_an_empty_one_reused(tmp_path):
    ckpts = tmp_path / "checkpoints"
    fill(ckpts, 7)  # an older layout: checkpoints without a marker
    claim = checkpoint.claim(ckpts, H1)
    assert claim.kept == tmp_path / "checkpoints.unknown" and steps(claim.kept) == [7]
    claim = checkpoint.claim(ckpts, H3)  # the H1 folder holds no checkpoint: nothing to keep
    assert claim.kept is None and claim.action == "new"
    assert not (tmp_path / f"checkpoints.{H1[:12]}").exists()


MINI_MODEL = {"preset": "tiny", "d_model": 16, "n_layers": 1, "n_heads": 2, "n_kv_heads": 1, "n_experts": 2,
              "top_k": 1, "d_ff": 16, "film_hidden": 8, "n_determinants": 1, "jastrow_hidden": 8}


def tiny2e(**pretrain) -> dict:
    """The issue's sweep (issue 15, item 1), with a smaller network and no orbital pretraining so
    that it compiles fast (neither changes what is replayed: checkpoints, seeds, resumption)."""
    return {"system": {"supercell": [[1, 0], [0, 1]], "n_up": 1, "n_down": 1, "units": "moire", "coupling": 2.0,
                       "phase_deg": 45},
            "depths": [1.0, 5.0], "model": MINI_MODEL,
            "pretrain": {"steps": 10, "batch_size": 16, "pretrain_steps": 0, "burn_in": 20, "mcmc_steps": 5,
                         "checkpoint_every": 5, "log_every": 5, **pretrain},
            "evaluate": {"samples": 64, "batch_size": 16, "burn_in": 20, "mcmc_steps": 5, "pair_correlation_bins": 10,
                         "density_bins": 8}}


@pytest.mark.slow
def test_the_issue_example_a_config_edit_and_its_revert_resume_the_killed_run(tmp_path, capsys):
    """Run, lose the last checkpoint (as if killed after step 5), run a copy with seed 1 and
    steps 0, run the first config again: it resumes from its step-5 checkpoint (nothing lost), the
    seed-1 set is kept beside it, and the log says where each set is."""
    import yaml

    from qernel import cli

    def pretrain(config: dict, name: str) -> str:
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({"sweeps": {"tiny2e": config}}))
        code = cli.main(["pretrain", "--config", str(path), "--sweep", "tiny2e", "--out-dir", str(out)])
        err = capsys.readouterr().err
        assert code == 0, err[-3000:]
        return err

    out = tmp_path / "out" / "pretrain"
    ckpts = out / "checkpoints"
    pretrain(tiny2e(), "base")
    assert steps(ckpts) == [0, 5, 10]
    (ckpts / "ckpt_00000010.msgpack").unlink()  # killed after step 5

    err = pretrain(tiny2e(steps=0) | {"seed": 1}, "seed1")
    kept = [p for p in checkpoint.kept_sets(ckpts)]
    assert len(kept) == 1 and steps(kept[0]) == [0, 5], "the first run's checkpoints must be kept"
    assert f"are kept, unchanged, in {kept[0]}" in err
    assert steps(ckpts) == [0]  # the seed-1 run's own set

    err = pretrain(tiny2e(), "base-again")
    assert f"moved {kept[0]} back to {ckpts}" in err
    log = (out / "train.log").read_text()
    assert log.rstrip().splitlines()[-1].endswith("done: step 10; model written to model.msgpack")
    assert "resumed from ckpt_00000005.msgpack at step 5" in log
    seed1 = [p for p in checkpoint.kept_sets(ckpts)]
    assert len(seed1) == 1 and steps(seed1[0]) == [0] and steps(ckpts) == [0, 5, 10]

    # raising steps (a progress key) continues the same set from its last checkpoint
    pretrain(tiny2e(steps=12), "longer")
    assert "resumed from ckpt_00000010.msgpack at step 10" in (out / "train.log").read_text()
    assert steps(ckpts) == [0, 5, 10, 12] and len(checkpoint.kept_sets(ckpts)) == 1
