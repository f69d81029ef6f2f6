"""The workflow config: named sweeps, validated and resolved into `Sweep` objects.

`config/config.yaml` maps sweep names to sweeps (DESIGN.md §6; every key is documented in
config/README.md):

    sweeps:
      demo:
        system: {supercell: [[3, 0], [0, 3]], n_up: 6, n_down: 0, units: moire,
                 coupling: 10.62, phase_deg: 45}
        depths: {start: 0.0, stop: 10.0, num: 9}     # or an explicit list
        model: tiny
        pretrain: {...}
        evaluate: {...}
        seed: 0

Validation happens in two stages, both raising `ConfigError` whose message starts with the
dotted key path of the offending entry ("sweeps.demo.system.n_upp: unknown key ..."):

1. the JSON schema `config.schema.yaml` shipped in this package (the workflow's
   `workflow/schemas/config.schema.yaml` is a symlink to it): unknown keys, types, ranges;
2. physical and practical checks: the supercell is not singular, there is at least one
   electron, each spin has no more electrons than the single-particle states the model can
   hold, depths are finite and >= 0 (after unit conversion), no two depths share a path label;
   `model`, `pretrain` and `evaluate` are accepted by `ModelConfig.from_spec`,
   `TrainConfig.from_dict` and `EvalConfig.from_dict`; and every combination that cannot give
   a result is named before any job runs (`Sweep.resolved`): a batch that does not split over
   the depths and GPUs, fewer than two measurement steps (no error bar), a series store too
   small for two blocks. A default that does not fit the sweep (the pretraining batch over 3
   depths, the evaluation batch over a small `samples`) is adapted to the nearest valid value
   and said so (`Sweep.notes`); only a value the user wrote is rejected.

Resolution: `Sweep.resolved` is the sweep with every default filled in and equivalent spellings
normalised (`model: tiny` == `model: {preset: tiny}` == every size written out; a depth range
== its explicit list), so that two configs that run the same thing resolve to the same mapping.

Rerun classes (config/README.md, "What an edit reruns"): every key is `run` (it changes the
wavefunction being trained, or the measurement: a new run with its own checkpoints),
`progress` (only how far a run goes: `pretrain.steps`, `evaluate.finetune_steps`: the run
continues from its last checkpoint) or `compute` (only how it is computed, logged or shown: no
rerun; a job that runs anyway uses the new value and resumes its checkpoints). `KEY_CLASSES`
holds the class of every key; `Sweep.stage_hash` (what Snakemake compares: run and progress
keys of a stage) and `Sweep.run_hash` (the key of a checkpoint set: run keys only) hash the
resolved config by class.

Sweep names are kept as written: `read_config` reads mapping keys as their text, so a sweep
named `2024`, `on`, `yes` or `1e3` (which YAML would read as a number or a boolean) is the
string the user wrote; `written_sweep_names` recovers that text for a config that Snakemake
already parsed.

Units: `units: moire` gives the coupling λ and the depths in E_M; `units: physical` gives the
effective mass (m_e), ε, a_M (nm), and the depths in meV, converted here to E_M with
`qernel.units.PhysicalParameters`. Inside the package depths are always in E_M
(`Sweep.depths`); the path labels (`Sweep.depth_labels`, "2.500") keep the config's own units.

This module imports neither jax nor Snakemake at import time (the Snakefile imports it to
validate); resolving model/pretrain/evaluate imports their modules.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import json
import math
import re
from collections.abc import Mapping
from importlib import resources as importlib_resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from qernel.conditions import ConditionGrid
from qernel.lattice import Supercell
from qernel.system import System
from qernel.units import PhysicalParameters

#: The config file of the repository, relative to its root (the workflow's working directory).
DEFAULT_CONFIG_PATH = "config/config.yaml"
#: The sweeps `rule all` builds when the config does not name `run_sweeps` (if the config has
#: them; else every sweep of the config).
DEFAULT_RUN_SWEEPS = ("demo",)
#: The rules whose resources the config can set.
RULES = ("pretrain", "evaluate", "hartree_fock", "observables", "aggregate", "plot")
#: Built-in resources per rule (runtime in minutes, memory in MB); the config's top-level
#: `resources` and then a sweep's own `resources` override them key by key.
DEFAULT_RESOURCES: dict[str, dict[str, int]] = {
    "pretrain": {"runtime": 60, "mem_mb": 4000, "cpus_per_task": 2, "gpu": 1},
    "evaluate": {"runtime": 30, "mem_mb": 4000, "cpus_per_task": 2, "gpu": 1},
    # one CPU job per sweep (qernel.reference; minutes at the demo's size, bounded by
    # hartree_fock.max_plane_waves for larger supercells)
    "hartree_fock": {"runtime": 60, "mem_mb": 2000, "cpus_per_task": 2, "gpu": 0},
    "observables": {"runtime": 15, "mem_mb": 2000, "cpus_per_task": 1, "gpu": 0},
    "aggregate": {"runtime": 10, "mem_mb": 2000, "cpus_per_task": 1, "gpu": 0},
    "plot": {"runtime": 10, "mem_mb": 2000, "cpus_per_task": 1, "gpu": 0},
}
#: The parts of a sweep that each stage's results depend on. The workflow hands each stage a
#: snapshot of only these parts (results/<sweep>/config/<stage>.yaml). "analysis": observables,
#: aggregate, plot.
STAGE_KEYS: dict[str, tuple[str, ...]] = {
    "pretrain": ("system", "depths", "model", "pretrain", "seed"),
    "evaluate": ("system", "depths", "model", "evaluate", "seed"),
    "analysis": ("system", "depths"),
}
#: Format of the depth labels used in paths (results/{sweep}/depth/{label}/...).
DEPTH_LABEL_FORMAT = "{:.3f}"
#: Regular expression of a depth label (the workflow's wildcard constraint).
DEPTH_LABEL_REGEX = r"\d+\.\d{3}"
#: Regular expression of a sweep name.
SWEEP_NAME_REGEX = r"[A-Za-z0-9][A-Za-z0-9_-]*"

# -- rerun classes --------------------------------------------------------------------------
#: Changes the wavefunction being trained (pretrain, model, system, depths, seed) or the
#: measurement (evaluate): a new run, with a new checkpoint set; the old set is kept.
RUN = "run"
#: Changes only how far a run goes: the run continues from its last checkpoint.
PROGRESS = "progress"
#: Changes only how a run is computed, logged or shown (the same result up to round-off): no
#: pretraining or evaluation reruns; a job that runs anyway uses it and resumes its checkpoints.
COMPUTE = "compute"
RERUN_CLASSES = (RUN, PROGRESS, COMPUTE)

#: Classes of the training options (`pretrain.*`, and `evaluate.finetune.*` for fine-tuning).
#: laplacian (folx or jvp: the same Laplacian, two algorithms), max_vmap_batch_size (chunks of
#: walkers: the same numbers up to summation order), checkpoint_every, log_every and max_retries
#: (what happens on a failure, not what an accepted step does) leave the trained wavefunction
#: the same to round-off: compute. dtype changes the precision of every parameter and walker
#: (float32 vs float64 runs differ beyond round-off): run.
TRAIN_KEY_CLASSES: dict[str, str] = {
    "steps": PROGRESS,
    "batch_size": RUN, "optimizer": RUN, "learning_rate": RUN, "lr_decay_steps": RUN, "sr_damping": RUN,
    "sr_momentum": RUN, "max_update_norm": RUN, "clip_mad": RUN, "mcmc_steps": RUN, "hop_moves": RUN, "burn_in": RUN,
    "target_acceptance": RUN, "init_width": RUN, "pretrain_steps": RUN, "pretrain_learning_rate": RUN,
    "pretrain_shells": RUN, "pretrain_target": RUN, "moe_loss_weight": RUN, "depth_weighting": RUN, "reweight_every": RUN, "dtype": RUN,
    "checkpoint_every": COMPUTE, "laplacian": COMPUTE, "max_vmap_batch_size": COMPUTE, "max_retries": COMPUTE,
    "log_every": COMPUTE, "sr_damping_relative": RUN,
    # float32 matmul precision (TF32 or full on GPUs): how the same step is computed
    "matmul_precision": COMPUTE,
}
#: Classes of the evaluation options (`evaluate.*`): what is measured (run), how far the
#: fine-tuning goes (progress), how it is computed (compute; max_series_elements only stores
#: the same series in coarser blocks).
EVAL_KEY_CLASSES: dict[str, str] = {
    "finetune_steps": PROGRESS,
    "samples": RUN, "batch_size": RUN, "mcmc_steps": RUN, "hop_moves": RUN, "burn_in": RUN, "target_acceptance": RUN,
    "init_width": RUN, "density_bins": RUN, "supercell_density_bins": RUN, "structure_factor_shells": RUN,
    "pair_correlation_bins": RUN, "dtype": RUN,
    "laplacian": COMPUTE, "max_vmap_batch_size": COMPUTE, "checkpoint_every": COMPUTE,
    "max_series_elements": COMPUTE,
}
#: Every ModelConfig field shapes the network: run.
MODEL_KEYS = ("preset", "d_model", "n_layers", "n_heads", "n_kv_heads", "n_experts", "top_k", "d_ff",
              "router_input", "router_margin", "supercell_shells", "moire_shells", "k_point_features", "film_hidden",
              "n_determinants", "orbital_prior", "orbital_init_scale", "jastrow_hidden", "jastrow_shells",
              "jastrow_cusp", "jastrow_conditioned", "complex_output", "reference_depth", "prior_anchors", "prior_modulation", "learnable_prior", "additive_orbitals", "one_body_jastrow", "prior_source", "wrap_positions",
              "dtype")
#: Keys added after sweeps were first run with this package, each with the value that runs
#: exactly as before the key existed (its default). At that value a key is left out of the stage
#: snapshots and hashes (`Sweep.stage_config`), so that upgrading qernel neither reruns a sweep
#: that does not use the key nor moves its checkpoints aside; any other value is a key of its class.
ADDED_KEYS: dict[str, Any] = {"model.learnable_prior": False, "model.one_body_jastrow": False,
                               "model.additive_orbitals": True}
#: The Hartree–Fock options (qernel.reference.HFOptions; the schema's `hartree_fock`).
HF_KEYS = ("enabled", "shells", "search_shells", "starts", "seeded", "max_iter", "max_plane_waves")
#: The class of every config key, by its dotted path inside a sweep ("pretrain.log_every"); a
#: top-level key by its own name with the prefix "config." ("config.run_sweeps"). `depths`,
#: `seed`, `description` and `resources` are classed as a whole; `evaluate.finetune.<key>`
#: has the class of `pretrain.<key>`.
KEY_CLASSES: dict[str, str] = {
    "config.run_sweeps": COMPUTE,  # which sweeps to build, not what they are
    "config.resources": COMPUTE,
    "description": COMPUTE,
    "resources": COMPUTE,  # where and with how much a job runs (a batch that adapts to the GPUs says so)
    "seed": RUN,
    "depths": RUN,
    "system.supercell": RUN, "system.n_up": RUN, "system.n_down": RUN, "system.units": RUN,
    "system.phase_deg": RUN, "system.coupling": RUN, "system.effective_mass": RUN, "system.epsilon": RUN,
    "system.moire_length_nm": RUN,
    "system.energy_unit_meV": COMPUTE,  # units: moire: only shown (meV axes); the analysis stage redraws
    **{f"model.{k}": RUN for k in MODEL_KEYS},
    **{f"pretrain.{k}": c for k, c in TRAIN_KEY_CLASSES.items()},
    **{f"evaluate.{k}": c for k, c in EVAL_KEY_CLASSES.items()},
    "evaluate.finetune": RUN,  # the mapping itself; its keys: as pretrain's (evaluate.finetune.<key>)
    # the Hartree-Fock reference (its own job, qernel.reference): every option changes the result
    **{f"hartree_fock.{k}": RUN for k in HF_KEYS},
}


def key_class(path: str) -> str | None:
    """The rerun class of a config key given by its dotted path inside a sweep ("pretrain.steps",
    "evaluate.finetune.log_every", "resources.pretrain.gpu") or, for a top-level key, "config.<key>".
    None for a key without a class (a new key: the tests require every key to have one)."""
    if path in KEY_CLASSES:
        return KEY_CLASSES[path]
    if path.startswith("evaluate.finetune."):
        return TRAIN_KEY_CLASSES.get(path.removeprefix("evaluate.finetune."))
    head = path.split(".", 1)[0]
    if head in ("resources", "depths", "description", "seed"):
        return KEY_CLASSES[head]
    if path.startswith("config.resources."):
        return COMPUTE
    return None


class ConfigError(ValueError):
    """A bad config entry. `key` is the dotted path of the entry ("sweeps.demo.depths");
    `related`: the paths of the other entries the problem involves (for messages that say where
    each comes from, `explain_origin`)."""

    def __init__(self, key: str, message: str, related: tuple[str, ...] = ()):
        self.key = key
        self.message = message
        self.related = tuple(related)
        super().__init__(f"{key}: {message}" if key else message)


# -- loading --------------------------------------------------------------------------------
class _WrittenKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a plain or quoted scalar mapping key stays the text the
    user wrote: a sweep named `2024`, `on` or `1e3` is the string "2024", "on", "1e3" (YAML 1.1
    would read a number or a boolean). Merge keys (`<<: *anchor`) work as usual."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            self.flatten_mapping(node)
        mapping = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                key = key_node.value
            else:
                key = self.construct_object(key_node, deep=deep)
            mapping[key] = self.construct_object(value_node, deep=deep)
        return mapping


_WrittenKeyLoader.add_constructor("tag:yaml.org,2002:map", _WrittenKeyLoader.construct_mapping)


def load_yaml(text: str):
    """YAML text → Python objects, mapping keys kept as written (see `_WrittenKeyLoader`)."""
    return yaml.load(text, Loader=_WrittenKeyLoader)  # noqa: S506 (a SafeLoader subclass)


def _schema_resource():
    """The schema file shipped in the package, through importlib.resources (falling back to the
    module's folder, e.g. for an editable install that maps the package as a namespace)."""
    try:
        resource = importlib_resources.files("qernel").joinpath("config.schema.yaml")
        if resource.is_file():
            return resource
    except (NotADirectoryError, TypeError, ModuleNotFoundError):
        pass
    return Path(__file__).with_name("config.schema.yaml")


def schema_path() -> Path:
    """Path of the JSON schema (YAML) shipped with the package."""
    return Path(str(_schema_resource()))


@functools.lru_cache(maxsize=1)
def load_schema() -> dict:
    """The config JSON schema as a mapping."""
    return yaml.safe_load(_schema_resource().read_text(encoding="utf-8"))


def merge_configs(base: Mapping, over: Mapping) -> dict:
    """`over` merged into `base` key by key (mappings recursively, everything else replaced):
    Snakemake's merge of --configfile files."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_configs(out[key], value)
        else:
            out[key] = value
    return out


def read_config(path) -> dict:
    """The raw config mapping of a YAML file (not validated), keys as written. `path` may be a
    list of files: each is merged key by key over the ones before (`merge_configs`).

    Raises ConfigError if a file is missing, not valid YAML, or not a mapping."""
    if isinstance(path, (list, tuple)):
        merged: dict = {}
        for one in path:
            merged = merge_configs(merged, read_config(one))
        return merged
    path = Path(path)
    if not path.is_file():
        raise ConfigError("", f"config file {str(path)!r} does not exist")
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError("", f"config file {str(path)!r} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError("", f"config file {str(path)!r} must hold a mapping with a `sweeps:` key")
    return data


def load_config(path) -> dict[str, "Sweep"]:
    """Read and validate a config file; return every sweep by name (see `validate_config`).
    Raises ConfigError."""
    return validate_config(read_config(path))


def list_sweeps(path) -> list[str]:
    """The sweep names of a config file, as written, in file order (the file is validated by its
    schema). Raises ConfigError."""
    config = read_config(path)
    check_schema(config)
    return list(config["sweeps"])


def load_sweep(path, name: str, resolve: bool = True, stage: str | None = None) -> "Sweep":
    """The sweep `name` of the config file `path` (or of several, merged: `read_config`), validated (all of the file's schema, this sweep's
    physics). resolve=True also resolves and checks model/pretrain/evaluate (`Sweep.resolved`).
    stage: the workflow stage whose snapshot the file is (a key of STAGE_KEYS): only that stage's
    parts are resolved. Raises ConfigError."""
    config = read_config(path)
    check_schema(config)
    sweeps = config["sweeps"]
    name = str(name)
    if name not in sweeps:
        raise ConfigError(f"sweeps.{name}", f"unknown sweep {name!r} (known: {', '.join(map(str, sweeps))})")
    sweep = build_sweep(name, sweeps[name], config.get("resources"), stage=stage)
    if resolve:
        sweep.resolved  # noqa: B018 (resolution raises on bad entries)
    return sweep


# -- sweep names as written -----------------------------------------------------------------
def _yaml_value(text: str):
    """What YAML 1.1 (PyYAML, as Snakemake reads config files) makes of a plain scalar `text`."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _same_value(a, b) -> bool:
    return type(a) is type(b) and a == b


def written_sweep_names(config: Mapping, layers: list[tuple[str, Mapping]]) -> dict:
    """Snakemake's parsed config → {key as parsed: name as written} for every sweep whose name
    YAML read as something other than a string (2024 → "2024", True → "on"), from `layers`: the
    config files as read by `read_config` (keys as written), in merge order. A name with no
    written form (from --config) is str() of an integer; anything else must be quoted.

    Raises ConfigError for a name that cannot be recovered or two names YAML reads alike
    (`on` and `yes` are both true)."""
    out = {}
    for key in (config.get("sweeps") or {}):
        if isinstance(key, str):
            continue
        spellings = []
        for _, layer in layers:
            for name in (layer.get("sweeps") or {}) if isinstance(layer, Mapping) else ():
                if isinstance(name, str) and _same_value(_yaml_value(name), key) and name not in spellings:
                    spellings.append(name)
        if len(spellings) > 1:
            raise ConfigError("sweeps", f"the sweep names {', '.join(map(repr, spellings))} are the same "
                                        f"{type(key).__name__} ({key!r}) to YAML: quote them ('{spellings[0]}')")
        if spellings:
            out[key] = spellings[0]
        elif isinstance(key, int) and not isinstance(key, bool):
            out[key] = str(key)
        else:
            raise ConfigError(f"sweeps.{key}", f"YAML read this sweep name as a {type(key).__name__}: quote it "
                                               f"(e.g. 'on', '1.5') so that it is the name you wrote")
    return out


def with_written_sweep_names(config: Mapping, layers: list[tuple[str, Mapping]]) -> dict:
    """A copy of the config whose sweep names are the strings the user wrote (see
    `written_sweep_names`). Raises ConfigError."""
    names = written_sweep_names(config, layers)
    if not names:
        return dict(config)
    out = dict(config)
    out["sweeps"] = {names.get(k, k): v for k, v in config["sweeps"].items()}
    return out


def _matches(value, name: str) -> bool:
    """Does a run_sweeps entry (as parsed: 2024, True, "demo") name the sweep `name` (as written)?"""
    if isinstance(value, str):
        return value == name
    return _same_value(_yaml_value(name), value) or (isinstance(value, int) and str(value) == name)


# -- where a key comes from -----------------------------------------------------------------
def _has_path(mapping, path: str) -> bool:
    node = mapping
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return False
        match = [k for k in node if str(k) == part]
        if not match:
            return False
        node = node[match[0]]
    return True


def key_origin(path: str, layers: list[tuple[str, Mapping]]) -> str | None:
    """The label of the last layer (config file, or "--config") that sets the dotted key `path`:
    the one whose value Snakemake's deep merge keeps. None if no layer sets it."""
    found = None
    for label, layer in layers:
        if _has_path(layer, path):
            found = label
    return found


def explain_origin(error: ConfigError, layers: list[tuple[str, Mapping]]) -> str:
    """The error's message, followed — when its keys come from more than one config layer (a
    --configfile merged into config/config.yaml) — by where each comes from and how to replace a
    sweep instead of merging into it."""
    keys = [k for k in (error.key, *error.related) if k]
    origins = {k: key_origin(k, layers) for k in keys}
    sweep_key = ".".join(error.key.split(".")[:2]) if error.key.startswith("sweeps.") else None
    sources = {label for label, layer in layers if sweep_key and _has_path(layer, sweep_key)}
    if len(sources) < 2 and len({o for o in origins.values() if o}) < 2:
        return str(error)
    where = "; ".join(f"{k} from {o}" for k, o in origins.items() if o)
    return (f"{error} [{where}. Snakemake merges the config files key by key ({', '.join(l for l, _ in layers)}): "
            f"to replace the workflow's config instead, run with --replace-workflow-config (then your "
            f"--configfile holds every sweep), or give your sweep a new name]")


# -- validation -----------------------------------------------------------------------------
def _dotted(path) -> str:
    return ".".join(str(p) for p in path)


def _schema_at(schema: dict, root: dict, schema_path) -> dict:
    """The sub-schema at `schema_path` (following $ref)."""
    node = schema
    for part in schema_path:
        node = node[part]
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        node = root
        for part in ref.lstrip("#/").split("/"):
            node = node[part]
    return node


_JSON_TYPES = {"object": Mapping, "array": (list, tuple), "string": str}


def _branch_matches(branch: dict, instance) -> bool:
    kind = branch.get("type")
    if kind in _JSON_TYPES:
        return isinstance(instance, _JSON_TYPES[kind])
    if kind == "integer":
        return isinstance(instance, int) and not isinstance(instance, bool)
    if kind == "number":
        return isinstance(instance, (int, float)) and not isinstance(instance, bool)
    return kind is None


def _format_schema_error(error, root: dict) -> ConfigError:
    """A jsonschema ValidationError → ConfigError naming the key."""
    path = _dotted(error.absolute_path)
    if "propertyNames" in error.schema_path:
        return ConfigError(path, f"bad name {error.instance!r}: use letters, digits, '_' and '-' "
                                 f"(starting with a letter or digit)")
    if error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
        known = set(error.schema.get("properties", {}))
        extra = [k for k in error.instance if k not in known]
        if extra:
            key = f"{path}.{extra[0]}" if path else str(extra[0])
            allowed = ", ".join(sorted(known)) or "none"
            return ConfigError(key, f"unknown key (allowed here: {allowed})")
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        key = f"{path}.{missing}" if path else missing
        return ConfigError(key, "required key is missing")
    if error.validator in ("anyOf", "oneOf"):
        # report the alternative of the instance's own kind (a list of depths, a range mapping)
        branches = [_schema_at(b, root, ()) for b in error.validator_value]
        matching = {i for i, b in enumerate(branches) if _branch_matches(b, error.instance)}
        context = [e for e in error.context if e.schema_path and e.schema_path[0] in matching]
        if context:
            context.sort(key=lambda e: (len(e.absolute_path), [str(p) for p in e.absolute_path]))
            return _format_schema_error(context[0], root)
        return ConfigError(path, f"{error.instance!r} is not valid here: {_describe_alternatives(branches)}")
    return ConfigError(path, error.message)


def _describe_alternatives(branches) -> str:
    kinds = [b["type"] if isinstance(b.get("type"), str) else "a mapping" for b in branches]
    return "expected " + " or ".join(dict.fromkeys(kinds))


def check_schema(config: Mapping) -> None:
    """Validate a raw config mapping against the JSON schema; raise ConfigError on the first
    error (in document order: the shallowest, then leftmost, key)."""
    import jsonschema

    sweeps = config.get("sweeps") if isinstance(config, Mapping) else None
    if isinstance(sweeps, Mapping):
        for name in sweeps:
            if not isinstance(name, str):
                raise ConfigError(f"sweeps.{name}", f"YAML read this sweep name as a {type(name).__name__}: "
                                                    f"quote it so that it is the name you wrote")
    schema = load_schema()
    validator = jsonschema.Draft7Validator(schema)
    errors = numbers_as_written(config, validator)
    if not errors:
        return
    errors.sort(key=lambda e: (len(e.absolute_path), [str(p) for p in e.absolute_path]))
    raise _format_schema_error(errors[0], schema)


#: A number as YAML 1.2 writes it (`1e-3`, `1.0e6`, `5E+2`); PyYAML and Snakemake read YAML 1.1,
#: whose floats need a dot and a signed exponent, so they read these as text.
_NUMBER_LITERAL = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")


def _as_number(value, kinds):
    """`value` read as a number if it is text written as a YAML 1.2 number and `kinds` (type
    names) want one: an int where only "integer"/"int" is wanted and the number is whole, else a
    float. Anything else: None."""
    if not isinstance(value, str) or not _NUMBER_LITERAL.fullmatch(value.strip()):
        return None
    kinds = set(kinds)
    if not kinds & {"number", "integer", "float", "int"}:
        return None
    number = float(value)
    return int(number) if not kinds & {"number", "float"} and number.is_integer() else number


def _errors_within(errors):
    for error in errors:
        yield error
        yield from _errors_within(error.context or ())


def numbers_as_written(config, validator=None) -> list:
    """Read, in place, every text value of `config` that stands where a number is wanted and is a
    number as YAML 1.2 writes it: `learning_rate: 1e-3` is 0.001 (an integer where only an integer
    is wanted: `steps: 1e3` is 1000), as the user meant; YAML 1.1 (PyYAML, Snakemake) reads it as
    the text "1e-3". Where a number is wanted: the schema's types, and the number fields of the
    model, pretrain and evaluate dataclasses and of evaluate.finetune's training options (the
    schema leaves those to them). Other text stays as it is (a description, a sweep name in
    run_sweeps). Returns the schema's errors that remain
    (jsonschema ValidationErrors, for `check_schema`, which calls it first)."""
    if validator is None:
        import jsonschema

        validator = jsonschema.Draft7Validator(load_schema())
    while True:
        errors = list(validator.iter_errors(to_plain(config)))
        read = {}
        for error in _errors_within(errors):
            kinds = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
            number = _as_number(error.instance, kinds) if error.validator == "type" else None
            if number is not None and error.absolute_path:
                read[tuple(error.absolute_path)] = number
        for path, number in read.items():
            parent = config
            for key in path[:-1]:
                parent = parent[key]
            parent[path[-1]] = number
        if not read:
            break
    from qernel.eval_config import EvalConfig
    from qernel.model.config import ModelConfig
    from qernel.train_config import TrainConfig

    sweeps = config.get("sweeps") if isinstance(config, Mapping) else None
    for spec in (sweeps.values() if isinstance(sweeps, Mapping) else ()):
        if not isinstance(spec, Mapping):
            continue
        evaluate = spec.get("evaluate")
        finetune = evaluate.get("finetune") if isinstance(evaluate, dict) else None  # training options
        for section, cls in ((spec.get("model"), ModelConfig), (spec.get("pretrain"), TrainConfig),
                             (evaluate, EvalConfig), (finetune, TrainConfig)):
            if not isinstance(section, dict):
                continue
            for field in dataclasses.fields(cls):
                number = _as_number(section.get(field.name), re.findall(r"\w+", str(field.type)))
                if number is not None:
                    section[field.name] = number
    return errors


def to_plain(obj):
    """YAML/Snakemake config objects → plain dicts, lists and JSON scalars (for jsonschema and
    canonical JSON): tuples → lists, numpy scalars → Python numbers, dates → ISO text."""
    if isinstance(obj, Mapping):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_plain(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (datetime.date, Path)):
        return str(obj)
    return obj


def run_sweeps(config: Mapping) -> list[str]:
    """The sweeps `rule all` builds: config `run_sweeps` (a list, "all", or "a,b"). Without it:
    demo if the config has it, else every sweep of the config. Entries that YAML read as numbers
    or booleans (`run_sweeps=[2024]`) name the sweep written that way. Raises ConfigError."""
    names = [str(n) for n in config["sweeps"]]
    default = [n for n in DEFAULT_RUN_SWEEPS if n in names] or names
    value = config.get("run_sweeps", default)
    if isinstance(value, str):
        text = value.strip().strip("[]")
        value = names if text == "all" else [v.strip() for v in text.replace(",", " ").split() if v.strip()]
    if not isinstance(value, (list, tuple)):
        value = [value]
    if not value:
        raise ConfigError("run_sweeps", "names no sweep")
    out = []
    for v in value:
        hits = [n for n in names if _matches(v, n)]
        if not hits:
            raise ConfigError("run_sweeps", f"unknown sweep {v!r} (known: {', '.join(names)})")
        if len(hits) > 1:
            raise ConfigError("run_sweeps", f"{v!r} names several sweeps ({', '.join(hits)}): quote it")
        out.append(hits[0])
    return list(dict.fromkeys(out))


def validate_config(config: Mapping, resolve: bool = True) -> dict[str, "Sweep"]:
    """Validate a whole config mapping (schema, run_sweeps, every sweep's physics); return the
    sweeps by name. resolve=True also resolves model/pretrain/evaluate with their own modules
    and checks their combinations (`Sweep.resolved`). Raises ConfigError."""
    check_schema(config)
    run_sweeps(config)
    sweeps = {name: build_sweep(name, spec, config.get("resources")) for name, spec in config["sweeps"].items()}
    if resolve:
        for sweep in sweeps.values():
            sweep.resolved  # noqa: B018 (resolution raises on bad entries)
    return sweeps


# -- resources ------------------------------------------------------------------------------
def rule_resources(config: Mapping, sweep: str, rule: str) -> dict[str, int]:
    """Resources of `rule` for `sweep`: built-in defaults < config `resources` < sweep `resources`.
    Raises KeyError for an unknown rule."""
    if rule not in DEFAULT_RESOURCES:
        raise KeyError(f"unknown rule {rule!r}; rules with resources: {', '.join(RULES)}")
    out = dict(DEFAULT_RESOURCES[rule])
    out.update((config.get("resources") or {}).get(rule) or {})
    out.update(((config["sweeps"][sweep].get("resources") or {}).get(rule)) or {})
    return out


def _merged_resources(defaults: Mapping | None, own: Mapping | None) -> dict[str, dict[str, int]]:
    out = {rule: dict(values) for rule, values in DEFAULT_RESOURCES.items()}
    for source in (defaults or {}, own or {}):
        for rule, values in source.items():
            out[rule].update(values or {})
    return out


# -- canonical form and hashes --------------------------------------------------------------
def canonical_json(mapping) -> str:
    """Canonical JSON of a config mapping: sorted keys, no whitespace, plain types (tuples as
    lists, numpy scalars as numbers). The one serialisation that every config hash covers."""
    return json.dumps(to_plain(mapping), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True)


def config_hash(mapping) -> str:
    """sha256 (hex, 64 characters) of `canonical_json(mapping)`: the one config hash of the
    package (output provenance, stage and checkpoint-set keys)."""
    return hashlib.sha256(canonical_json(mapping).encode("utf-8")).hexdigest()


def depth_label(value: float) -> str:
    """The path label of a depth in the config's units: 2.5 → "2.500"."""
    label = DEPTH_LABEL_FORMAT.format(float(value))
    return "0.000" if label == "-0.000" else label


def canonical_sweep(spec: Mapping) -> dict:
    """The sweep mapping as written, normalised without importing any model code: system with
    n_down and the supercell matrix filled in and numbers as floats, depths as the explicit list
    of values, model/pretrain/evaluate as written (`Sweep.resolved` fills their defaults), seed
    (default 0). resources and description are left out."""
    spec = to_plain(spec)
    system = dict(spec["system"])
    system.setdefault("n_down", 0)
    if isinstance(system.get("supercell"), int):
        n = system["supercell"]
        system["supercell"] = [[n, 0], [0, n]]
    for key in ("coupling", "phase_deg", "energy_unit_meV", "effective_mass", "epsilon", "moire_length_nm"):
        if key in system:
            system[key] = float(system[key])
    return {
        "system": system,
        "depths": [float(v) for v in _grid_values(spec["depths"])],
        "model": spec.get("model", "tiny"),
        "pretrain": dict(spec.get("pretrain") or {}),
        "evaluate": dict(spec.get("evaluate") or {}),
        "seed": int(spec.get("seed", 0)),
    }


def _grid_values(spec) -> np.ndarray:
    if isinstance(spec, Mapping):
        return np.linspace(float(spec["start"]), float(spec["stop"]), int(spec["num"]))
    return np.asarray([float(v) for v in spec], dtype=float)


def _grid(spec, key: str) -> np.ndarray:
    values = _grid_values(spec)
    if values.size == 0:
        raise ConfigError(key, "the depth grid is empty")
    for i, v in enumerate(values):
        if not math.isfinite(v):
            raise ConfigError(key, f"depth {v!r} (entry {i}) is not finite")
        if v < 0:
            raise ConfigError(key, f"depth {v!r} (entry {i}) is negative; depths V must be >= 0")
    return values


def _system(name: str, spec: Mapping) -> tuple[System, float | None]:
    key = f"sweeps.{name}.system"
    units = spec["units"]
    moire_only = ("coupling", "energy_unit_meV")
    physical_only = ("effective_mass", "epsilon", "moire_length_nm")
    wrong = [k for k in (physical_only if units == "moire" else moire_only) if k in spec]
    if wrong:
        if units == "moire":
            hint = "give material parameters with units: physical (depths then in meV)"
        else:
            hint = "with units: physical, λ and E_M follow from effective_mass, epsilon, moire_length_nm"
        others = "".join(f"; so is {key}.{k}" for k in wrong[1:])  # every such key at once, not one per run
        raise ConfigError(f"{key}.{wrong[0]}", f"not allowed with units: {units} ({hint}){others}",
                          related=(f"{key}.units", *(f"{key}.{k}" for k in wrong[1:])))

    matrix = spec["supercell"]
    if isinstance(matrix, int):
        matrix = [[matrix, 0], [0, matrix]]
    try:
        supercell = Supercell(tuple(tuple(int(v) for v in row) for row in matrix))
    except ValueError as e:
        raise ConfigError(f"{key}.supercell", f"{matrix!r}: {e}; |det S| must be >= 1") from None

    n_up, n_down = int(spec["n_up"]), int(spec.get("n_down", 0))
    if n_up + n_down == 0:
        raise ConfigError(f"{key}.n_up", "n_up + n_down = 0: the system needs at least one electron",
                          related=(f"{key}.n_down",))
    phase = math.radians(float(spec["phase_deg"]))
    if not math.isfinite(phase):
        raise ConfigError(f"{key}.phase_deg", "must be finite")

    if units == "physical":
        try:
            physical = PhysicalParameters(float(spec["effective_mass"]), float(spec["epsilon"]),
                                          float(spec["moire_length_nm"]))
            coupling, e_m = physical.coupling, physical.energy_unit_meV
        except ValueError as e:
            raise ConfigError(key, str(e)) from None
    else:
        physical = None
        coupling = float(spec["coupling"])
        e_m = float(spec["energy_unit_meV"]) if "energy_unit_meV" in spec else None
        if not math.isfinite(coupling):
            raise ConfigError(f"{key}.coupling", "must be finite")
        if e_m is not None and not math.isfinite(e_m):
            raise ConfigError(f"{key}.energy_unit_meV", "must be finite")
    system = System(supercell, n_up, n_down, coupling, phase, physical)
    return system, e_m


def single_particle_capacity(system: System) -> int:
    """How many electrons of one spin the model can hold: the single-particle states of the exact
    plane-wave solver `qernel.bands` at the supercell's k-points (its default basis), less the one
    level it keeps to test for a closed shell. The model's Bloch envelopes and orbital prior are
    built from these states."""
    from qernel.bands import DEFAULT_SHELLS
    from qernel.lattice import MOIRE_RECIPROCAL, lattice_points

    n_pw = len(lattice_points(MOIRE_RECIPROCAL, DEFAULT_SHELLS * np.linalg.norm(MOIRE_RECIPROCAL[0])))
    return system.supercell.n_cells * n_pw - 1


def build_sweep(name: str, spec: Mapping, default_resources: Mapping | None = None,
                stage: str | None = None) -> "Sweep":
    """A `Sweep` from one schema-valid sweep mapping (physical checks here; the model, engine and
    evaluation options are resolved and checked by `Sweep.resolved`). stage: the workflow stage
    whose snapshot `spec` is (None: a whole sweep). Raises ConfigError; KeyError for an unknown
    stage."""
    if stage is not None and stage not in STAGE_KEYS:
        raise KeyError(f"unknown stage {stage!r}; stages: {', '.join(STAGE_KEYS)}")
    system, e_m = _system(name, spec["system"])
    for spin in ("n_up", "n_down"):
        n = getattr(system, spin)
        if n:
            cap = single_particle_capacity(system)
            if n > cap:
                raise ConfigError(f"sweeps.{name}.system.{spin}",
                                  f"{n} electrons of one spin exceed the {cap} single-particle states the "
                                  f"model can hold in a {system.supercell.n_cells}-cell supercell",
                                  related=(f"sweeps.{name}.system.supercell",))
    key = f"sweeps.{name}.depths"
    values = _grid(spec["depths"], key)
    units = spec["system"]["units"]
    depths = values / e_m if units == "physical" else values.copy()
    labels = [depth_label(v) for v in values]
    seen: dict[str, float] = {}
    for label, v in zip(labels, values):
        if label in seen:
            raise ConfigError(key, f"depths {seen[label]!r} and {float(v)!r} share the path label {label!r}: "
                                   f"depths must differ by at least 0.001 ({'meV' if units == 'physical' else 'E_M'})")
        seen[label] = float(v)
    canonical = canonical_sweep(spec)
    return Sweep(
        name=name,
        system=system,
        conditions=ConditionGrid.from_depths(depths, labels),
        depth_values_config=values,
        units=units,
        energy_unit_meV=e_m,
        model_spec=canonical["model"],
        pretrain_spec=canonical["pretrain"],
        evaluate_spec=canonical["evaluate"],
        seed=canonical["seed"],
        resources=_merged_resources(default_resources, spec.get("resources")),
        raw=to_plain(spec),
        written=canonical,
        stage=stage,
    )


def sweep_snapshot(name: str, spec: Mapping, stage: str | None = None,
                   default_resources: Mapping | None = None) -> str:
    """The snapshot (YAML text) of one sweep mapping (see `Sweep.snapshot`). Raises ConfigError."""
    return build_sweep(name, spec, default_resources).snapshot(stage)


def hartree_fock_snapshot(name: str, spec: Mapping) -> str:
    """The config file (YAML text) that the workflow's hartree_fock rule reads: the sweep's
    system and depths (canonical, as in qernel.config's snapshots) and its hartree_fock options."""
    canonical = canonical_sweep(spec)
    # E_M in meV only labels outputs (a compute key, KEY_CLASSES): HF does not rerun for it
    system = {k: v for k, v in canonical["system"].items() if k != "energy_unit_meV"}
    part = {"system": system, "depths": canonical["depths"]}
    hf = dict(spec.get("hartree_fock") or {})
    if hf:
        part["hartree_fock"] = hf
    body = yaml.safe_dump({"sweeps": {name: part}}, sort_keys=True, default_flow_style=None, width=100)
    return (f"# the parts of sweep {name!r} that stage 'hartree_fock' depends on, as validated by the workflow.\n"
            f"# sha256 {hashlib.sha256(canonical_json(part).encode('utf-8')).hexdigest()}\n" + body)


# -- resolution -----------------------------------------------------------------------------
def _nearest_multiple(value: int, unit: int) -> int:
    """The multiple of `unit` nearest to `value` (at least `unit`; ties go up)."""
    return max(unit, int(math.floor(value / unit + 0.5)) * unit)


def _field_default(cls, name: str):
    field = {f.name: f for f in dataclasses.fields(cls)}[name]
    return field.default if field.default is not dataclasses.MISSING else field.default_factory()


def _filter_classes(part: str, value, classes: tuple[str, ...]):
    """The keys of one resolved part whose class is in `classes` (depths, seed: as a whole)."""
    if not isinstance(value, Mapping) or part not in ("system", "model", "pretrain", "evaluate"):
        return value if (key_class(part) or RUN) in classes else None
    out = {}
    for key, v in value.items():
        path = f"{part}.{key}"
        if path == "evaluate.finetune" and isinstance(v, Mapping):
            inner = {k: x for k, x in v.items() if (key_class(f"{path}.{k}") or RUN) in classes}
            if RUN in classes or inner:
                out[key] = inner
            continue
        if path in ADDED_KEYS and v == ADDED_KEYS[path] and type(v) is type(ADDED_KEYS[path]):
            continue  # runs as before the key existed: not part of any stage's hash
        if (key_class(path) or RUN) in classes:
            out[key] = v
    return out


@dataclasses.dataclass(frozen=True, eq=False)
class Sweep:
    """One sweep: a system and a grid of depths, with the options of every stage.

    conditions: the sweep's condition grid (`qernel.conditions.ConditionGrid`: D points, their
    condition vectors (D, n_cond) and path labels); today's sweeps resolve to n_cond = 1, the
    depth. depths: (D,) in E_M (the package's unit), its depth column; depth_labels: its D path
    labels in the config's units ("2.500"); cond_range: its (min, max) per component.
    depth_values_config: (D,) in the config's units (E_M, or meV with units physical);
    energy_unit_meV: E_M in meV, or None when unknown (moiré units without energy_unit_meV).
    model_spec / pretrain_spec / evaluate_spec: as written; model / pretrain / evaluate:
    `ModelConfig`, `TrainConfig`, `EvalConfig` of the resolved sweep. raw: the sweep mapping as
    written; written: `canonical_sweep(raw)`; resolved: every default filled in (`resolved`).
    resources: per rule, the merged resources (runtime in minutes, mem_mb, cpus_per_task, gpu).
    stage: None for a whole sweep, else the stage whose snapshot this is (only its parts resolve).
    """

    name: str
    system: System
    conditions: ConditionGrid
    depth_values_config: np.ndarray
    units: str
    energy_unit_meV: float | None
    model_spec: Any
    pretrain_spec: dict
    evaluate_spec: dict
    seed: int
    resources: dict
    raw: dict
    written: dict
    stage: str | None = None

    # -- resolution -------------------------------------------------------------------------
    @property
    def parts(self) -> tuple[str, ...]:
        """The parts of the sweep this object stands for: all, or its stage's (STAGE_KEYS)."""
        if self.stage is None:
            return ("system", "depths", "model", "pretrain", "evaluate", "seed")
        return STAGE_KEYS[self.stage]

    def _key(self, *path: str) -> str:
        return ".".join(("sweeps", self.name) + path)

    def _component(self, kind: str, build):
        try:
            return build()
        except (ValueError, TypeError, KeyError) as e:
            msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
            raise ConfigError(self._key(kind), msg) from None

    @functools.cached_property
    def _resolution(self) -> tuple[dict, tuple[str, ...]]:
        notes: list[str] = []
        out = {key: self.written[key] for key in ("system", "depths", "seed")}
        if "model" in self.parts:
            from qernel.model.config import ModelConfig

            out["model"] = self._component("model", lambda: ModelConfig.from_spec(self.model_spec).to_dict())
        if "pretrain" in self.parts:
            out["pretrain"] = self._resolve_pretrain(notes)
        if "evaluate" in self.parts:
            out["evaluate"] = self._resolve_evaluate(notes)
        return {key: out[key] for key in self.parts}, tuple(notes)

    def _resolve_pretrain(self, notes: list) -> dict:
        from qernel.train_config import TrainConfig

        spec = dict(self.pretrain_spec)
        devices = max(1, int(self.resources["pretrain"].get("gpu", 0)))
        n_depths = len(self.depths)
        unit = devices * n_depths
        where = f"{n_depths} depths × {devices} GPU(s) (resources.pretrain.gpu)"
        batch = spec.get("batch_size")
        if isinstance(batch, int) and not isinstance(batch, bool):
            if batch % unit:
                raise ConfigError(self._key("pretrain", "batch_size"),
                                  f"{batch} walkers do not split evenly over {where}: use a multiple of {unit}, "
                                  f"e.g. {_nearest_multiple(batch, unit)}",
                                  related=(self._key("depths"), self._key("resources", "pretrain", "gpu")))
        elif batch is None:
            default = _field_default(TrainConfig, "batch_size")
            if default % unit:
                spec["batch_size"] = _nearest_multiple(default, unit)
                notes.append(f"pretrain.batch_size: the default {default} walkers do not split over {where}; "
                             f"using {spec['batch_size']}, the nearest multiple of {unit}")
        return self._component("pretrain", lambda: TrainConfig.from_dict(spec).to_dict())

    def _resolve_evaluate(self, notes: list) -> dict:
        from qernel.eval_config import EvalConfig
        from qernel.observables import default_observables
        from qernel.train_config import check_finetune_options

        spec = dict(self.evaluate_spec)
        devices = max(1, int(self.resources["evaluate"].get("gpu", 0)))
        gpu_key = self._key("resources", "evaluate", "gpu")
        samples = spec.get("samples", _field_default(EvalConfig, "samples"))
        batch = spec.get("batch_size")
        valid_int = isinstance(samples, int) and not isinstance(samples, bool)
        if isinstance(batch, int) and not isinstance(batch, bool) and valid_int:
            if batch % devices:
                raise ConfigError(self._key("evaluate", "batch_size"),
                                  f"{batch} walkers do not split evenly over {devices} GPU(s) "
                                  f"(resources.evaluate.gpu): use a multiple of {devices}, e.g. "
                                  f"{_nearest_multiple(batch, devices)}", related=(gpu_key,))
            if samples <= batch:
                steps = -(-samples // batch)
                fix = (f"the smallest valid evaluate.samples is {batch + 1} (2 steps of {batch} walkers)"
                       + (f", or evaluate.batch_size at most {(samples - 1) // devices * devices}"
                          if samples - 1 >= devices else ""))
                written_samples = "samples" in spec
                raise ConfigError(self._key("evaluate", "samples" if written_samples else "batch_size"),
                                  f"{samples} samples{'' if written_samples else ' (the default)'} of "
                                  f"{batch} walkers make {steps} measurement step: error bars need at least 2 "
                                  f"steps; {fix}",
                                  related=(self._key("evaluate", "batch_size" if written_samples else "samples"),))
        elif batch is None and valid_int:
            default = _field_default(EvalConfig, "batch_size")
            chosen = max(devices, default // devices * devices)
            if samples <= chosen:  # two steps of half the samples each: what was asked, with error bars
                chosen = samples // 2 // devices * devices
            if chosen < devices:
                raise ConfigError(self._key("evaluate", "samples"),
                                  f"{samples} sample(s) cannot give an error bar: at least 2 measurement steps "
                                  f"of at least {devices} walker(s) (one per GPU, resources.evaluate.gpu) are "
                                  f"needed; the smallest valid evaluate.samples is {2 * devices}", related=(gpu_key,))
            if chosen != default:
                spec["batch_size"] = chosen
                why = (f"over {devices} GPU(s)" if samples > default else
                       f"with evaluate.samples = {samples} (error bars need at least 2 measurement steps)")
                notes.append(f"evaluate.batch_size: the default {default} walkers do not fit {why}; "
                             f"using {chosen}")
        fine = spec.get("finetune") or {}
        if isinstance(fine, Mapping) and isinstance(fine.get("batch_size"), int) and fine["batch_size"] % devices:
            raise ConfigError(self._key("evaluate", "finetune", "batch_size"),
                              f"{fine['batch_size']} walkers do not split evenly over {devices} GPU(s) "
                              f"(resources.evaluate.gpu): use a multiple of {devices}", related=(gpu_key,))
        cfg = self._component("evaluate", lambda: EvalConfig.from_dict(spec))
        if isinstance(fine, Mapping):
            self._component("evaluate", lambda: check_finetune_options(dict(fine)))
        # every stored series must keep at least 2 blocks (observables needs 2 for error bars)
        largest = max([int(np.prod(spec.shape)) for o in default_observables(self.system, cfg)
                       for spec in o.series().values()] + [1])
        if cfg.max_series_elements < 2 * largest:
            if "max_series_elements" in spec:
                raise ConfigError(self._key("evaluate", "max_series_elements"),
                                  f"{cfg.max_series_elements} numbers cannot hold 2 blocks of the largest series "
                                  f"({largest} numbers per step: density grids, k-points, g(r) bins), which the "
                                  f"error bars need: the smallest valid value is {2 * largest}")
            spec["max_series_elements"] = 2 * largest
            notes.append(f"evaluate.max_series_elements: the default does not hold 2 blocks of a {largest}-number "
                         f"series; using {2 * largest}")
            cfg = self._component("evaluate", lambda: EvalConfig.from_dict(spec))
        if isinstance(fine, Mapping):
            self._component("evaluate", lambda: check_finetune_options(dict(fine)))
        return cfg.to_dict()

    @property
    def resolved(self) -> dict:
        """The sweep's parts (`parts`) with every default filled in: system and depths as in
        `canonical_sweep`, model as every `ModelConfig` field, pretrain and evaluate as every
        `TrainConfig` / `EvalConfig` field, defaults adapted to the sweep (`notes`). Equivalent
        configs resolve to equal mappings. Raises ConfigError naming the key of a bad or
        impossible entry."""
        return self._resolution[0]

    @property
    def notes(self) -> tuple[str, ...]:
        """What resolution adapted (a default that did not fit the sweep), one line each."""
        return self._resolution[1]

    @functools.cached_property
    def model(self):
        from qernel.model.config import ModelConfig

        return ModelConfig.from_spec(self.resolved["model"])

    @functools.cached_property
    def pretrain(self):
        from qernel.train_config import TrainConfig

        return TrainConfig.from_dict(self.resolved["pretrain"])

    @functools.cached_property
    def evaluate(self):
        from qernel.eval_config import EvalConfig

        return EvalConfig.from_dict(self.resolved["evaluate"])

    def validate_components(self) -> None:
        """Resolve model, pretrain and evaluate now (ConfigError naming the key if one is bad or
        if a combination cannot give a result)."""
        self.resolved  # noqa: B018

    # -- hashes and snapshots ---------------------------------------------------------------
    def stage_config(self, stage: str, classes: tuple[str, ...] = RERUN_CLASSES) -> dict:
        """The resolved parts `stage` reads, keeping the keys whose rerun class is in `classes`
        (an `ADDED_KEYS` key at its value from before it existed is left out).

        Raises KeyError for an unknown stage.
        """
        if stage not in STAGE_KEYS:
            raise KeyError(f"unknown stage {stage!r}; stages: {', '.join(STAGE_KEYS)}")
        out = {}
        for part in STAGE_KEYS[stage]:
            value = _filter_classes(part, self.resolved[part], classes)
            if value is not None:
                out[part] = value
        return out

    def stage_hash(self, stage: str) -> str:
        """What Snakemake compares to decide whether the jobs of `stage` rerun: the hash of the
        run and progress keys of the parts the stage reads (analysis: of every key of them, since
        the figures show E_M in meV too)."""
        classes = RERUN_CLASSES if stage == "analysis" else (RUN, PROGRESS)
        return config_hash(self.stage_config(stage, classes))

    def run_hash(self, stage: str) -> str:
        """The key of the checkpoint set of `stage`: the hash of its run keys only (a changed
        progress or compute key continues the same set)."""
        return config_hash(self.stage_config(stage, (RUN,)))

    @property
    def canonical(self) -> dict:
        """The resolved sweep (the parts this object stands for)."""
        return self.resolved

    @functools.cached_property
    def config_hash(self) -> str:
        """`config_hash` of the resolved sweep."""
        return config_hash(self.resolved)

    @property
    def given(self) -> dict:
        """The resolved parts of the sweep that its config gives (a stage snapshot gives only its
        stage's parts): what outputs record as their config."""
        return dict(self.resolved)

    def snapshot(self, stage: str | None = None, compute: bool = False) -> str:
        """A config file (YAML text) holding only this sweep, resolved. Without a stage: the whole
        sweep. With a stage: the parts it reads — its run and progress keys (every key for
        "analysis", which shows them all), or with compute=True its compute keys. The workflow
        hands both snapshots of a stage to its `qernel` jobs (`--config RUN --config COMPUTE`),
        so that every job sees exactly the config Snakemake validated, and rewrites the compute
        one without rerunning anything. Raises ConfigError."""
        if stage is None:
            body = dict(self.resolved)
        elif compute:
            body = {k: v for k, v in self.stage_config(stage, (COMPUTE,)).items() if v not in ({}, None)}
        else:
            body = self.stage_config(stage, RERUN_CLASSES if stage == "analysis" else (RUN, PROGRESS))
        text = yaml.safe_dump({"sweeps": {self.name: to_plain(body)}}, sort_keys=True, default_flow_style=None,
                              width=100, allow_unicode=True)
        if stage is None:
            what = f"sweep {self.name!r}"
        else:
            what = (f"the {'compute' if compute else 'run and progress'} keys of sweep {self.name!r} that stage "
                    f"{stage!r} reads")
        head = [f"# {what}, resolved by the workflow (defaults filled in)."]
        if stage is not None and not compute:
            head.append(f"# stage hash {self.stage_hash(stage)}; checkpoint-set hash {self.run_hash(stage)}")
        # only the notes on the parts this file holds: a note on another stage's key would make an
        # edit of that stage rewrite this file, and Snakemake rerun the jobs that read it
        head += [f"# adapted: {note}" for note in self.notes if stage is None or note.split(".", 1)[0] in body]
        return "\n".join(head) + "\n" + text

    # -- depths and units ---------------------------------------------------------------------
    @property
    def config_units(self) -> str:
        """Unit of the depth labels and depth_values_config: "E_M" or "meV"."""
        return "meV" if self.units == "physical" else "E_M"

    @property
    def depths(self) -> np.ndarray:
        """(D,) the depths V in E_M: the condition grid's depth column (read-only)."""
        return self.conditions.depths

    @property
    def depth_labels(self) -> list[str]:
        """The D path labels of the grid points ("2.500", in the config's units)."""
        return list(self.conditions.labels)

    @property
    def cond_range(self) -> tuple[tuple[float, float], ...]:
        """((min, max) per condition component): ((V_min, V_max),) in E_M for today's sweeps; the
        condition range for `make_wavefunction` (with `conditions.names` as its condition_names)."""
        return self.conditions.cond_range

    def depth_index(self, label: str) -> int:
        """Index of a depth given by its path label (or a number in config units). Raises
        ConfigError if the sweep has no such depth."""
        label = str(label)
        if label not in self.depth_labels:
            try:
                label = depth_label(float(label))
            except ValueError:
                pass
        if label not in self.depth_labels:
            raise ConfigError(f"sweeps.{self.name}.depths",
                              f"no depth {label!r} in this sweep (depths: {', '.join(self.depth_labels)})")
        return self.depth_labels.index(label)

    def depth(self, label: str) -> float:
        """Depth V in E_M of a path label. Raises ConfigError if the sweep has no such depth."""
        return float(self.depths[self.depth_index(label)])

    def to_meV(self, energy):
        """E_M → meV (None when E_M in meV is unknown)."""
        return None if self.energy_unit_meV is None else energy * self.energy_unit_meV

    def summary(self, resolve: bool = True) -> dict:
        """A plain mapping of the sweep (for logs and `qernel info`); resolve=False shows
        model/pretrain/evaluate as written (without importing their modules). Raises ConfigError
        (resolve=True) like `resolved`."""
        s = self.system
        system = {
            "supercell": [list(r) for r in s.supercell.matrix],
            "n_cells": s.supercell.n_cells,
            "n_up": s.n_up,
            "n_down": s.n_down,
            "n_electrons": s.n_electrons,
            "filling": round(s.filling, 6),
            "units": self.units,
            "coupling": round(s.coupling, 6),
            "phase_deg": round(s.phase_deg, 6),
            "energy_unit_meV": None if self.energy_unit_meV is None else round(self.energy_unit_meV, 6),
        }
        if s.physical is not None:
            system.update(effective_mass=s.physical.effective_mass, epsilon=s.physical.epsilon,
                          moire_length_nm=s.physical.moire_length_nm)
        out = {
            "sweep": self.name,
            "config_hash": self.config_hash if resolve else config_hash(self.written),
            "system": system,
            "depths": {
                "labels": list(self.depth_labels),
                f"values_{self.config_units}": [round(float(v), 6) for v in self.depth_values_config],
                "values_E_M": [round(float(v), 6) for v in self.depths],
            },
        }
        for part in ("model", "pretrain", "evaluate"):
            if part in self.parts:
                out[part] = to_plain(self.resolved[part] if resolve else self.written[part])
        out["seed"] = self.seed
        out["resources"] = to_plain(self.resources)
        if resolve and self.notes:
            out["adapted"] = list(self.notes)
        return out
