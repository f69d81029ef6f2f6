"""The SLURM profile: `snakemake --profile slurm` from the repository root, and the sbatch
command lines it leads to, built by the executor plugin's own submit-string helpers from the
resources of a dry run (a mocked job: no SLURM needed)."""

from __future__ import annotations

import logging
import os
import shlex
from pathlib import Path
from types import SimpleNamespace

import pytest

from smk import CONFIG, REPO, dry_run_jobs, job_counts, snakemake

slurm_plugin = pytest.importorskip("snakemake_executor_plugin_slurm")
from snakemake_executor_plugin_slurm.submit_string import get_submit_command  # noqa: E402
from snakemake_executor_plugin_slurm.utils import set_gres_string  # noqa: E402
from snakemake_executor_plugin_slurm.validation import validate_slurm_extra  # noqa: E402

SITE = {"QERNEL_SLURM_ACCOUNT": "proj42", "QERNEL_SLURM_PARTITION": "cpu", "QERNEL_SLURM_GPU_PARTITION": "gpu"}


def test_bare_profile_name_resolves_from_the_repository_root():
    link = REPO / "slurm"
    assert link.is_symlink() and os.readlink(link) == "profiles/slurm"
    assert (link / "config.v8+.yaml").resolve() == (REPO / "profiles" / "slurm" / "config.v8+.yaml").resolve()
    default = (REPO / "profiles" / "default" / "config.v8+.yaml").read_text()
    # the workflow profile replaces whole top-level keys of --profile slurm: it must set none of these
    for key in ("executor", "jobs", "default-resources", "set-resources", "retries", "latency-wait"):
        assert f"\n{key}:" not in "\n" + default


def slurm_dry_run(tmp_path, env, *extra):
    res = snakemake(*extra, "--profile", "slurm", "-n", "--directory", tmp_path, "--configfile", CONFIG,
                    cwd=REPO, env=env)
    assert res.returncode == 0, res.stdout[-4000:]
    assert "Using profiles slurm and workflow specific profile profiles/default" in res.stdout
    return res.stdout


@pytest.fixture(scope="module")
def paper_jobs(tmp_path_factory):
    """The jobs of a dry run of paper_6x6 and paper_15x15 with `--profile slurm` from the
    repository root, with account and partitions given by the environment."""
    out = slurm_dry_run(tmp_path_factory.mktemp("slurm"), SITE, "--config=run_sweeps=[paper_6x6,paper_15x15]")
    return dry_run_jobs(out)


def test_dry_run_shows_gpus_on_pretrain_and_evaluate(tmp_path):
    """The plain `snakemake --profile slurm -n` (the demo sweep)."""
    out = slurm_dry_run(tmp_path, {})
    assert job_counts(out)["evaluate"] == 9
    jobs = dry_run_jobs(out)
    for job in jobs:
        res = job["resources"]
        if job["rule"] in ("pretrain", "evaluate"):
            assert res["gpu"] >= 1 and res["runtime"] > 0 and res["mem_mb"] > 0 and res["cpus_per_task"] >= 1
        elif job["rule"] in ("observables", "aggregate", "plot", "hartree_fock"):
            assert res["gpu"] == 0
        # nothing site-specific without the environment
        assert "slurm_account" not in res and "slurm_partition" not in res


def test_account_and_partitions_come_from_the_environment(paper_jobs):
    for job in paper_jobs:
        res = job["resources"]
        if job["rule"] in ("sweep_config", "sweep_compute_config", "hartree_fock_config", "all"):
            continue  # local rules: never submitted
        assert res["slurm_account"] == "proj42"
        assert res["slurm_partition"] == ("gpu" if job["rule"] in ("pretrain", "evaluate") else "cpu")


class _Resources(dict):
    """job.resources of the plugin's interface: a mapping with attribute access."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def sbatch_call(job: dict, monkeypatch) -> str:
    """The sbatch command the plugin would submit for a dry-run job, built like its run_job()."""
    rule = job["rule"]
    wildcards = ",".join(f"{k}={v}" for k, v in job["wildcards"].items())
    mock = SimpleNamespace(name=rule, threads=job["threads"], resources=_Resources(job["resources"]),
                           is_group=lambda: False)
    validate_slurm_extra(mock)
    # account and partition as the executor derives them. Stubbed cluster queries: account
    # validation (sacctmgr) accepts the account; without one given, the executor's fallbacks
    # (guessing from sacct, the default partition from sinfo) find nothing.
    monkeypatch.setattr(slurm_plugin, "validate_account", lambda account, logger: account)
    executor = SimpleNamespace(_partitions=None, _fallback_partition="", _fallback_account_arg="",
                               logger=logging.getLogger("test"))
    params = {
        "run_uuid": "RUN",
        "slurm_logfile": Path(".snakemake/slurm_logs") / f"rule_{rule}" / wildcards / "%j.log",
        "comment_str": f"rule_{rule}_wildcards_{wildcards}",
        "account": next(slurm_plugin.Executor.get_account_arg(executor, mock)),
        "partition": slurm_plugin.Executor.get_partition_arg(executor, mock),
        "workdir": "/work/dir",
    }
    return get_submit_command(mock, params) + set_gres_string(mock)


def pick(jobs, rule, sweep):
    return next(j for j in jobs if j["rule"] == rule and j["wildcards"].get("sweep") == sweep)


def test_sbatch_of_the_gpu_rules(paper_jobs, monkeypatch):
    call = sbatch_call(pick(paper_jobs, "pretrain", "paper_6x6"), monkeypatch)
    argv = shlex.split(call)
    assert argv[:2] == ["sbatch", "--parsable"]
    for expected in (["-A", "proj42"], ["-p", "gpu"], ["-t", "1440"], ["--mem", "64000"]):
        i = argv.index(expected[0])
        assert argv[i:i + 2] == expected, call
    assert "--gpus=1" in argv and "--cpus-per-task=8" in argv
    assert not any(a.startswith("--ntasks") for a in argv)  # GPU jobs: no implicit task geometry

    call = sbatch_call(pick(paper_jobs, "pretrain", "paper_15x15"), monkeypatch)
    assert "--gpus=8" in shlex.split(call) and "--mem 256000" in call and "-t 2880" in call

    ev = pick(paper_jobs, "evaluate", "paper_6x6")
    assert ev["wildcards"]["V"] == "0.000" or "." in ev["wildcards"]["V"]
    call = sbatch_call(ev, monkeypatch)
    assert "--gpus=1" in shlex.split(call) and "-t 240" in call and " -p gpu" in call
    assert f"--comment rule_evaluate_wildcards_sweep=paper_6x6,V={ev['wildcards']['V']}" in call


def test_sbatch_of_the_cpu_rules(paper_jobs, monkeypatch):
    for rule, runtime, mem in (("observables", 30, 8000), ("aggregate", 10, 2000), ("plot", 10, 2000)):
        call = sbatch_call(pick(paper_jobs, rule, "paper_6x6"), monkeypatch)
        argv = shlex.split(call)
        assert "--gpus" not in call and "--gres" not in call, call
        assert "--ntasks=1" in argv and "--cpus-per-task=1" in argv
        assert f"-t {runtime}" in call and f"--mem {mem}" in call and " -p cpu" in call and " -A proj42" in call


def test_gpu_model_from_the_environment(tmp_path, monkeypatch):
    out = slurm_dry_run(tmp_path, {"QERNEL_SLURM_GPU_MODEL": "h100"}, "results/paper_6x6/pretrain/model.msgpack")
    job = next(j for j in dry_run_jobs(out) if j["rule"] == "pretrain")
    assert job["resources"]["gpu_model"] == "h100"
    call = sbatch_call(job, monkeypatch)
    assert "--gpus=h100:1" in call and " -p " not in call and " -A " not in call



LOCAL_RULES = ("sweep_config", "sweep_compute_config")


def test_the_plan_shows_trivial_jobs_are_local_and_every_job_asks_for_what_it_needs(tmp_path):
    """`snakemake --profile slurm -n --config run_sweeps=[paper_15x15]` (issue 15, item 8): the
    snapshot writers are local rules (listed at the start of the plan) asking for a minute and
    100 MB, not the profile's default 60 minutes, 4 GB and 50 GB of disk; every other job asks
    for its own resources from the config."""
    out = slurm_dry_run(tmp_path, {}, "--config", "run_sweeps=[paper_15x15]")
    assert "local rules (they run where snakemake runs, never queued on a cluster): all, sweep_config, " \
           "sweep_compute_config" in out
    jobs = dry_run_jobs(out)
    local = [j for j in jobs if j["rule"] in LOCAL_RULES]
    assert len(local) == 5
    for job in local:
        res = job["resources"]
        assert (res["runtime"], res["mem_mb"], res["disk_mb"], res["gpu"]) == (1, 100, 1, 0), job
    expected = {"pretrain": (2880, 256000, 32, 8), "evaluate": (1440, 64000, 8, 1), "observables": (120, 16000, 1, 0),
                "aggregate": (10, 2000, 1, 0), "plot": (10, 2000, 1, 0)}
    for job in jobs:
        if job["rule"] in expected:
            res = job["resources"]
            assert (res["runtime"], res["mem_mb"], res["cpus_per_task"], res["gpu"]) == expected[job["rule"]], job


@pytest.mark.slow
def test_local_rules_never_reach_sbatch(tmp_path):
    """A real run under the SLURM profile of the snapshot targets only, with stand-ins for the
    SLURM commands: the local rules run here and `sbatch` is never called. (Seconds of CPU; the
    executor's first status check comes after --slurm-init-seconds-before-status-checks, 40 s
    by default, which the run shortens to 1 s: when the checks happen does not decide what is
    submitted.)"""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.log"
    for name in ("squeue", "sacct", "sacctmgr", "sinfo", "scontrol", "scancel", "sbatch"):
        script = bin_dir / name
        script.write_text(f"#!/bin/sh\necho \"{name} $*\" >> '{calls}'\nexit {1 if name == 'sbatch' else 0}\n")
        script.chmod(0o755)
    targets = [f"results/paper_15x15/config/{name}.yaml" for name in ("pretrain", "pretrain.compute", "analysis")]
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    res = snakemake(*targets, "--profile", "slurm", "--slurm-init-seconds-before-status-checks", "1",
                    "--directory", tmp_path / "wd", "--configfile", CONFIG, cwd=REPO, env=env, timeout=600)
    assert res.returncode == 0, res.stdout[-4000:]
    for target in targets:
        assert (tmp_path / "wd" / target).is_file()
    assert "sbatch" not in (calls.read_text() if calls.exists() else "")
