"""The `qernel` command line: help, bands (exact reference values), info, bad input → exit 2."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from qernel import cli

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config" / "config.yaml"
COMMANDS = ("pretrain", "evaluate", "observables", "hartree-fock", "aggregate", "plot", "bands", "info")


def one_cell_config(tmp_path, **system) -> Path:
    """One electron in a 1×1 cell, λ = 0, φ = 45°, V = 1 E_M (and 2)."""
    spec = {"supercell": [[1, 0], [0, 1]], "n_up": 1, "n_down": 0, "units": "moire", "coupling": 0.0,
            "phase_deg": 45, **system}
    path = tmp_path / "one.yaml"
    path.write_text(yaml.safe_dump({"sweeps": {"one": {"system": spec, "depths": [1.0, 2.0]}}}))
    return path


def run_main(capsys, *argv):
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


# -- help -----------------------------------------------------------------------------------
def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert command in out


@pytest.mark.parametrize("command", COMMANDS)
def test_help_documents_every_option(command, capsys):
    parser = cli.build_parser()
    sub = parser._subparsers._group_actions[0].choices[command]
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    out = capsys.readouterr().out
    for action in sub._actions:
        assert action.help, f"{command}: {action.option_strings or action.dest} has no help"
        for opt in action.option_strings:
            assert opt in out
    assert "--config" in out and "--sweep" in out


# -- bands ----------------------------------------------------------------------------------
def test_bands_one_cell_reference_value(tmp_path, capsys):
    """One electron in a 1×1 cell at V = 1, φ = 45°: E = −0.215751 E_M (exact plane waves)."""
    code, out, err = run_main(capsys, "bands", "--config", str(one_cell_config(tmp_path)), "--sweep", "one",
                              "--depth", "1.000")
    assert code == 0, err
    assert "V = 1.000 E_M" in out and "V = 2.000" not in out
    assert re.search(r"total -0\.215751 E_M; per electron -0\.215751 E_M", out), out
    assert "meV: n/a" in out  # moiré units without energy_unit_meV
    # every job logs version, commit, devices and the resolved sweep
    assert "qernel 0.1.0 (git " in err and "devices: 1 × " in err and "resolved sweep:" in err


def test_bands_in_meV_and_every_depth(tmp_path, capsys):
    cfg = one_cell_config(tmp_path, energy_unit_meV=2.0)
    code, out, _ = run_main(capsys, "bands", "--config", str(cfg), "--sweep", "one", "-q")
    assert code == 0
    assert "V = 1.000 E_M" in out and "V = 2.000 E_M" in out
    assert "per electron -0.215751 E_M = -0.431502 meV" in out


def test_bands_console_script_and_python_m(tmp_path):
    """The installed entry points run the same CLI (as the workflow calls it)."""
    cfg = str(one_cell_config(tmp_path))
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    for argv in ([sys.executable, "-m", "qernel"], [str(Path(sys.executable).with_name("qernel"))]):
        if not Path(argv[0]).exists():
            pytest.fail(f"{argv[0]} is missing: is the package installed (pip install -e .)?")
        res = subprocess.run(argv + ["bands", "--config", cfg, "--sweep", "one", "--depth", "1", "-q"],
                             capture_output=True, text=True, env=env, timeout=120)
        assert res.returncode == 0, res.stderr
        assert "-0.215751" in res.stdout


# -- info -----------------------------------------------------------------------------------
def test_info_list_and_resolved_sweep(capsys):
    code, out, _ = run_main(capsys, "info", "--config", str(CONFIG), "--list")
    assert code == 0
    assert out.split() == ["demo", "demo_meV", "peer_periodicwave", "check_two_electrons", "check_noninteracting",
                           "paper_6x6", "paper_9x9", "paper_12x12", "paper_15x15"]
    code, out, err = run_main(capsys, "info", "--config", str(CONFIG), "--sweep", "paper_6x6", "--no-model")
    assert code == 0
    info = yaml.safe_load(out)
    assert info["sweep"] == "paper_6x6"
    assert info["system"]["n_electrons"] == 24 and info["system"]["n_cells"] == 36
    assert len(info["depths"]["labels"]) == 41 and info["resources"]["pretrain"]["gpu"] == 1
    assert "devices:" in err


def test_info_model_summary(tmp_path, capsys):
    pytest.importorskip("qernel.model")
    code, out, _ = run_main(capsys, "info", "--config", str(one_cell_config(tmp_path)), "--sweep", "one", "-q")
    assert code == 0
    n = int(re.search(r"^parameters: (\d+)$", out, re.M).group(1))
    assert n > 0 and "model summary:" in out


# -- bad input: one line, exit 2 ------------------------------------------------------------
@pytest.mark.parametrize("argv, text", [
    (["bands", "--sweep", "nope"], "sweeps.nope: unknown sweep 'nope' (known: demo"),
    (["bands", "--sweep", "demo", "--depth", "3.3"], "no depth '3.300' in this sweep"),
    (["evaluate", "--depth", "1.250", "--checkpoint", "missing.msgpack", "--out", "x.nc"],
     "checkpoint 'missing.msgpack' does not exist"),
    (["observables", "--evaluation", "missing.nc", "--out", "x.nc"], "evaluation file 'missing.nc' does not exist"),
    (["aggregate", "--out", "x.nc", "missing.nc"], "observables file 'missing.nc' does not exist"),
    (["plot", "--phase-diagram", "missing.nc", "--out-dir", "figs"], "phase diagram 'missing.nc' does not exist"),
    (["info", "--config", "missing.yaml"], "config file 'missing.yaml' does not exist"),
])
def test_bad_input_is_one_line_and_exit_2(argv, text, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if "--config" not in argv:
        argv = argv + ["--config", str(CONFIG)]
    code, out, err = run_main(capsys, *argv)
    assert code == 2
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 1 and text in lines[0], err
    assert "Traceback" not in err
    assert not list(tmp_path.iterdir())  # nothing written


def test_invalid_config_names_the_key(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sweeps:\n  one:\n    system: {supercell: 1, n_upp: 1, units: moire, coupling: 0, phase_deg: 0}\n"
                   "    depths: [1.0]\n")
    code, _, err = run_main(capsys, "bands", "--config", str(bad), "--sweep", "one")
    assert code == 2
    assert "sweeps.one.system.n_upp: unknown key" in err and "Traceback" not in err


def test_bad_arguments_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["evaluate", "--sweep", "demo"])  # --depth, --checkpoint, --out missing
    assert e.value.code == 2
    assert "required" in capsys.readouterr().err


def test_depth_seed_is_stable_under_grid_changes():
    from qernel.config import load_sweep

    demo = load_sweep(CONFIG, "demo", resolve=False)
    seeds = {label: cli.depth_seed(demo, label) for label in demo.depth_labels}
    assert len(set(seeds.values())) == len(seeds)
    assert all(0 <= s < 2**31 for s in seeds.values())


def test_start_log_shows_only_what_the_stage_reads(caplog):
    """A stage's config snapshot holds only its own parts: the start log must not show defaults
    for the others (an evaluate batch of 512 in a pretrain log that the sweep never set)."""
    import argparse
    import json
    import logging

    from qernel.config import DEFAULT_CONFIG_PATH, load_sweep

    sweep = load_sweep(DEFAULT_CONFIG_PATH, "demo")
    args = argparse.Namespace(config=str(DEFAULT_CONFIG_PATH), command="pretrain")
    logged = {}
    for stage in ("pretrain", "evaluate", "analysis", None):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="qernel"):
            cli._log_start(args, sweep, stage=stage)
        line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("resolved sweep: "))
        logged[stage] = set(json.loads(line.removeprefix("resolved sweep: ")))
    assert logged["pretrain"] == {"sweep", "config_hash", "system", "depths", "model", "pretrain", "seed"}
    assert logged["evaluate"] == {"sweep", "config_hash", "system", "depths", "model", "evaluate", "seed"}
    assert logged["analysis"] == {"sweep", "config_hash", "system", "depths"}
    assert {"pretrain", "evaluate", "resources"} <= logged[None]  # info and bands: the whole sweep


def test_a_runtime_stop_is_one_line_too(tmp_path, capsys, monkeypatch):
    """An error while a command runs (here: an evaluation file that is not netCDF) ends with one
    line and exit status 1, never a traceback (QERNEL_TRACEBACK=1 asks for it)."""
    monkeypatch.delenv(cli.TRACEBACK_ENV, raising=False)
    bad = tmp_path / "evaluation.nc"
    bad.write_text("not a netCDF file\n")
    argv = ["observables", "--config", str(one_cell_config(tmp_path)), "--sweep", "one", "--evaluation", str(bad),
            "--out", str(tmp_path / "observables.nc"), "-q"]
    code, _, err = run_main(capsys, *argv)
    assert code == 1, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("qernel observables: error: ")
    assert "Traceback" not in err and "QERNEL_TRACEBACK=1" in err
    monkeypatch.setenv(cli.TRACEBACK_ENV, "1")
    with pytest.raises(Exception):  # noqa: B017 (whatever the reader raises, it is raised as such)
        cli.main(argv)


def test_sweep_names_yaml_reads_as_numbers_or_booleans(tmp_path, capsys):
    """`2024`, `on`, `1e3` are sweep names as written in every command (issue 15, item 4)."""
    path = tmp_path / "named.yaml"
    path.write_text("sweeps:\n  2024: &one\n    system: {supercell: 1, n_up: 1, units: moire, coupling: 0.0, "
                    "phase_deg: 45}\n    depths: [1.0]\n  on: *one\n  1e3: *one\n")
    code, out, err = run_main(capsys, "info", "--config", str(path), "--list")
    assert code == 0 and out.split() == ["2024", "on", "1e3"], err
    for name in ("2024", "on", "1e3"):
        code, out, err = run_main(capsys, "info", "--config", str(path), "--sweep", name, "--no-model", "-q")
        assert code == 0 and yaml.safe_load(out)["sweep"] == name, err
        code, out, err = run_main(capsys, "bands", "--config", str(path), "--sweep", name, "-q")
        assert code == 0 and f"sweep {name}:" in out and "-0.215751" in out, err


def test_config_files_merge_key_by_key(tmp_path, capsys):
    """--config is repeatable: later files merge key by key over earlier ones (the workflow passes
    a stage's run and compute snapshots)."""
    extra = tmp_path / "extra.yaml"
    extra.write_text("sweeps:\n  one:\n    system: {energy_unit_meV: 2.0}\n")
    code, out, err = run_main(capsys, "bands", "--config", str(one_cell_config(tmp_path)), "--config", str(extra),
                              "--sweep", "one", "--depth", "1", "-q")
    assert code == 0, err
    assert "per electron -0.215751 E_M = -0.431502 meV" in out
