"""Rerun classes (issue 15, item 2): every config key is run, progress or compute; an edit of each
key changes the stage and checkpoint-set hashes exactly as its class says; equivalent spellings
resolve to the same config; config/README.md documents every key with its class."""

from __future__ import annotations

import copy
import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from qernel import config as qc

REPO = Path(__file__).resolve().parents[1]

SYSTEM = {"supercell": [[2, 0], [0, 2]], "n_up": 2, "n_down": 1, "units": "moire", "coupling": 1.5, "phase_deg": 45}
PHYSICAL = {"supercell": [[2, 0], [0, 2]], "n_up": 2, "n_down": 1, "units": "physical", "effective_mass": 0.35,
            "epsilon": 5.0, "moire_length_nm": 8.0, "phase_deg": 45}
BASE = {"system": SYSTEM, "depths": [0.0, 1.0, 2.5], "pretrain": {"batch_size": 12, "steps": 20},
        "evaluate": {"samples": 256, "batch_size": 16, "finetune_steps": 4}}


def model_fields():
    from qernel.model.config import ModelConfig

    return ["preset"] + [f.name for f in dataclasses.fields(ModelConfig)]


def train_fields():
    from qernel.train import TrainConfig

    return [f.name for f in dataclasses.fields(TrainConfig)]


def eval_fields():
    from qernel.evaluate import EvalConfig

    return [f.name for f in dataclasses.fields(EvalConfig)]


def finetune_fields():
    """The training keys `evaluate.finetune` accepts (steps and pretrain_steps are set by the
    evaluation: EvalConfig rejects them)."""
    return [k for k in train_fields() if k not in ("steps", "pretrain_steps")]


def every_key() -> list[str]:
    """Every config key, from the schema and the option classes (model, pretrain, evaluate)."""
    schema = qc.load_schema()
    defs = schema["definitions"]
    keys = [f"config.{k}" for k in schema["properties"] if k not in ("sweeps", "resources")]
    sweep = defs["sweep"]["properties"]
    for key in sweep:
        if key == "system":
            keys += [f"system.{k}" for k in defs["system"]["properties"]]
        elif key == "model":
            keys += [f"model.{k}" for k in model_fields()]
        elif key == "pretrain":
            keys += [f"pretrain.{k}" for k in dict.fromkeys(train_fields() + list(sweep["pretrain"]["properties"]))]
        elif key == "evaluate":
            keys += [f"evaluate.{k}" for k in dict.fromkeys(eval_fields() + list(sweep["evaluate"]["properties"]))]
            keys += [f"evaluate.finetune.{k}" for k in finetune_fields()]
        elif key == "hartree_fock":
            keys += [f"hartree_fock.{k}" for k in defs["hartree_fock"]["properties"]]
        elif key == "resources":
            keys += [f"resources.{rule}.{k}" for rule in defs["resources"]["properties"]
                     for k in defs["rule_resources"]["properties"]]
        else:
            keys.append(key)
    keys += [f"config.resources.{rule}.{k}" for rule in defs["resources"]["properties"]
             for k in defs["rule_resources"]["properties"]]
    return keys


def test_every_key_has_a_class():
    missing = [k for k in every_key() if qc.key_class(k) not in qc.RERUN_CLASSES]
    assert not missing, f"config keys without a rerun class (add them to qernel.config.KEY_CLASSES): {missing}"
    assert qc.key_class("pretrain.steps") == qc.PROGRESS and qc.key_class("evaluate.finetune.steps") == qc.PROGRESS
    assert qc.key_class("pretrain.no_such_key") is None


#: Another valid value for each key whose obvious change would be invalid or a no-op.
OTHER = {
    "system.supercell": [[2, 0], [0, 3]], "system.n_up": 1, "system.n_down": 0, "system.units": "physical",
    "system.energy_unit_meV": 3.0, "system.effective_mass": 0.4, "system.epsilon": 6.0,
    "system.moire_length_nm": 9.0, "depths": [0.0, 1.0, 3.5], "seed": 1, "description": "a note",
    "model.preset": "paper", "model.dtype": "float64", "model.reference_depth": 1.0, "model.n_heads": 8,
    "model.n_kv_heads": 4, "model.top_k": 1, "model.d_model": 40, "model.router_input": "electron",
    "pretrain.optimizer": "adam", "pretrain.depth_weighting": "variance", "pretrain.dtype": "float64",
    "pretrain.laplacian": "jvp", "pretrain.learning_rate": 0.01, "pretrain.max_update_norm": 0.1,
    "pretrain.pretrain_shells": 2.0, "pretrain.batch_size": 24, "pretrain.target_acceptance": 0.6,
    "pretrain.sr_momentum": 0.5, "pretrain.matmul_precision": "default", "pretrain.pretrain_target": "hartree_fock",
    "model.prior_source": "hartree_fock",
    "evaluate.dtype": "float64", "evaluate.laplacian": "jvp", "evaluate.supercell_density_bins": [8, 8],
    "evaluate.density_bins": [6, 6], "evaluate.finetune": {"learning_rate": 0.01}, "evaluate.batch_size": 8,
    "evaluate.target_acceptance": 0.6, "evaluate.max_series_elements": 2**20,
    "hartree_fock.enabled": False, "hartree_fock.shells": 2.5, "hartree_fock.search_shells": 1.5,
    "hartree_fock.starts": 3, "hartree_fock.seeded": False, "hartree_fock.max_iter": 50,
    "hartree_fock.max_plane_waves": 300,
}
for _k in ("optimizer", "depth_weighting", "dtype", "laplacian", "learning_rate", "max_update_norm",
           "pretrain_shells", "batch_size", "target_acceptance", "sr_momentum", "matmul_precision",
           "pretrain_target"):
    OTHER[f"evaluate.finetune.{_k}"] = OTHER[f"pretrain.{_k}"]
OTHER["evaluate.finetune.batch_size"] = 32


def other_value(key: str, current):
    if key in OTHER:
        return OTHER[key]
    if isinstance(current, bool):
        return not current
    if isinstance(current, int):
        return current + 1
    if isinstance(current, float):
        return current * 0.5 if current else 0.25
    raise AssertionError(f"no other value for {key} = {current!r}: add one to OTHER")


#: Keys whose other value is valid only with another model key set (on both sides of the edit).
COMPANIONS = {"model.prior_source": {"prior_anchors": 2}, "model.additive_orbitals": {"prior_modulation": True}}


def edited(key: str) -> tuple[dict, dict]:
    """(base config, config with `key` changed), both whole configs of one sweep "t"."""
    base = copy.deepcopy(BASE)
    if key in ("system.effective_mass", "system.epsilon", "system.moire_length_nm"):
        base["system"] = dict(PHYSICAL)
    if key in COMPANIONS:  # both sides: only `key` differs
        base["model"] = dict(COMPANIONS[key])
    resolved = qc.validate_config({"sweeps": {"t": base}})["t"].resolved
    new = copy.deepcopy(base)
    if key == "system.units":
        new["system"] = dict(PHYSICAL)
    elif key.startswith("resources.") or key.startswith("config.resources."):
        _, rule, name = key.removeprefix("config.").split(".")
        value = 2 if name == "gpu" and rule == "pretrain" else 5 if name != "gpu" else 2
        target = new.setdefault("resources", {}) if key.startswith("resources.") else None
        if target is None:
            return {"sweeps": {"t": base}}, {"sweeps": {"t": new}, "resources": {rule: {name: value}}}
        target[rule] = {name: value}
    elif key == "config.run_sweeps":
        return {"sweeps": {"t": base}}, {"sweeps": {"t": new}, "run_sweeps": ["t"]}
    elif key in ("depths", "seed", "description"):
        new[key] = OTHER[key]
    elif key.startswith("evaluate.finetune."):
        name = key.removeprefix("evaluate.finetune.")
        new.setdefault("evaluate", {})["finetune"] = {name: other_value(key, resolved["pretrain"].get(name))}
    else:
        part, name = key.split(".", 1)
        current = resolved[part].get(name) if isinstance(resolved.get(part), dict) else None
        if part == "model":
            new["model"] = {name: other_value(key, current), **COMPANIONS.get(key, {})}
        else:
            new.setdefault(part, {})[name] = other_value(key, current)
    return {"sweeps": {"t": base}}, {"sweeps": {"t": new}}


READS = {"pretrain": ("system", "depths", "model", "pretrain", "seed"),
         "evaluate": ("system", "depths", "model", "evaluate", "seed")}


@pytest.mark.parametrize("key", every_key())
def test_an_edit_of_each_key_reruns_what_its_class_says(key):
    cls = qc.key_class(key)
    before_cfg, after_cfg = edited(key)
    before = qc.validate_config(before_cfg)["t"]
    after = qc.validate_config(after_cfg)["t"]
    part = key.removeprefix("config.").split(".")[0] if not key.startswith("config.") else "config"
    for stage, parts in READS.items():
        reads = part in parts
        same_stage = before.stage_hash(stage) == after.stage_hash(stage)
        same_run = before.run_hash(stage) == after.run_hash(stage)
        if cls == qc.RUN and reads:
            assert not same_stage and not same_run, f"{key} ({cls}) must start a new {stage} run"
        elif cls == qc.PROGRESS and reads:
            assert not same_stage and same_run, f"{key} ({cls}): {stage} must rerun and continue its checkpoints"
        else:
            assert same_stage and same_run, f"{key} ({cls}) must not rerun {stage} or set its checkpoints aside"
        if cls == qc.COMPUTE and reads and part in ("pretrain", "evaluate", "system"):
            # the new value reaches the stage's jobs through its compute snapshot
            assert before.snapshot(stage, compute=True) != after.snapshot(stage, compute=True), key
    # the Hartree–Fock job reads its own snapshot: system, depths and hartree_fock (run keys only)
    from qernel.reference import hartree_fock_snapshot

    same_hf = hartree_fock_snapshot("t", before.raw) == hartree_fock_snapshot("t", after.raw)
    assert same_hf != (cls == qc.RUN and part in ("system", "depths", "hartree_fock")), \
        f"{key} ({cls}): the Hartree–Fock reference reruns only for what changes it"
    shown = key == "system.energy_unit_meV"
    assert (before.stage_hash("analysis") == after.stage_hash("analysis")) != (shown or (cls == qc.RUN and part in (
        "system", "depths"))), f"{key}: the analysis stage reruns only for what it shows"


@pytest.mark.parametrize("a, b", [
    ({"model": "tiny"}, {"model": {"preset": "tiny"}}),
    ({"model": "tiny"}, {}),
    ({}, {"pretrain": {"batch_size": 12, "steps": 20, "optimizer": "sr", "learning_rate": None}}),
    ({}, {"evaluate": {"samples": 256, "batch_size": 16, "finetune_steps": 4, "density_bins": [24, 24],
                       "dtype": None, "finetune": {}}}),
    ({}, {"depths": {"start": 0.0, "stop": 2.5, "num": 3}, "pretrain": {"batch_size": 12, "steps": 20}}),
    ({"system": {**SYSTEM, "supercell": 2}}, {"system": {**SYSTEM, "n_down": 1, "phase_deg": 45.0}}),
    ({}, {"description": "the same run", "resources": {"plot": {"mem_mb": 10}}, "seed": 0}),
])
def test_equivalent_spellings_resolve_alike(a, b):
    x = qc.validate_config({"sweeps": {"t": {**copy.deepcopy(BASE), **a}}})["t"]
    y = qc.validate_config({"sweeps": {"t": {**copy.deepcopy(BASE), **b}}})["t"]
    if "depths" in b:  # a range and its explicit list
        y = qc.validate_config({"sweeps": {"t": {**copy.deepcopy(BASE), "depths": [0.0, 1.25, 2.5], **{
            k: v for k, v in b.items() if k != "depths"}}}})["t"]
        z = qc.validate_config({"sweeps": {"t": {**copy.deepcopy(BASE), **b}}})["t"]
        assert z.resolved == y.resolved
        return
    assert x.resolved == y.resolved
    for stage in ("pretrain", "evaluate", "analysis"):
        assert x.stage_hash(stage) == y.stage_hash(stage) and x.run_hash(stage) == y.run_hash(stage)
        assert x.snapshot(stage) == y.snapshot(stage)


def test_readme_documents_every_key_with_its_class():
    text = (REPO / "config" / "README.md").read_text()
    section = text[text.index("## What an edit reruns"):]
    section = section[:section.index("\n## ", 5)]
    rows = re.findall(r"^\| `([\w.]+)`( \(top level\))? \| (\w+) \|", section, re.M)
    documented = {("config." + key if top else key): cls for key, top, cls in rows}
    assert documented == qc.KEY_CLASSES


@pytest.mark.parametrize("key", sorted(qc.ADDED_KEYS))
def test_a_key_added_later_leaves_a_sweep_that_does_not_use_it_alone(key):
    """Upgrading qernel must not rerun a sweep, nor move its checkpoints aside, for a key the
    sweep does not use: at the value that runs as before the key existed, the stage snapshots
    (what Snakemake compares) and the hashes are those of the config without the key, and the
    stage's job still resolves the key to that value; any other value is a new run."""
    part, name = key.split(".", 1)
    old = qc.ADDED_KEYS[key]
    from qernel.eval_config import EvalConfig
    from qernel.model.config import ModelConfig
    from qernel.train_config import TrainConfig

    cls = {"model": ModelConfig, "pretrain": TrainConfig, "evaluate": EvalConfig}[part]
    default = {f.name: f.default for f in dataclasses.fields(cls)}[name]
    assert default == old, f"{key}: a config that does not name it must run as before"
    plain = qc.validate_config({"sweeps": {"t": copy.deepcopy(BASE)}})["t"]
    named = qc.validate_config({"sweeps": {"t": {**copy.deepcopy(BASE), part: {name: old}}}})["t"]
    other = qc.validate_config({"sweeps": {"t": {**copy.deepcopy(BASE), part: {
        name: other_value(key, old), **COMPANIONS.get(key, {})}}}})["t"]
    for stage in ("pretrain", "evaluate"):
        snapshot = named.snapshot(stage)
        assert f"{name}:" not in snapshot and snapshot == plain.snapshot(stage)
        assert named.run_hash(stage) == plain.run_hash(stage)
        reread = qc.validate_config(yaml.safe_load(snapshot))["t"]
        assert reread.resolved[part][name] == old  # the job runs with the old behaviour
        if part in qc.STAGE_KEYS[stage]:
            assert other.run_hash(stage) != plain.run_hash(stage) and f"{name}:" in other.snapshot(stage)
