"""Shared fixtures for the QERNEL test suite.

JAX's persistent compilation cache, one per test session: the suite compiles the same small
programs many times over (the tiny model's step in many tests, and every `qernel`/`snakemake`
job the workflow tests start re-imports JAX and recompiles what the job before it compiled).
The first session process (pytest, or xdist's controller, before it starts its workers) makes a
temporary folder and exports JAX_COMPILATION_CACHE_DIR, with the thresholds that make every
compiled program eligible; the xdist workers and every subprocess a test starts inherit the
environment, so they all read and write the same cache. The controller deletes the folder at the
end. A compiled program loaded from the cache is the one XLA compiled for the same program text,
options and backend, so no result changes: only compile time is saved (measured: a tiny
`qernel pretrain` job takes 17 s of CPU instead of 61 s with a warm cache).

QERNEL_TEST_JAX_CACHE=0 turns it off (for comparisons; also for the `qernel` jobs, which otherwise
keep one of their own, qernel.cache); a JAX_COMPILATION_CACHE_DIR already set
by the caller is used as it is (and never deleted).

Likewise one QERNEL_CACHE_DIR per session, where every `snakemake` the tests start remembers the
memory check's parameter counts (qernel.memory.parameter_count; without it each working
directory keeps its own in .snakemake/qernel): the first start that checks a sweep builds its
model abstractly (~2 s of JAX and Flax), the others read the count. A QERNEL_CACHE_DIR set by the
caller is used as it is (and never deleted).
"""

import os
import shutil
import tempfile

# -- XLA's CPU compiler set for programs that run seconds, not hours -----------------------------
#: The suite's programs are compiled far more often than they run long: a tiny `qernel pretrain`
#: job spends ~95 % of its time compiling (its 20 SR steps take under a second). These two XLA
#: options only change how much work the CPU code generator does (LLVM's optimisation level 0, and
#: XLA's older elemental emitters instead of its fusion emitters), never what is computed: no
#: fast-math, the same IEEE operations, so results differ by rounding only (the order inside a
#: vectorised reduction). Measured on this 2-core CPU (one core, no compilation cache): the tiny
#: workflow pretraining job 20 s instead of 46-69 s, the two-electron exact-diagonalisation test
#: 109 s instead of 133 s. Users' runs keep XLA's defaults (the options live here only).
#: QERNEL_TEST_FAST_COMPILE=0 compiles with the defaults; options the caller set in XLA_FLAGS win.
FAST_COMPILE_FLAGS = ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false")
if os.environ.get("QERNEL_TEST_FAST_COMPILE", "1") != "0":
    _given = os.environ.get("XLA_FLAGS", "")
    _added = [f for f in FAST_COMPILE_FLAGS if f.split("=")[0] not in _given]
    os.environ["XLA_FLAGS"] = " ".join([_given, *_added]).strip()

_CACHE_DIR = "JAX_COMPILATION_CACHE_DIR"
_OWNER = "QERNEL_TEST_JAX_CACHE_OWNER"  # pid of the process that made the folder (it deletes it)
_COUNTS_DIR = "QERNEL_CACHE_DIR"
_COUNTS_OWNER = "QERNEL_TEST_CACHE_OWNER"

if not os.environ.get(_COUNTS_DIR):
    os.environ[_COUNTS_DIR] = tempfile.mkdtemp(prefix="qernel-test-cache-")
    os.environ[_COUNTS_OWNER] = str(os.getpid())

if os.environ.get("QERNEL_TEST_JAX_CACHE", "1") != "0":
    if not os.environ.get(_CACHE_DIR):
        os.environ[_CACHE_DIR] = tempfile.mkdtemp(prefix="qernel-test-jax-cache-")
        os.environ[_OWNER] = str(os.getpid())
    # every program, however fast it compiled or small it is (JAX's defaults skip those under 1 s)
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
else:  # off for the `qernel` jobs too (they would otherwise use their own, qernel.cache)
    os.environ["QERNEL_JAX_CACHE"] = "0"

import jax  # noqa: E402  (after the environment above: JAX reads it when first imported)
import pytest  # noqa: E402

if os.environ.get(_CACHE_DIR) and os.environ.get("QERNEL_TEST_JAX_CACHE", "1") != "0":
    # in case JAX was imported before this file (a plugin): the same settings, explicitly
    jax.config.update("jax_compilation_cache_dir", os.environ[_CACHE_DIR])
    jax.config.update("jax_persistent_cache_min_compile_time_secs",
                      float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes",
                      int(os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"]))


# -- spreading the work over xdist's workers (`make test`: -n TEST_WORKERS --dist loadgroup) ----
#: Seconds the long tests take on the 2-core CI machine (call + setup, from --durations=0 of full
#: runs, with the compilation cache; a parametrised test's entry covers each parameter). Only the order of the work
#: depends on it: the longest first, so that the workers end together instead of one of them
#: starting the SLURM test last. A test missing here counts as short and keeps its place.
EXPECTED_SECONDS = {
    "tests/slurm/test_slurm_workflow.py::test_workflow_through_slurm": 250,
    "tests/workflow/test_end_to_end.py::test_tiny_sweep_end_to_end_from_odd_paths_then_edits_that_change_nothing": 190,
    "tests/engine/test_optim_scale.py::test_far_more_parameters_than_walkers_rejects_no_sr_step": 35,
    "tests/engine/test_model_integration.py::test_network_converges_to_the_noninteracting_ground_state": 80,
    "tests/test_checkpoint_sets.py::test_the_issue_example_a_config_edit_and_its_revert_resume_the_killed_run": 55,
    "tests/workflow/test_workflow.py::test_what_reruns": 75,
    "tests/engine/test_train_physics.py::test_electron_gas_beats_the_plane_wave_determinant": 85,
    "tests/engine/test_train_physics.py::test_noninteracting_limit_is_exact": 60,
    "tests/workflow/test_end_to_end.py::test_killed_pretraining_resumes_from_its_checkpoint": 40,
    "tests/engine/test_memory.py::test_memory_model_agrees_with_the_compiled_step": 65,
    "tests/model/test_wavefunction_float64.py::test_sparse_forward_laplacian_matches_the_dense_one": 60,
    "tests/engine/test_sharding.py::test_two_device_step_equals_one_device_step": 55,
    "tests/engine/test_model_integration.py::test_exact_eigenstate_has_exact_energy_and_zero_variance": 50,
    "tests/workflow/test_slurm_profile.py::test_local_rules_never_reach_sbatch": 45,
    "tests/workflow/test_workflow.py::test_run_sweeps_all_and_explicit_targets": 27,
    "tests/evaluate/test_exact_determinant.py::test_energy_is_exact_with_zero_variance": 30,
    "tests/evaluate/test_model_end_to_end.py::test_tiny_model_checkpoint_end_to_end": 30,
    "tests/engine/test_optim.py::test_on_the_fly_equals_explicit_on_the_tiny_wavefunction": 25,
    "tests/engine/test_resume_and_guard.py::test_a_diverging_learning_rate_rolls_back_then_stops_in_one_line": 25,
    "tests/engine/test_train_physics.py::test_shared_model_matches_single_depth_models": 17,
    "tests/engine/test_train_physics.py::test_adam_and_sr_from_a_rough_start": 17,
    "tests/workflow/test_workflow.py::test_dry_run_paper_sweeps": 19,
    "tests/engine/test_memory.py::test_paper_sweeps_of_the_config_fit_their_gpus": 20,
    "tests/engine/test_model_integration.py::test_training_run_with_the_network": 20,
    "tests/model/test_wavefunction_float64.py::test_forward_laplacian_matches_jvp_through_the_full_model": 20,
    "tests/workflow/test_workflow.py::test_report_has_every_figure_with_its_caption": 18,
}
#: Work units that one worker runs whole: tests sharing an expensive module-scoped fixture (built
#: once per worker: on one worker it is built once), and the SLURM module, so that no other test
#: waits in that worker's queue behind the SLURM test. A module path stands for all its tests.
GROUPS = {
    "tests/slurm/test_slurm_workflow.py": "slurm",
    "tests/engine/test_train_physics.py::test_noninteracting_limit_is_exact": "noninteracting_runs",
    "tests/engine/test_train_physics.py::test_shared_model_matches_single_depth_models": "noninteracting_runs",
    "tests/engine/test_train_physics.py::test_adam_and_sr_from_a_rough_start": "noninteracting_runs",
    "tests/engine/test_model_integration.py::test_exact_eigenstate_has_exact_energy_and_zero_variance": "integration",
    "tests/engine/test_model_integration.py::test_training_run_with_the_network": "integration",
    "tests/engine/test_resume_and_guard.py": "resume_and_guard",
    "tests/evaluate/test_pipeline.py": "pipeline",
    "tests/evaluate/test_exact_determinant.py": "exact_determinant",
    "tests/plots/test_plots.py": "plots",
    "tests/model/test_wavefunction.py": "wavefunction",
    "tests/model/test_wavefunction_float64.py": "wavefunction_float64",
    "tests/workflow/test_slurm_profile.py": "slurm_profile",
    # the killed-pretraining test trains the e2e test's tiny sweep (smk.tiny_sweep): after it, its
    # jobs load every program from the compilation cache (measured: 51 s instead of 168 s alone)
    "tests/workflow/test_end_to_end.py": "end_to_end",
}


def work_unit(nodeid: str) -> str:
    """The xdist work unit of a test: its group, or the test itself."""
    test = nodeid.split("[")[0]
    return GROUPS.get(test) or GROUPS.get(test.split("::")[0]) or nodeid


def _expected(item) -> float:
    return EXPECTED_SECONDS.get(item.nodeid.split("[")[0], 0.0)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """`--dist loadgroup`: xdist's LoadScopeScheduling with the work units of `work_unit`, handed
    out in the order of the collection (`--no-loadscope-reorder`), each to the next free worker.
    (xdist 3.8's own loadgroup scheduler reads `xdist_group` marks through `item._nodeid`, which
    pytest 9 no longer uses, so under pytest 9 it groups nothing.)"""
    if config.getoption("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SuiteScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return SuiteScheduling(config, log)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """On xdist workers: the work units longest first (the longest test of a unit first), so
    that the long tests start at once and the short ones fill in at the end."""
    if not hasattr(config, "workerinput"):
        return
    units: dict[str, list] = {}
    for item in items:
        units.setdefault(work_unit(item.nodeid), []).append(item)
    ordered = sorted(units.values(), key=lambda unit: -sum(map(_expected, unit)))  # stable
    items[:] = [item for unit in ordered for item in sorted(unit, key=lambda i: -_expected(i))]


def pytest_unconfigure(config):
    if os.environ.get(_OWNER) == str(os.getpid()) and not hasattr(config, "workerinput"):
        shutil.rmtree(os.environ[_CACHE_DIR], ignore_errors=True)
    if os.environ.get(_COUNTS_OWNER) == str(os.getpid()) and not hasattr(config, "workerinput"):
        shutil.rmtree(os.environ[_COUNTS_DIR], ignore_errors=True)


@pytest.fixture
def x64():
    """Run a test with 64-bit JAX arrays (restored afterwards)."""
    with jax.enable_x64(True):
        yield

