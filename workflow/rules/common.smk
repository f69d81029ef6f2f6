# Shared helpers: the validated sweeps, paths, per-sweep resources and the `qernel` command.
# The config is validated here (before any job): a bad key stops the run with its key path.
import posixpath
import re
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake_interface_executor_plugins.settings import DeploymentMethod

try:
    from qernel import config as qconfig
except ImportError as e:
    raise WorkflowError(
        f"the qernel package is not importable by this Python ({sys.executable}): {e}. "
        "Install it into the environment that runs snakemake: `pip install -e .` (or `make setup`)."
    )

try:
    SWEEPS = qconfig.validate_config(config)
    RUN_SWEEPS = qconfig.run_sweeps(config)
except qconfig.ConfigError as e:
    raise WorkflowError(f"invalid config: {e}")

# Memory known before any job: a sweep to be built whose training step is estimated to need more
# than its GPUs hold (qernel.memory; resources.pretrain.gpu, gpu_memory_gb) stops the run here.
from qernel import memory as qmemory

for _name in RUN_SWEEPS:
    try:
        qmemory.check_sweep(SWEEPS[_name])
    except ValueError as e:
        raise WorkflowError(f"invalid config: {e}")

#: The figures `qernel plot` writes (qernel.plots.FIGURES), each as PNG and PDF, and the
#: stems of their report captions in workflow/report/.
FIGURES = {
    "interaction_energy": "fig_interaction",
    "energy_components": "fig_energies",
    "density": "fig_density",
    "structure_factor": "fig_structure_factor",
    "training": "fig_training",
}

#: Software environment of every rule (used with --sdm conda; otherwise the rules run in the
#: environment that runs snakemake, which must have qernel installed).
CONDA_ENV = "../../environment.yml"

# Rules call `qernel ...`: a shell function that runs the CLI with the Python that runs this
# workflow (so the venv's package is used even when its bin/ is not on PATH), or with the
# rule's own environment's python under --sdm conda.
_USE_CONDA = DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
_PYTHON = "python" if _USE_CONDA else shlex.quote(sys.executable)
shell.prefix(f'set -euo pipefail; qernel() {{{{ {_PYTHON} -m qernel "$@"; }}}}; ')


wildcard_constraints:
    sweep="|".join(re.escape(name) for name in SWEEPS),
    V=qconfig.DEPTH_LABEL_REGEX,
    stage="|".join(qconfig.STAGE_KEYS),


def sweep_file(sweep, *parts):
    """results/<sweep>/<parts...> (sweep may be a wildcard pattern "{sweep}")."""
    return posixpath.join("results", sweep, *parts)


def figure_files(sweep, ext):
    return [sweep_file(sweep, "figures", f"{name}.{ext}") for name in FIGURES]


def depth_files(sweep, name):
    """One file per depth of a sweep: results/<sweep>/depth/<V>/<name>."""
    return [sweep_file(sweep, "depth", label, name) for label in SWEEPS[sweep].depth_labels]


def all_targets():
    """The default target: for every sweep in the config run_sweeps, every output of DESIGN.md §4
    (the per-depth files too, so that a depth whose files were deleted is recomputed, and with
    it the phase diagram and figures; the rest of the sweep stays as it is)."""
    targets = []
    for sweep in RUN_SWEEPS:
        targets += [sweep_file(sweep, "pretrain", "train.nc"), sweep_file(sweep, "pretrain", "model.msgpack")]
        targets += depth_files(sweep, "evaluation.nc") + depth_files(sweep, "observables.nc")
        targets.append(sweep_file(sweep, "phase_diagram.nc"))
        targets += figure_files(sweep, "png") + figure_files(sweep, "pdf")
    return targets


def resource(rule, key):
    """A resource of `rule` for the job's sweep (built-in < config resources < sweep resources)."""

    def get(wildcards):
        return SWEEPS[wildcards.sweep].resources[rule][key]

    return get


def rule_resources(rule):
    """The resources of `rule` (keyword arguments of its resources: directive)."""
    return {key: resource(rule, key) for key in ("runtime", "mem_mb", "cpus_per_task", "gpu")}


def rule_threads(rule):
    return resource(rule, "cpus_per_task")


def snapshot(stage):
    """Input: the parts of the job's sweep that `stage` depends on, as validated here
    (results/<sweep>/config/<stage>.yaml, rewritten only when those parts change)."""
    return sweep_file("{sweep}", "config", f"{stage}.yaml")


def output_dir(name):
    """params helper: the folder of the output `name` (of its first file, if it is a list)."""

    def get(wildcards, output):
        files = output[name]
        return str(Path(files if isinstance(files, str) else files[0]).parent)

    return get
