"""Checkpoint sets keyed by config (`qernel.checkpoint.claim`): a config edit and its revert never
lose a set, a set is never overwritten by another, and the log says where each set is."""

from __future__ import annotations

import logging

import numpy as np

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
