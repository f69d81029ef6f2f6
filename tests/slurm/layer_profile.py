#!/usr/bin/env python3
"""Layer the CI override (tests/slurm/profile) over a real SLURM profile.

    python tests/slurm/layer_profile.py slurm tests/slurm/profile -o /tmp/ci-slurm
    snakemake --profile slurm --profile /tmp/ci-slurm ...

Snakemake merges several ``--profile``s per *top-level key* only: a later
profile's ``set-resources`` or ``default-resources`` replaces the earlier one's
entirely. Passing the override directly would therefore silently drop
everything else the real profile sets for the same key (partition, runtime,
memory of the other rules, ...). This script writes a third profile whose
mappings are the real profile's with the override merged in per resource, and
whose GPU requests are replaced by CPU-only ones, so that the resulting sbatch
calls differ from a GPU cluster's only where the test cluster forces them to:

* top-level scalars/lists of the override replace the real profile's;
* ``default-resources`` and ``set-resources`` are merged (per rule, then per
  resource);
* every rule (and the defaults) that still requests a GPU through ``gpu``,
  ``gpu_model``, ``gres`` (containing ``gpu``), ``cpus_per_gpu`` or
  ``tasks_per_gpu`` gets ``gpu: 0``, loses the others and gets
  ``cpus_per_task: 1`` unless the override sets it; the script fails if any GPU
  request is left.

The profile directory is resolved exactly as ``snakemake --profile NAME`` does
(from the current directory, so run this from the repository root), and the
output profile is written as ``<out>/profile.yaml``. GPU requests made in the
Snakefile's ``resources:`` (not in the profile) are invisible here; the override's
explicit ``set-resources`` for the GPU rules cover those, and the pytest checks
the actual sbatch calls for ``--gpus``/``--gres``.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from pathlib import Path

import yaml

MERGED_KEYS = ("default-resources", "set-resources")
GPU_KEYS = ("gpu_model", "gres", "cpus_per_gpu", "tasks_per_gpu", "gpus")


def resolve_profile(name: str) -> Path:
    """The profile YAML file that ``snakemake --profile name`` would read."""
    from snakemake.cli import get_profile_dir

    entry = get_profile_dir(name)
    if entry is None:
        raise SystemExit(
            f"layer_profile: no profile '{name}' found (looked where snakemake looks: "
            f"{os.getcwd()}, ~/.config/snakemake, /etc/xdg/snakemake)"
        )
    return Path(entry[1]).resolve()


def load_profile(path: Path) -> dict:
    import yte

    with open(path) as f:
        data = yte.process_yaml(f, require_use_yte=True)
    data = data or {}
    if not isinstance(data, dict):
        raise SystemExit(f"layer_profile: {path} is not a YAML mapping")
    # Relative file paths in a profile are resolved against the profile's own
    # directory by snakemake; keep them valid in the new location.
    for key, value in list(data.items()):
        if isinstance(value, str) and not os.path.isabs(value):
            candidate = path.parent / value
            if value and candidate.exists():
                data[key] = str(candidate.resolve())
    return data


def requests_gpu(res: dict) -> bool:
    gpu = res.get("gpu")
    if gpu not in (None, 0, "0", False, ""):
        return True
    if res.get("gpu_model") or res.get("gpus") or res.get("cpus_per_gpu") or res.get("tasks_per_gpu"):
        return True
    return "gpu" in str(res.get("gres") or "")


def cpu_only(res: dict, override: dict) -> dict:
    """``res`` with its GPU request removed (override values win)."""
    out = {k: v for k, v in res.items() if k not in GPU_KEYS}
    out["gpu"] = 0
    out.setdefault("cpus_per_task", 1)
    out.update(override)
    return out


def layer(real: dict, override: dict) -> tuple[dict, list[str]]:
    merged = copy.deepcopy(real)
    notes = []
    for key, value in override.items():
        if key in MERGED_KEYS and isinstance(value, dict):
            base = dict(merged.get(key) or {})
            if key == "set-resources":
                for rule, res in value.items():
                    base[rule] = {**dict(base.get(rule) or {}), **dict(res or {})}
            else:
                base.update(value)
            merged[key] = base
        else:
            merged[key] = value
        if key in real and real[key] != merged[key]:
            notes.append(f"{key}: {real[key]!r} -> {merged[key]!r}")

    # Neutralise any GPU request the real profile makes on rules the override
    # did not name (and in the defaults).
    rules = merged.get("set-resources") or {}
    for rule, res in rules.items():
        if requests_gpu(res):
            rules[rule] = cpu_only(res, (override.get("set-resources") or {}).get(rule, {}))
            notes.append(f"set-resources.{rule}: GPU request removed -> {rules[rule]!r}")
    defaults = merged.get("default-resources") or {}
    if requests_gpu(defaults):
        merged["default-resources"] = cpu_only(defaults, override.get("default-resources") or {})
        notes.append("default-resources: GPU request removed")

    left = [r for r, res in (merged.get("set-resources") or {}).items() if requests_gpu(res)]
    if requests_gpu(merged.get("default-resources") or {}):
        left.append("default-resources")
    if left:
        raise SystemExit(f"layer_profile: GPU requests left after layering: {left}")
    return merged, notes


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("real", help="real profile, as given to --profile (e.g. 'slurm')")
    ap.add_argument("override", help="override profile dir or YAML file (tests/slurm/profile)")
    ap.add_argument("-o", "--out", required=True, help="output profile directory")
    args = ap.parse_args(argv)

    real_file = resolve_profile(args.real)
    ov = Path(args.override)
    ov_file = ov / "profile.yaml" if ov.is_dir() else ov
    real = load_profile(real_file)
    override = load_profile(ov_file)
    merged, notes = layer(real, override)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "profile.yaml", "w") as f:
        f.write(
            f"# Generated by tests/slurm/layer_profile.py: {real_file} with the CI\n"
            f"# override {ov_file.resolve()} layered over it. Do not edit.\n"
        )
        yaml.safe_dump(merged, f, sort_keys=False)
    print(f"layer_profile: {real_file} + {ov_file} -> {out / 'profile.yaml'}", file=sys.stderr)
    for n in notes:
        print(f"layer_profile:   {n}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
