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
2. physical checks: the supercell is not singular, there is at least one electron, each spin
   has no more electrons than the single-particle states the model can hold, depths are finite
   and >= 0 (after unit conversion), no two depths share a path label, and — when the model,
   engine and evaluation modules are importable — `model`, `pretrain` and `evaluate` are
   accepted by `ModelConfig.from_spec`, `TrainConfig.from_dict` and `EvalConfig.from_dict`.

Units: `units: moire` gives the coupling λ and the depths in E_M; `units: physical` gives the
effective mass (m_e), ε, a_M (nm), and the depths in meV, converted here to E_M with
`qernel.units.PhysicalParameters`. Inside the package depths are always in E_M
(`Sweep.depths`); the path labels (`Sweep.depth_labels`, "2.500") keep the config's own units.

This module imports neither jax nor Snakemake (the Snakefile imports it to validate).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import importlib
import json
import math
from collections.abc import Mapping
from importlib import resources as importlib_resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from qernel.lattice import Supercell
from qernel.system import System
from qernel.units import PhysicalParameters

#: The config file of the repository, relative to its root (the workflow's working directory).
DEFAULT_CONFIG_PATH = "config/config.yaml"
#: The sweeps `rule all` builds when the config does not name `run_sweeps` (if the config has
#: them; else every sweep of the config).
DEFAULT_RUN_SWEEPS = ("demo",)
#: The rules whose resources the config can set.
RULES = ("pretrain", "evaluate", "observables", "aggregate", "plot")
#: Built-in resources per rule (runtime in minutes, memory in MB); the config's top-level
#: `resources` and then a sweep's own `resources` override them key by key.
DEFAULT_RESOURCES: dict[str, dict[str, int]] = {
    "pretrain": {"runtime": 60, "mem_mb": 4000, "cpus_per_task": 2, "gpu": 1},
    "evaluate": {"runtime": 30, "mem_mb": 4000, "cpus_per_task": 2, "gpu": 1},
    "observables": {"runtime": 15, "mem_mb": 2000, "cpus_per_task": 1, "gpu": 0},
    "aggregate": {"runtime": 10, "mem_mb": 2000, "cpus_per_task": 1, "gpu": 0},
    "plot": {"runtime": 10, "mem_mb": 2000, "cpus_per_task": 1, "gpu": 0},
}
#: Sweep keys that do not change any result (left out of the config hash and the snapshot).
NON_PHYSICAL_KEYS = ("resources", "description")
#: The parts of a sweep that each stage's results depend on. The workflow hands each stage a
#: snapshot of only these parts (results/<sweep>/config/<stage>.yaml), so that a stage reruns
#: when, and only when, its own parts of the sweep change. "analysis": observables, aggregate, plot.
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


class ConfigError(ValueError):
    """A bad config entry. `key` is the dotted path of the entry ("sweeps.demo.depths")."""

    def __init__(self, key: str, message: str):
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}" if key else message)


# -- loading --------------------------------------------------------------------------------
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


def read_config(path) -> dict:
    """The raw config mapping of a YAML file (not validated). Missing or unreadable → ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("", f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError("", f"config file {str(path)!r} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError("", f"config file {str(path)!r} must hold a mapping with a `sweeps:` key")
    return data


def load_config(path) -> dict[str, "Sweep"]:
    """Read and validate a config file; return every sweep by name (see `validate_config`)."""
    return validate_config(read_config(path))


def list_sweeps(path) -> list[str]:
    """The sweep names of a config file, in file order (the file is validated by its schema)."""
    config = read_config(path)
    check_schema(config)
    return list(config["sweeps"])


def load_sweep(path, name: str, resolve: bool = True, stage: str | None = None) -> "Sweep":
    """The sweep `name` of the config file `path`, validated (all of the file's schema, this sweep's
    physics). resolve=True also resolves model/pretrain/evaluate where their modules exist.
    stage: the workflow stage that reads it (a key of STAGE_KEYS); a stage other than "pretrain"
    skips the check of the pretraining batch, which its snapshot does not carry."""
    config = read_config(path)
    check_schema(config)
    sweeps = config["sweeps"]
    if name not in sweeps:
        raise ConfigError(f"sweeps.{name}", f"unknown sweep {name!r} (known: {', '.join(sweeps)})")
    sweep = build_sweep(name, sweeps[name], config.get("resources"))
    if resolve:
        sweep.validate_components(check_pretrain_batch=stage in (None, "pretrain"))
    return sweep


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

    schema = load_schema()
    validator = jsonschema.Draft7Validator(schema)
    errors = list(validator.iter_errors(_plain(config)))
    if not errors:
        return
    errors.sort(key=lambda e: (len(e.absolute_path), [str(p) for p in e.absolute_path]))
    raise _format_schema_error(errors[0], schema)


def _plain(obj):
    """YAML/Snakemake config objects → plain dicts and lists (for jsonschema)."""
    if isinstance(obj, Mapping):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def run_sweeps(config: Mapping) -> list[str]:
    """The sweeps `rule all` builds: config `run_sweeps` (a list, "all", or "a,b"). Without it:
    demo if the config has it, else every sweep of the config."""
    names = list(config["sweeps"])
    default = [n for n in DEFAULT_RUN_SWEEPS if n in names] or names
    value = config.get("run_sweeps", default)
    if isinstance(value, str):
        text = value.strip().strip("[]")
        value = names if text == "all" else [v.strip() for v in text.replace(",", " ").split() if v.strip()]
    value = [str(v) for v in value]
    if not value:
        raise ConfigError("run_sweeps", "names no sweep")
    for v in value:
        if v not in names:
            raise ConfigError("run_sweeps", f"unknown sweep {v!r} (known: {', '.join(names)})")
    return list(dict.fromkeys(value))


def validate_config(config: Mapping, resolve: bool = True) -> dict[str, "Sweep"]:
    """Validate a whole config mapping (schema, run_sweeps, every sweep's physics); return the
    sweeps by name. resolve=True also checks model/pretrain/evaluate with their own modules
    (where those modules are importable)."""
    check_schema(config)
    run_sweeps(config)
    sweeps = {name: build_sweep(name, spec, config.get("resources")) for name, spec in config["sweeps"].items()}
    if resolve:
        for sweep in sweeps.values():
            sweep.validate_components()
    return sweeps


# -- resources ------------------------------------------------------------------------------
def rule_resources(config: Mapping, sweep: str, rule: str) -> dict[str, int]:
    """Resources of `rule` for `sweep`: built-in defaults < config `resources` < sweep `resources`."""
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


# -- sweeps ---------------------------------------------------------------------------------
def depth_label(value: float) -> str:
    """The path label of a depth in the config's units: 2.5 → "2.500"."""
    label = DEPTH_LABEL_FORMAT.format(float(value))
    return "0.000" if label == "-0.000" else label


def canonical_sweep(spec: Mapping) -> dict:
    """The sweep mapping with defaults filled in and the non-physical keys (resources,
    description) left out: what the config hash and the workflow's config snapshot cover."""
    spec = _plain(spec)
    system = dict(spec["system"])
    system.setdefault("n_down", 0)
    if isinstance(system.get("supercell"), int):
        n = system["supercell"]
        system["supercell"] = [[n, 0], [0, n]]
    for key in ("coupling", "phase_deg", "energy_unit_meV", "effective_mass", "epsilon", "moire_length_nm"):
        if key in system:
            system[key] = float(system[key])
    depths = spec["depths"]
    if isinstance(depths, Mapping):
        depths = {"start": float(depths["start"]), "stop": float(depths["stop"]), "num": int(depths["num"])}
    else:
        depths = [float(v) for v in depths]
    out = {
        "system": system,
        "depths": depths,
        "model": copy.deepcopy(spec.get("model", "tiny")),
        "pretrain": copy.deepcopy(spec.get("pretrain") or {}),
        "evaluate": copy.deepcopy(spec.get("evaluate") or {}),
        "seed": int(spec.get("seed", 0)),
    }
    return out


def canonical_json(mapping: Mapping) -> str:
    """Canonical JSON (sorted keys, no whitespace): the same text as `qernel.io.canonical_json`."""
    return json.dumps(mapping, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True)


def config_hash(spec: Mapping) -> str:
    """sha256 (hex) of the canonical JSON of a sweep's canonical mapping."""
    return hashlib.sha256(canonical_json(canonical_sweep(spec)).encode("utf-8")).hexdigest()


def sweep_snapshot(name: str, spec: Mapping, stage: str | None = None) -> str:
    """A config file (YAML text) holding only this sweep in canonical form — with stage, only the
    parts of it that stage depends on (STAGE_KEYS). The workflow hands these snapshots to the
    `qernel` CLI, so that every job sees exactly the config Snakemake validated."""
    canonical = canonical_sweep(spec)
    if stage is not None:
        if stage not in STAGE_KEYS:
            raise KeyError(f"unknown stage {stage!r}; stages: {', '.join(STAGE_KEYS)}")
        canonical = {key: canonical[key] for key in STAGE_KEYS[stage]}
    body = yaml.safe_dump({"sweeps": {name: canonical}}, sort_keys=True, default_flow_style=None, width=100)
    what = f"the parts of sweep {name!r} that stage {stage!r} depends on" if stage else f"sweep {name!r}"
    return (f"# {what}, as validated by the workflow (defaults filled in).\n"
            f"# sha256 {hashlib.sha256(canonical_json(canonical).encode('utf-8')).hexdigest()}\n" + body)


def _grid(spec, key: str) -> np.ndarray:
    if isinstance(spec, Mapping):
        values = np.linspace(float(spec["start"]), float(spec["stop"]), int(spec["num"]))
    else:
        values = np.asarray([float(v) for v in spec], dtype=float)
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
        raise ConfigError(f"{key}.{wrong[0]}", f"not allowed with units: {units} ({hint})")

    matrix = spec["supercell"]
    if isinstance(matrix, int):
        matrix = [[matrix, 0], [0, matrix]]
    try:
        supercell = Supercell(tuple(tuple(int(v) for v in row) for row in matrix))
    except ValueError as e:
        raise ConfigError(f"{key}.supercell", f"{matrix!r}: {e}; |det S| must be >= 1") from None

    n_up, n_down = int(spec["n_up"]), int(spec.get("n_down", 0))
    if n_up + n_down == 0:
        raise ConfigError(f"{key}.n_up", "n_up + n_down = 0: the system needs at least one electron")
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


def build_sweep(name: str, spec: Mapping, default_resources: Mapping | None = None) -> "Sweep":
    """A `Sweep` from one schema-valid sweep mapping (physical checks here; the model, engine and
    evaluation options stay unresolved until used or `Sweep.validate_components()`)."""
    system, e_m = _system(name, spec["system"])
    for spin in ("n_up", "n_down"):
        n = getattr(system, spin)
        if n:
            cap = single_particle_capacity(system)
            if n > cap:
                raise ConfigError(f"sweeps.{name}.system.{spin}",
                                  f"{n} electrons of one spin exceed the {cap} single-particle states the "
                                  f"model can hold in a {system.supercell.n_cells}-cell supercell")
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
        depths=depths,
        depth_labels=labels,
        depth_values_config=values,
        units=units,
        energy_unit_meV=e_m,
        model_spec=canonical["model"],
        pretrain_spec=canonical["pretrain"],
        evaluate_spec=canonical["evaluate"],
        seed=canonical["seed"],
        resources=_merged_resources(default_resources, spec.get("resources")),
        raw=_plain(spec),
        canonical=canonical,
        config_hash=hashlib.sha256(canonical_json(canonical).encode("utf-8")).hexdigest(),
    )


def _optional(module: str, attr: str):
    """`module.attr` if that module of the package exists (other parts may not be built yet)."""
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and (module == e.name or module.startswith(e.name + ".")):
            return None
        raise
    return getattr(mod, attr, None)


def _resolve(kind: str, sweep_name: str, module: str, attr: str, method: str, spec):
    cls = _optional(module, attr)
    if cls is None:
        return copy.deepcopy(spec)
    try:
        return getattr(cls, method)(copy.deepcopy(spec))
    except (ValueError, TypeError, KeyError) as e:
        msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        raise ConfigError(f"sweeps.{sweep_name}.{kind}", msg) from None


@dataclasses.dataclass(frozen=True, eq=False)
class Sweep:
    """One sweep: a system and a grid of depths, with the options of every stage.

    depths: (D,) in E_M (the package's unit); depth_labels: D path labels in the config's units
    ("2.500"); depth_values_config: (D,) in the config's units (E_M, or meV with units physical);
    energy_unit_meV: E_M in meV, or None when unknown (moiré units without energy_unit_meV).
    model / pretrain / evaluate: `ModelConfig`, `TrainConfig`, `EvalConfig` when their modules are
    importable, else the plain mappings. raw: the sweep mapping as written; canonical: with
    defaults, without resources/description; config_hash: sha256 of canonical's JSON.
    resources: per rule, the merged resources (runtime in minutes, mem_mb, cpus_per_task, gpu).
    """

    name: str
    system: System
    depths: np.ndarray
    depth_labels: list[str]
    depth_values_config: np.ndarray
    units: str
    energy_unit_meV: float | None
    model_spec: Any
    pretrain_spec: dict
    evaluate_spec: dict
    seed: int
    resources: dict
    raw: dict
    canonical: dict
    config_hash: str

    @functools.cached_property
    def model(self):
        return _resolve("model", self.name, "qernel.model", "ModelConfig", "from_spec", self.model_spec)

    @functools.cached_property
    def pretrain(self):
        return _resolve("pretrain", self.name, "qernel.train", "TrainConfig", "from_dict", self.pretrain_spec)

    @functools.cached_property
    def evaluate(self):
        return _resolve("evaluate", self.name, "qernel.evaluate", "EvalConfig", "from_dict", self.evaluate_spec)

    def stage_hash(self, stage: str) -> str:
        """sha256 (hex) of the parts of the sweep that the results of `stage` depend on."""
        if stage not in STAGE_KEYS:
            raise KeyError(f"unknown stage {stage!r}; stages: {', '.join(STAGE_KEYS)}")
        part = {key: self.canonical[key] for key in STAGE_KEYS[stage]}
        return hashlib.sha256(canonical_json(part).encode("utf-8")).hexdigest()

    @property
    def given(self) -> dict:
        """The canonical parts of the sweep that its config file gives (a stage snapshot gives
        only its stage's parts): what outputs record as their config."""
        return {key: value for key, value in self.canonical.items() if key in self.raw}

    def validate_components(self, check_pretrain_batch: bool = True) -> None:
        """Resolve model, pretrain and evaluate now (ConfigError naming the key if one is bad), and
        (check_pretrain_batch) check that the pretraining batch splits evenly over the depths and
        the job's GPUs (the engine shards walkers over devices and groups them by depth)."""
        self.model, self.pretrain, self.evaluate  # noqa: B018 (resolution raises on bad entries)
        batch = self.pretrain.get("batch_size") if isinstance(self.pretrain, Mapping) else \
            getattr(self.pretrain, "batch_size", None)
        if check_pretrain_batch and batch is not None:
            devices = max(1, int(self.resources["pretrain"].get("gpu", 0)))
            unit = devices * len(self.depths)
            if batch % unit:
                raise ConfigError(f"sweeps.{self.name}.pretrain.batch_size",
                                  f"{batch} walkers do not split evenly over {len(self.depths)} depths × {devices} "
                                  f"GPU(s) (resources.pretrain.gpu): use a multiple of {unit}, e.g. "
                                  f"{max(unit, round(batch / unit) * unit)}")

    @property
    def config_units(self) -> str:
        """Unit of the depth labels and depth_values_config: "E_M" or "meV"."""
        return "meV" if self.units == "physical" else "E_M"

    @property
    def cond_range(self) -> tuple[tuple[float, float]]:
        """((V_min, V_max),) in E_M: the condition range for `make_wavefunction`."""
        return ((float(self.depths.min()), float(self.depths.max())),)

    def depth_index(self, label: str) -> int:
        """Index of a depth given by its path label (or a number in config units)."""
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
        """Depth V in E_M of a path label."""
        return float(self.depths[self.depth_index(label)])

    def to_meV(self, energy):
        """E_M → meV (None when E_M in meV is unknown)."""
        return None if self.energy_unit_meV is None else energy * self.energy_unit_meV

    def summary(self, resolve: bool = True) -> dict:
        """A plain mapping of the resolved sweep (for logs and `qernel info`); resolve=False shows
        model/pretrain/evaluate as written (without importing their modules)."""

        def plain(obj):
            if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
                return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
            if isinstance(obj, Mapping):
                return {str(k): plain(v) for k, v in obj.items()}
            if isinstance(obj, (list, tuple)):
                return [plain(v) for v in obj]
            if isinstance(obj, np.generic):
                return obj.item()
            return obj

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
        return {
            "sweep": self.name,
            "config_hash": self.config_hash,
            "system": system,
            "depths": {
                "labels": list(self.depth_labels),
                f"values_{self.config_units}": [round(float(v), 6) for v in self.depth_values_config],
                "values_E_M": [round(float(v), 6) for v in self.depths],
            },
            "model": plain(self.model if resolve else self.model_spec),
            "pretrain": plain(self.pretrain if resolve else self.pretrain_spec),
            "evaluate": plain(self.evaluate if resolve else self.evaluate_spec),
            "seed": self.seed,
            "resources": plain(self.resources),
        }
