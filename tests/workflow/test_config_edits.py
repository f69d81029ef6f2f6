"""Issue 15 in the workflow's dry runs, as a user meets them (items 4 and 6; item 8's plan is in
test_slurm_profile; items 2 and 5 on a really built sweep are in test_end_to_end, which builds its
tiny chain once from paths with a space and `ü` and a sweep named `on`):

- sweeps named `2024`, `on`, `1e3` in dry runs;
- a --configfile merged into the workflow's config: the message says where each key comes
  from, and --replace-workflow-config replaces instead of merging.
"""

from __future__ import annotations

import yaml

from smk import SNAKEFILE, dry_run_jobs, job_counts, small_sweep, snakemake, write_config

NAMED = """\
sweeps:
  2024: &one
    system: {supercell: [[2, 0], [0, 2]], n_up: 2, n_down: 0, units: moire, coupling: 10.62, phase_deg: 45}
    depths: [0.0, 1.0]
    pretrain: {steps: 10, batch_size: 24}
  on: *one
  1e3: *one
"""


def test_sweep_names_yaml_reads_as_numbers_or_booleans(tmp_path):
    cfg = tmp_path / "named.yaml"
    cfg.write_text(NAMED)
    res = snakemake("-n", "--snakefile", SNAKEFILE, "--directory", tmp_path, "--configfile", cfg,
                    "--config", "run_sweeps=[2024,on,1e3]")
    assert res.returncode == 0, res.stdout[-4000:]
    sweeps = {str(j["wildcards"]["sweep"]) for j in dry_run_jobs(res.stdout) if "sweep" in j["wildcards"]}
    assert sweeps == {"2024", "on", "1e3"}
    assert "results/on/pretrain/model.msgpack" in res.stdout
    # two names YAML reads alike: quote them
    cfg.write_text(NAMED.replace("1e3: *one", "yes: *one"))
    res = snakemake("-n", "--snakefile", SNAKEFILE, "--directory", tmp_path, "--configfile", cfg)
    assert res.returncode != 0
    assert "invalid config: sweeps: the sweep names 'on', 'yes' are the same bool (True) to YAML: quote them" \
        in res.stdout


def test_a_merged_configfile_says_where_each_key_comes_from(tmp_path):
    """The workflow's config has `demo` in moiré units; a user's --configfile redefines `demo` in
    physical units. Snakemake merges them key by key, so `coupling` (which the user never wrote)
    stays: the message names the file of each key and the way to replace instead."""
    (tmp_path / "config").mkdir()
    write_config(tmp_path / "config" / "config.yaml", {"demo": small_sweep(), "other": small_sweep(seed=2)})
    mine = write_config(tmp_path / "my.yaml", {"demo": {**small_sweep(), "system": {
        "supercell": [[2, 0], [0, 2]], "n_up": 2, "units": "physical", "effective_mass": 0.35, "epsilon": 5.0,
        "moire_length_nm": 8.031, "phase_deg": 45}}})
    args = ["-n", "--snakefile", SNAKEFILE, "--directory", tmp_path, "--configfile", mine]
    res = snakemake(*args)
    assert res.returncode != 0
    line = next(line for line in res.stdout.splitlines() if "invalid config:" in line)
    assert "sweeps.demo.system.coupling: not allowed with units: physical" in line
    assert "sweeps.demo.system.coupling from config/config.yaml" in line
    assert f"sweeps.demo.system.units from {mine}" in line
    assert "--replace-workflow-config" in line
    # the documented way to replace rather than merge: only the user's file counts
    res = snakemake(*args, "--replace-workflow-config")
    assert res.returncode == 0, res.stdout[-4000:]
    assert {j["wildcards"].get("sweep") for j in dry_run_jobs(res.stdout) if j["rule"] != "all"} == {"demo"}
    snap = [j for j in dry_run_jobs(res.stdout) if j["rule"] == "pretrain"]
    assert len(snap) == 1 and job_counts(res.stdout)["evaluate"] == 2


def test_numbers_written_as_yaml_1_2_writes_them_reach_the_jobs(tmp_path):
    """`learning_rate: 1e-3` (text to Snakemake's YAML 1.1) is accepted and the pretraining job's
    config snapshot holds the number 0.001, so the job trains with it; a run key written either
    way is the same run (the same snapshot)."""
    sweep = small_sweep()
    sweep["pretrain"].update(learning_rate="1e-3", sr_damping="1.0E-4")
    cfg = write_config(tmp_path / "numbers.yaml", {"n": sweep})
    text = cfg.read_text().replace("'1e-3'", "1e-3").replace("'1.0E-4'", "1.0E-4")  # unquoted, as a user writes
    cfg.write_text(text)
    target = "results/n/config/pretrain.yaml"
    res = snakemake(target, "--cores", "1", "--snakefile", SNAKEFILE, "--directory", tmp_path, "--configfile", cfg)
    assert res.returncode == 0, res.stdout[-4000:]
    snap = yaml.safe_load((tmp_path / target).read_text())["sweeps"]["n"]["pretrain"]
    assert snap["learning_rate"] == 0.001 and snap["sr_damping"] == 0.0001
    first = (tmp_path / target).read_text()
    cfg.write_text(text.replace("1e-3", "0.001").replace("1.0E-4", "0.0001"))
    res = snakemake("-n", target, "--snakefile", SNAKEFILE, "--directory", tmp_path, "--configfile", cfg)
    assert res.returncode == 0 and "Nothing to be done" in res.stdout, res.stdout[-3000:]
    assert (tmp_path / target).read_text() == first
