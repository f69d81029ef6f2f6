"""The Snakemake workflow without training: lint, dry runs of the repository's sweeps, config
validation before any job, and what reruns after adding a sweep, deleting a depth's output or
editing a sweep (using fake finished results made with --touch)."""

from __future__ import annotations

import filecmp
import shutil
from pathlib import Path

import pytest
import yaml

from smk import CONFIG, REPO, SNAKEFILE, dry_run_jobs, in_dir, job_counts, small_sweep, snakemake, write_config

DEMO_JOBS = {"sweep_config": 3, "sweep_compute_config": 2, "hartree_fock_config": 1, "hartree_fock": 1,
             "pretrain": 1, "evaluate": 9, "observables": 9, "aggregate": 1, "plot": 1, "all": 1}
PAPER = ("paper_6x6", "paper_9x9", "paper_12x12", "paper_15x15")


def test_lint_reports_nothing():
    res = snakemake("--lint")
    assert res.returncode == 0, res.stdout
    assert "Lints for" not in res.stdout
    assert "Congratulations, your workflow is in a good condition!" in res.stdout


def test_layout_snakefile_includes_only_and_schema_is_the_package_one():
    text = SNAKEFILE.read_text()
    assert "include: \"rules/common.smk\"" in text
    assert text.count("\nrule ") == 1  # only `all`; every other rule lives in rules/*.smk
    schema = REPO / "workflow" / "schemas" / "config.schema.yaml"
    assert filecmp.cmp(schema, REPO / "qernel" / "config.schema.yaml", shallow=False)
    from qernel.config import schema_path

    assert schema.resolve() == schema_path().resolve()


def test_figures_match_the_plots_module_and_have_captions():
    common = (REPO / "workflow" / "rules" / "common.smk").read_text()
    block = common[common.index("FIGURES = {"):]
    figures = eval(block[len("FIGURES = "):block.index("}") + 1])  # noqa: S307 (our own source)
    for caption in figures.values():
        assert (REPO / "workflow" / "report" / f"{caption}.rst").is_file(), caption
    plots = pytest.importorskip("qernel.plots")
    assert list(figures) == list(plots.FIGURES)


def test_dry_run_demo(tmp_path):
    """A plain dry run in the repository root (workflow profile, config/config.yaml) builds demo."""
    res = snakemake("-n", "--directory", tmp_path, "--configfile", CONFIG)
    assert res.returncode == 0, res.stdout
    assert "workflow specific profile profiles/default" in res.stdout
    assert job_counts(res.stdout) == DEMO_JOBS
    jobs = dry_run_jobs(res.stdout)
    assert {j["wildcards"].get("sweep") for j in jobs if j["rule"] != "all"} == {"demo"}
    labels = sorted(j["wildcards"]["V"] for j in jobs if j["rule"] == "evaluate")
    assert labels == sorted(["0.000", "1.250", "2.500", "3.750", "5.000", "6.250", "7.500", "8.750", "10.000"])
    pretrain = next(j for j in jobs if j["rule"] == "pretrain")
    assert pretrain["resources"]["runtime"] == 60 and pretrain["threads"] == 2


def test_dry_run_paper_sweeps(tmp_path):
    res = snakemake("-n", "--directory", tmp_path, "--configfile", CONFIG,
                    "--config", f"run_sweeps=[{','.join(PAPER)}]")
    assert res.returncode == 0, res.stdout
    n = len(PAPER)
    assert job_counts(res.stdout) == {"sweep_config": 3 * n, "sweep_compute_config": 2 * n, "hartree_fock_config": n,
                                      "hartree_fock": n, "pretrain": n, "evaluate": 41 * n, "observables": 41 * n,
                                      "aggregate": n, "plot": n, "all": 1}
    jobs = dry_run_jobs(res.stdout)
    gpus = {j["wildcards"]["sweep"]: j["resources"]["gpu"] for j in jobs if j["rule"] == "pretrain"}
    assert gpus == {"paper_6x6": 1, "paper_9x9": 2, "paper_12x12": 4, "paper_15x15": 8}  # qernel.memory sizing
    assert all(j["resources"]["gpu"] >= 1 for j in jobs if j["rule"] == "evaluate")
    assert all(j["resources"]["gpu"] == 0 for j in jobs if j["rule"] in ("observables", "aggregate", "plot",
                                                                         "hartree_fock"))


def test_run_sweeps_all_and_explicit_targets(tmp_path):
    res = snakemake("-n", "--directory", tmp_path, "--configfile", CONFIG, "--config", "run_sweeps=all")
    assert res.returncode == 0, res.stdout
    # demo, demo_meV, peer_periodicwave, check_two_electrons, check_noninteracting, 4 paper sweeps
    assert job_counts(res.stdout)["pretrain"] == 9
    res = snakemake("results/paper_9x9/phase_diagram.nc", "-n", "--directory", tmp_path, "--configfile", CONFIG)
    assert res.returncode == 0, res.stdout
    counts = job_counts(res.stdout)
    assert counts["evaluate"] == 41 and "plot" not in counts


# -- bad configs stop the run before any job ------------------------------------------------
BAD = {
    "unknown key": (dict(system={**small_sweep()["system"], "n_upp": 1}), "sweeps.s.system.n_upp: unknown key"),
    "wrong type": (dict(seed="zero"), "sweeps.s.seed: 'zero' is not of type 'integer'"),
    "impossible system": (dict(system={**small_sweep()["system"], "n_up": 100000}),
                          "sweeps.s.system.n_up: 100000 electrons of one spin exceed"),
    "singular supercell": (dict(system={**small_sweep()["system"], "supercell": [[1, 1], [2, 2]]}),
                           "sweeps.s.system.supercell: [[1, 1], [2, 2]]"),
    "negative depth": (dict(depths=[0.0, -0.5]), "sweeps.s.depths.1: -0.5 is less than the minimum of 0"),
    "empty grid": (dict(depths=[]), "sweeps.s.depths: [] should be non-empty"),
    "unknown pretrain option": (dict(pretrain={"stepz": 3, "batch_size": 24}), "sweeps.s.pretrain:"),
    "batch that does not split over the depths": (dict(pretrain={"batch_size": 25}),
                                                  "sweeps.s.pretrain.batch_size: 25 walkers do not split"),
    "samples that give no error bar": (dict(evaluate={"samples": 1, "batch_size": 16}),
                                       "sweeps.s.evaluate.samples: 1 samples of 16 walkers make 1 measurement step"),
    "batch that does not split over the GPUs": (dict(evaluate={"batch_size": 15}, resources={"evaluate": {"gpu": 2}}),
                                                "sweeps.s.evaluate.batch_size: 15 walkers do not split evenly over 2"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_config_fails_before_any_job(case, tmp_path):
    changes, message = BAD[case]
    if case == "unknown pretrain option":
        pytest.importorskip("qernel.train")
    cfg = write_config(tmp_path / "bad.yaml", {"s": small_sweep(**changes)})
    res = snakemake("--cores", "1", *in_dir(tmp_path, cfg))  # a real run, not a dry run
    assert res.returncode != 0
    assert "invalid config: " + message in res.stdout, res.stdout[-3000:]
    assert "Job stats" not in res.stdout and "rule " not in res.stdout
    assert not (tmp_path / "results").exists()


def test_a_default_that_does_not_fit_adapts_and_the_run_says_so(tmp_path):
    """Three depths and no pretrain.batch_size: the default 256 walkers adapt to 255 (issue 15,
    item 3); the plan says so and the pretraining snapshot holds the adapted value."""
    cfg = write_config(tmp_path / "c.yaml", {"s": small_sweep(depths=[0.0, 1.0, 2.0], pretrain={"steps": 5})})
    res = snakemake("results/s/config/pretrain.yaml", "--cores", "1", *in_dir(tmp_path, cfg))
    assert res.returncode == 0, res.stdout[-3000:]
    assert ("sweeps.s.pretrain.batch_size: the default 256 walkers do not split over 3 depths × 1 GPU(s) "
            "(resources.pretrain.gpu); using 255, the nearest multiple of 3") in res.stdout
    snap = yaml.safe_load((tmp_path / "results/s/config/pretrain.yaml").read_text())
    assert snap["sweeps"]["s"]["pretrain"]["batch_size"] == 255


# -- what reruns ----------------------------------------------------------------------------
def fake_finish(workdir: Path, cfg: Path, *sweeps: str) -> None:
    """Make every output of the given sweeps (default: the config's run_sweeps) exist and be up
    to date, without running a job: create the files listed by --summary, then let
    --touch --forceall order their times and record their metadata."""
    only = ["--config", f"run_sweeps=[{','.join(sweeps)}]"] if sweeps else []
    res = snakemake("--summary", *only, *in_dir(workdir, cfg))
    assert res.returncode == 0, res.stdout
    for line in res.stdout.splitlines()[1:]:
        fields = line.split("\t")
        if len(fields) >= 5 and fields[0].startswith("results/") and fields[4] == "missing":
            path = workdir / fields[0]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("fake\n")
    res = snakemake("--cores", "1", "--touch", "--forceall", *only, *in_dir(workdir, cfg))
    assert res.returncode == 0, res.stdout
    assert "Nothing to be done" in dry(workdir, cfg)


def dry(workdir, cfg, *extra) -> str:
    res = snakemake("-n", *in_dir(workdir, cfg), *extra)
    assert res.returncode == 0, res.stdout
    return res.stdout


def sweeps_of(output: str) -> set[str]:
    return {j["wildcards"]["sweep"] for j in dry_run_jobs(output) if "sweep" in j["wildcards"]}


def chain(n_depths: int, snapshots: int = 3, pretrain: bool = True, compute_snapshots: int = 0) -> dict[str, int]:
    """The jobs of one sweep's chain (snapshots: how many stage snapshots are rewritten;
    compute_snapshots: how many compute snapshots; a new sweep, with all 3 stage snapshots, also
    runs its Hartree–Fock reference and writes that stage's snapshot)."""
    counts = {"sweep_config": snapshots, "sweep_compute_config": compute_snapshots, "pretrain": 1,
              "evaluate": n_depths, "observables": n_depths, "aggregate": 1, "plot": 1, "all": 1}
    if snapshots == 3:
        counts.update(hartree_fock_config=1, hartree_fock=1)
    if not pretrain:
        del counts["pretrain"]
    return {k: v for k, v in counts.items() if v}


def mtimes(folder: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_what_reruns(tmp_path):
    cfg = tmp_path / "config.yaml"
    a = small_sweep(depths=[0.0, 1.0, 2.0])
    write_config(cfg, {"a": a})
    assert job_counts(dry(tmp_path, cfg)) == chain(3, compute_snapshots=2)
    fake_finish(tmp_path, cfg)

    # deleting one depth's outputs reruns that depth's chain only (and the per-sweep summaries)
    shutil.rmtree(tmp_path / "results/a/depth/1.000")
    out = dry(tmp_path, cfg)
    assert job_counts(out) == {"evaluate": 1, "observables": 1, "aggregate": 1, "plot": 1, "all": 1}
    assert {j["wildcards"].get("V") for j in dry_run_jobs(out) if j["rule"] in ("evaluate", "observables")} == {"1.000"}
    # deleting only its observables recomputes them from the evaluation that is still there
    (tmp_path / "results/a/depth/2.000/observables.nc").unlink()
    out = dry(tmp_path, cfg)
    assert job_counts(out) == {"evaluate": 1, "observables": 2, "aggregate": 1, "plot": 1, "all": 1}
    # deleting only an evaluation reruns its observables too (newer input)
    fake_finish(tmp_path, cfg)
    (tmp_path / "results/a/depth/0.000/evaluation.nc").unlink()
    out = dry(tmp_path, cfg)
    assert job_counts(out) == {"evaluate": 1, "observables": 1, "aggregate": 1, "plot": 1, "all": 1}
    fake_finish(tmp_path, cfg)
    before = mtimes(tmp_path / "results" / "a")

    # adding a sweep creates exactly the new sweep's jobs and leaves the existing results alone
    b = small_sweep(depths=[0.5, 1.5], seed=3)
    write_config(cfg, {"a": a, "b": b}, run_sweeps=["a", "b"])
    out = dry(tmp_path, cfg)
    assert job_counts(out) == chain(2, compute_snapshots=2) and sweeps_of(out) == {"b"}
    fake_finish(tmp_path, cfg, "b")
    assert mtimes(tmp_path / "results" / "a") == before

    # editing a sweep's evaluation options reruns its evaluations, not its pretraining
    write_config(cfg, {"a": {**a, "evaluate": {"samples": 1234}}, "b": b}, run_sweeps=["a", "b"])
    out = dry(tmp_path, cfg)
    assert job_counts(out) == chain(3, snapshots=1, pretrain=False) and sweeps_of(out) == {"a"}
    assert [j["wildcards"]["stage"] for j in dry_run_jobs(out) if j["rule"] == "sweep_config"] == ["evaluate"]
    # editing its pretraining options reruns the whole sweep; a sweep's resources change nothing
    write_config(cfg, {"a": {**a, "pretrain": {"steps": 11, "batch_size": 24}},
                       "b": {**b, "resources": {"pretrain": {"gpu": 2}}}},
                 run_sweeps=["a", "b"])
    out = dry(tmp_path, cfg)
    assert job_counts(out) == chain(3, snapshots=1) and sweeps_of(out) == {"a"}
    assert [j["wildcards"]["stage"] for j in dry_run_jobs(out) if j["rule"] == "sweep_config"] == ["pretrain"]
def test_config_snapshots_are_what_the_jobs_read(tmp_path):
    """Each job reads its stage's run snapshot and compute snapshot merged: exactly the resolved
    parts of the sweep that Snakemake validated (defaults filled in and adapted)."""
    cfg = write_config(tmp_path / "c.yaml", {"a": small_sweep(description="x", resources={"plot": {"mem_mb": 9}},
                                                                evaluate={"samples": 5},
                                                                pretrain={"steps": 10, "batch_size": 24,
                                                                          "log_every": 3})})
    snaps = tmp_path / "results" / "a" / "config"
    targets = [f"results/a/config/{name}.yaml" for name in
               ("pretrain", "evaluate", "analysis", "pretrain.compute", "evaluate.compute")]
    res = snakemake(*targets, "--cores", "1", *in_dir(tmp_path, cfg))
    assert res.returncode == 0, res.stdout
    from qernel.config import STAGE_KEYS, load_sweep, validate_config

    full = validate_config(yaml.safe_load(cfg.read_text()))["a"]
    for stage, keys in STAGE_KEYS.items():
        files = [snaps / f"{stage}.yaml"] + ([snaps / f"{stage}.compute.yaml"] if stage != "analysis" else [])
        assert sorted(yaml.safe_load(files[0].read_text())["sweeps"]["a"]) == sorted(keys)
        job = load_sweep(files, "a", stage=stage)
        assert job.resolved == {key: full.resolved[key] for key in keys}
        assert job.stage_hash(stage) == full.stage_hash(stage) and job.run_hash(stage) == full.run_hash(stage)
        assert job.depth_labels == full.depth_labels and job.system == full.system
    pre = yaml.safe_load((snaps / "pretrain.compute.yaml").read_text())["sweeps"]["a"]["pretrain"]
    assert pre["log_every"] == 3 and "steps" not in pre  # compute keys only
    job = load_sweep([snaps / "evaluate.yaml", snaps / "evaluate.compute.yaml"], "a", stage="evaluate")
    assert job.evaluate.samples == 5 and job.evaluate.batch_size == 2  # the default batch adapted: 2 steps
    assert "resources" not in yaml.safe_load((snaps / "pretrain.yaml").read_text())["sweeps"]["a"]


def test_report_has_every_figure_with_its_caption(tmp_path):
    plt = pytest.importorskip("matplotlib.pyplot")
    import numpy as np

    cfg = write_config(tmp_path / "c.yaml", {"a": small_sweep()})
    fake_finish(tmp_path, cfg)
    figures = sorted((tmp_path / "results" / "a" / "figures").glob("*.png"))
    assert len(figures) == 5
    for path in figures:  # real (tiny) images for the report
        plt.imsave(path, np.zeros((2, 2)))
    res = snakemake("--report", tmp_path / "report.html", *in_dir(tmp_path, cfg))
    assert res.returncode == 0, res.stdout[-3000:]
    for path in figures:
        assert f"Adding {path.name}" in res.stdout
    html = (tmp_path / "report.html").read_text(errors="replace")
    assert "Interaction energy across the liquid" in html  # a caption from workflow/report/
