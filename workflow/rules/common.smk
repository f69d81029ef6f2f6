# Shared helpers: the validated sweeps, paths, per-sweep resources and the `qernel` command.
# The config is validated here (before any job): a bad key stops the run with its key path.
import posixpath
import re
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger
from snakemake_interface_executor_plugins.settings import DeploymentMethod

try:
    from qernel import config as qconfig
except ImportError as e:
    raise WorkflowError(
        f"the qernel package is not importable by this Python ({sys.executable}): {e}. "
        "Install it into the environment that runs snakemake: `pip install -e .` (or `make setup`)."
    )


def config_layers():
    """The config files (and --config) that Snakemake merged into `config`, in merge order, each
    read with its keys as written: [(label, mapping)]. With --replace-workflow-config the
    workflow's own config/config.yaml is not among them."""
    given = [Path(f) for f in workflow.overwrite_configfiles]
    own = [Path(f) for f in workflow.configfiles if Path(f).resolve() not in {g.resolve() for g in given}]
    files = given if workflow.config_settings.replace_workflow_config else own + given
    layers = [(str(f), qconfig.read_config(f)) for f in files if Path(f).is_file()]
    if workflow.config_settings.config:
        layers.append(("--config", dict(workflow.config_settings.config)))
    return layers


_LAYERS = []
try:
    _LAYERS = config_layers()
    # sweep names as the user wrote them (YAML reads `2024` as a number and `on` as true)
    config.update(qconfig.with_written_sweep_names(config, _LAYERS))
    SWEEPS = qconfig.validate_config(config)
    RUN_SWEEPS = qconfig.run_sweeps(config)
except qconfig.ConfigError as e:
    raise WorkflowError(f"invalid config: {qconfig.explain_origin(e, _LAYERS)}")

# Memory known before any job: a sweep to be built whose training step is estimated to need more
# than its GPUs hold (qernel.memory; resources.pretrain.gpu, gpu_memory_gb) stops the run here.
# Sweeps that ask for no GPU are not checked against one (qernel.memory.check_sweep), so the
# estimate is skipped for them. Its parameter count (a model built abstractly with JAX: about 2 s
# of CPU, most of a snakemake start) is remembered in .snakemake/qernel/ of the working
# directory (or the folder QERNEL_CACHE_DIR names: the test suite shares one) for the package's
# current source files (qernel.memory.parameter_count).
import os

from qernel import memory as qmemory

_CACHE_DIR = Path(os.environ.get("QERNEL_CACHE_DIR") or Path(".snakemake", "qernel"))

for _name in RUN_SWEEPS:
    if not int(SWEEPS[_name].resources["pretrain"].get("gpu", 0) or 0):
        continue
    try:
        qmemory.check_sweep(SWEEPS[_name], cache_dir=_CACHE_DIR)
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

#: Rules that only write small files or collect targets: they run where snakemake runs (the
#: Snakefile's `localrules:`), so a cluster never queues a job that takes a millisecond.
LOCAL_RULES = ("all", "sweep_config", "sweep_compute_config", "hartree_fock_config")
#: What a local rule asks for (shown by the dry run; a local rule never reaches a scheduler).
LOCAL_RESOURCES = {"runtime": 1, "mem_mb": 100, "disk_mb": 1, "cpus_per_task": 1, "gpu": 0}

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
    compute_stage="pretrain|evaluate",


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
    """Input: the run and progress keys of the job's sweep that `stage` reads, resolved and
    validated here (results/<sweep>/config/<stage>.yaml): rewritten only when they change, and
    then the stage reruns (a newer input)."""
    return sweep_file("{sweep}", "config", f"{stage}.yaml")


def compute_snapshot(stage):
    """Input: the compute keys of the job's sweep that `stage` reads (log_every, memory knobs, ...;
    results/<sweep>/config/<stage>.compute.yaml), rewritten whenever they change but `ancient`:
    a new value reaches the next job of the stage and reruns nothing by itself."""
    return ancient(sweep_file("{sweep}", "config", f"{stage}.compute.yaml"))


def output_dir(name):
    """params helper: the folder of the output `name` (of its first file, if it is a list)."""

    def get(wildcards, output):
        files = output[name]
        return str(Path(files if isinstance(files, str) else files[0]).parent)

    return get


if workflow.is_main_process:
    for _name in RUN_SWEEPS:
        for _note in SWEEPS[_name].notes:
            logger.info(f"sweeps.{_name}.{_note}")
    logger.info(f"local rules (they run where snakemake runs, never queued on a cluster): {', '.join(LOCAL_RULES)}")


def hartree_fock_first(wildcards):
    """A model whose orbital prior is the Hartree-Fock solution waits for the sweep's HF reference,
    which remembers each depth's solution on disk (qernel.hartree_fock_cache): the prior then reads
    them instead of solving the same problems again in parallel. Only an order: ancient(), so a new
    hartree_fock.nc (an edit of the HF options) never reruns the training."""
    if SWEEPS[wildcards.sweep].model.prior_source == "hartree_fock":
        return [ancient(sweep_file(wildcards.sweep, "hartree_fock.nc"))]
    return []
