"""qernel.config: schema and physical validation with errors naming the key; sweep resolution."""

from __future__ import annotations

import copy
import filecmp
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from qernel import config as qc
from qernel.units import WSE2_WS2

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config" / "config.yaml"

BASE = {
    "sweeps": {
        "t": {
            "system": {"supercell": [[2, 0], [0, 2]], "n_up": 2, "n_down": 1, "units": "moire",
                       "coupling": 1.5, "phase_deg": 45},
            "depths": [0.0, 1.0, 2.5],
            "pretrain": {"batch_size": 12},
        }
    }
}


def cfg(**changes):
    """BASE with dotted-path changes; a value of DELETE removes the key."""
    c = copy.deepcopy(BASE)
    for path, value in changes.items():
        *parents, last = path.split("__")
        node = c
        for p in parents:
            node = node[p]
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
    return c


DELETE = object()


def error(config) -> str:
    with pytest.raises(qc.ConfigError) as info:
        qc.validate_config(config)
    return str(info.value)


# -- the repository's config ----------------------------------------------------------------
def test_repository_config_is_valid_and_has_the_contract_keys():
    sweeps = qc.load_config(CONFIG)
    raw = qc.read_config(CONFIG)
    assert qc.run_sweeps(raw) == ["demo"]
    demo = raw["sweeps"]["demo"]
    # DESIGN.md §6, key by key
    assert set(demo) >= {"system", "depths", "model", "pretrain", "evaluate", "seed"}
    assert demo["system"]["supercell"] == [[3, 0], [0, 3]]
    assert (demo["system"]["n_up"], demo["system"]["n_down"]) == (6, 0)
    assert demo["system"]["units"] == "moire" and demo["system"]["coupling"] == 10.62
    # the tiny preset (with the Hartree–Fock orbital prior's options, issue 13)
    assert demo["system"]["phase_deg"] == 45 and (demo["model"] == "tiny" or demo["model"]["preset"] == "tiny")
    d = sweeps["demo"]
    assert len(d.depths) >= 8 and d.depths.min() == 0.0 and d.depths.max() >= 10.0
    assert math.isclose(d.system.filling, 2 / 3)
    assert math.isclose(d.system.coupling, WSE2_WS2.coupling, rel_tol=1e-3)
    assert math.isclose(d.energy_unit_meV, WSE2_WS2.energy_unit_meV, rel_tol=1e-4)
    # the paper family: nu = 2/3 in 6x6 ... 15x15 supercells
    for n, holes in ((6, 24), (9, 54), (12, 96), (15, 150)):
        s = sweeps[f"paper_{n}x{n}"]
        assert s.system.supercell.n_cells == n * n and s.system.n_electrons == holes
        assert math.isclose(s.system.filling, 2 / 3) and len(s.depths) >= 20
        assert s.model_spec == "paper" and s.resources["pretrain"]["gpu"] >= 1
        assert s.resources["evaluate"]["gpu"] >= 1


def test_physical_units_convert_depths_from_meV():
    s = qc.load_config(CONFIG)["demo_meV"]
    assert s.units == "physical" and s.config_units == "meV"
    e_m = WSE2_WS2.energy_unit_meV
    np.testing.assert_allclose(s.depths, s.depth_values_config / e_m)
    assert s.depth_labels[1] == "5.000"  # labels keep the config's unit
    assert math.isclose(s.system.coupling, WSE2_WS2.coupling)
    assert math.isclose(s.depth("15.000"), 15.0 / e_m)
    # the demo in moiré units and in meV describe the same Hamiltonian
    demo = qc.load_config(CONFIG)["demo"]
    assert math.isclose(demo.system.phase, s.system.phase)


def test_schema_is_shipped_in_the_package_and_is_the_workflows():
    packaged = qc.schema_path()
    assert packaged.is_file() and packaged.parent.name == "qernel"
    workflow_schema = REPO / "workflow" / "schemas" / "config.schema.yaml"
    assert workflow_schema.resolve() == packaged.resolve() or filecmp.cmp(workflow_schema, packaged, shallow=False)
    assert qc.load_schema()["properties"]["sweeps"]



def test_resolving_the_repository_config_imports_no_jax():
    """Config resolution (every `snakemake` start, `qernel info`) checks every option of every
    sweep, the default observables' series sizes and the HF snapshot without JAX or xarray
    (docs/architecture.md): the option classes live in JAX-free modules."""
    import subprocess
    import sys

    code = ("import sys; from qernel import config as qc; "
            "sweeps = qc.validate_config(qc.read_config(qc.DEFAULT_CONFIG_PATH)); "
            "[(s.resolved, s.model, s.pretrain, s.evaluate, s.snapshot('evaluate'), qc.hartree_fock_snapshot(n, s.raw)) "
            "for n, s in sweeps.items()]; "
            "bad = [m for m in ('jax', 'flax', 'optax', 'xarray', 'scipy') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert run.returncode == 0, run.stdout + run.stderr

# -- sweeps ---------------------------------------------------------------------------------
def test_sweep_resolution():
    s = qc.validate_config(cfg())["t"]
    assert s.depth_labels == ["0.000", "1.000", "2.500"]
    np.testing.assert_allclose(s.depths, [0, 1, 2.5])
    assert s.system.n_up == 2 and s.system.n_down == 1 and s.system.supercell.n_cells == 4
    assert math.isclose(s.system.phase, math.pi / 4)
    assert s.energy_unit_meV is None and s.cond_range == ((0.0, 2.5),)
    assert s.depth("2.5") == 2.5 and s.depth("2.500") == 2.5
    with pytest.raises(qc.ConfigError, match="no depth '3.000'"):
        s.depth("3")
    assert s.seed == 0 and s.model_spec == "tiny"
    assert s.resources["pretrain"] == qc.DEFAULT_RESOURCES["pretrain"]


def test_range_grid_and_integer_supercell_shorthand():
    s = qc.validate_config(cfg(sweeps__t__depths={"start": 0, "stop": 10, "num": 9},
                               sweeps__t__system__supercell=3, sweeps__t__pretrain={"batch_size": 18}))["t"]
    assert s.depth_labels[:3] == ["0.000", "1.250", "2.500"] and s.depth_labels[-1] == "10.000"
    assert s.system.supercell.matrix == ((3, 0), (0, 3))


def test_config_hash_ignores_resources_description_and_defaults():
    h = qc.validate_config(cfg())["t"].config_hash
    same = cfg(sweeps__t__resources={"pretrain": {"gpu": 4}}, sweeps__t__description="x", sweeps__t__seed=0)
    same["sweeps"]["t"]["model"] = "tiny"
    assert qc.validate_config(same)["t"].config_hash == h
    assert qc.validate_config(cfg(sweeps__t__seed=1))["t"].config_hash != h
    # stage hashes: evaluate options do not touch pretraining
    a = qc.validate_config(cfg())["t"]
    b = qc.validate_config(cfg(sweeps__t__evaluate={"samples": 7}))["t"]
    assert a.stage_hash("pretrain") == b.stage_hash("pretrain")
    assert a.stage_hash("evaluate") != b.stage_hash("evaluate")
    c = qc.validate_config(cfg(sweeps__t__depths=[0.0, 1.0], sweeps__t__pretrain={"batch_size": 12}))["t"]
    assert a.stage_hash("pretrain") != c.stage_hash("pretrain")


def test_config_hash_matches_io_provenance():
    qio = pytest.importorskip("qernel.io")
    s = qc.validate_config(cfg())["t"]
    assert qio.config_hash(s.canonical) == s.config_hash


def test_snapshot_round_trips_to_the_same_sweep(tmp_path):
    raw = cfg(sweeps__t__resources={"pretrain": {"gpu": 2}})
    text = qc.sweep_snapshot("t", raw["sweeps"]["t"])
    path = tmp_path / "snap.yaml"
    path.write_text(text)
    s = qc.load_sweep(path, "t")
    assert s.config_hash == qc.validate_config(raw)["t"].config_hash
    assert "resources" not in yaml.safe_load(text)["sweeps"]["t"]


def test_resources_merge_defaults_config_and_sweep():
    raw = cfg(sweeps__t__pretrain={"batch_size": 12}, resources={"pretrain": {"runtime": 99, "mem_mb": 1234}},
              sweeps__t__resources={"pretrain": {"runtime": 7, "gpu": 4}})
    s = qc.validate_config(raw)["t"]
    assert s.resources["pretrain"] == {"runtime": 7, "mem_mb": 1234, "cpus_per_task": 2, "gpu": 4}
    assert qc.rule_resources(raw, "t", "pretrain") == s.resources["pretrain"]
    assert s.resources["observables"]["gpu"] == 0


def test_run_sweeps_forms():
    two = copy.deepcopy(BASE)
    two["sweeps"]["u"] = copy.deepcopy(two["sweeps"]["t"])
    assert qc.run_sweeps({**two, "run_sweeps": ["u"]}) == ["u"]
    assert qc.run_sweeps({**two, "run_sweeps": "all"}) == ["t", "u"]
    assert qc.run_sweeps({**two, "run_sweeps": "t,u"}) == ["t", "u"]
    assert qc.run_sweeps(two) == ["t", "u"]  # no demo: every sweep
    assert qc.run_sweeps({"sweeps": {"u": {}, "demo": {}}}) == ["demo"]
    with pytest.raises(qc.ConfigError, match=r"^run_sweeps: unknown sweep 'x'"):
        qc.validate_config({**two, "run_sweeps": ["x"]})


def test_list_and_load_sweep(tmp_path):
    assert qc.list_sweeps(CONFIG)[0] == "demo"
    with pytest.raises(qc.ConfigError, match=r"^sweeps\.nope: unknown sweep 'nope' \(known: demo"):
        qc.load_sweep(CONFIG, "nope")
    with pytest.raises(qc.ConfigError, match="does not exist"):
        qc.load_sweep(tmp_path / "missing.yaml", "demo")
    bad = tmp_path / "bad.yaml"
    bad.write_text("sweeps: [1, 2\n")
    with pytest.raises(qc.ConfigError, match="not valid YAML"):
        qc.read_config(bad)


# -- errors name the key --------------------------------------------------------------------
@pytest.mark.parametrize("changes, key, text", [
    ({"sweeps__t__system__n_upp": 3}, "sweeps.t.system.n_upp", "unknown key"),
    ({"sweeps__t__colour": "red"}, "sweeps.t.colour", "unknown key"),
    ({"extra": 1}, "extra", "unknown key"),
    ({"sweeps__t__system__n_up": "six"}, "sweeps.t.system.n_up", "is not of type 'integer'"),
    ({"sweeps__t__system__n_up": 2.5}, "sweeps.t.system.n_up", "is not of type 'integer'"),
    ({"sweeps__t__system__coupling": "big"}, "sweeps.t.system.coupling", "is not of type 'number'"),
    ({"sweeps__t__system__units": "SI"}, "sweeps.t.system.units", "is not one of"),
    ({"sweeps__t__system__coupling": DELETE}, "sweeps.t.system.coupling", "required key is missing"),
    ({"sweeps__t__system__phase_deg": DELETE}, "sweeps.t.system.phase_deg", "required key is missing"),
    ({"sweeps__t__depths": DELETE}, "sweeps.t.depths", "required key is missing"),
    ({"sweeps__t__depths": []}, "sweeps.t.depths", "should be non-empty"),
    ({"sweeps__t__depths": [0.0, -1.0]}, "sweeps.t.depths.1", "less than the minimum of 0"),
    ({"sweeps__t__depths": {"start": 0, "stop": 1, "num": 0}}, "sweeps.t.depths.num", "less than the minimum of 1"),
    ({"sweeps__t__depths": {"start": 0, "stop": 1}}, "sweeps.t.depths.num", "required key is missing"),
    ({"sweeps__t__depths": {"start": -2, "stop": 1, "num": 3}}, "sweeps.t.depths.start", "less than the minimum"),
    ({"sweeps__t__depths": {"start": 0, "stop": 1, "num": 3, "step": 1}}, "sweeps.t.depths.step", "unknown key"),
    ({"sweeps__t__seed": -1}, "sweeps.t.seed", "less than the minimum"),
    ({"sweeps__t__resources": {"pretrain": {"gpus": 1}}}, "sweeps.t.resources.pretrain.gpus", "unknown key"),
    ({"sweeps__t__resources": {"train": {"gpu": 1}}}, "sweeps.t.resources.train", "unknown key"),
    ({"sweeps__t__system__supercell": [[1, 0]]}, "sweeps.t.system.supercell", ""),
])
def test_schema_errors_name_the_key(changes, key, text):
    msg = error(cfg(**changes))
    assert msg.startswith(key + ":"), msg
    assert text in msg


def test_bad_sweep_name():
    c = copy.deepcopy(BASE)
    c["sweeps"]["bad name/x"] = c["sweeps"].pop("t")
    assert error(c).startswith("sweeps: bad name 'bad name/x'")


@pytest.mark.parametrize("changes, key, text", [
    ({"sweeps__t__system__supercell": [[1, 2], [2, 4]]}, "sweeps.t.system.supercell", "singular"),
    ({"sweeps__t__system__n_up": 0, "sweeps__t__system__n_down": 0}, "sweeps.t.system.n_up", "at least one electron"),
    ({"sweeps__t__system__n_up": 100000}, "sweeps.t.system.n_up", "single-particle states"),
    ({"sweeps__t__system__n_down": 100000}, "sweeps.t.system.n_down", "single-particle states"),
    ({"sweeps__t__depths": [1.0, 1.0001]}, "sweeps.t.depths", "share the path label '1.000'"),
    ({"sweeps__t__depths": [1.0, float("nan")]}, "sweeps.t.depths", "not finite"),
    ({"sweeps__t__depths": [1.0, float("inf")]}, "sweeps.t.depths", "not finite"),
    ({"sweeps__t__system__effective_mass": 0.35}, "sweeps.t.system.effective_mass", "not allowed with units: moire"),
    ({"sweeps__t__system__units": "physical", "sweeps__t__system__effective_mass": 0.35,
      "sweeps__t__system__epsilon": 5, "sweeps__t__system__moire_length_nm": 8}, "sweeps.t.system.coupling",
     "not allowed with units: physical"),
    ({"sweeps__t__system__units": "physical", "sweeps__t__system__coupling": DELETE}, "sweeps.t.system.effective_mass",
     "required key is missing"),
])
def test_physical_errors_name_the_key(changes, key, text):
    msg = error(cfg(**changes))
    assert msg.startswith(key + ":") or msg.startswith(key + "."), msg
    assert text in msg


def test_capacity_is_what_the_bands_solver_can_fill():
    from qernel.bands import noninteracting_ground_state

    s = qc.validate_config(cfg(sweeps__t__system__supercell=1, sweeps__t__system__n_down=0))["t"]
    cap = qc.single_particle_capacity(s.system)
    ok = qc.validate_config(cfg(sweeps__t__system__supercell=1, sweeps__t__system__n_down=0,
                                sweeps__t__system__n_up=cap))["t"]
    assert ok.system.n_up == cap
    with pytest.raises(qc.ConfigError, match=r"^sweeps\.t\.system\.n_up: .* exceed"):
        qc.validate_config(cfg(sweeps__t__system__supercell=1, sweeps__t__system__n_up=cap + 1))
    # the solver itself fills `cap` electrons in one cell (small cutoff for speed: same rule)
    from qernel.lattice import MOIRE_RECIPROCAL, lattice_points

    n_pw = len(lattice_points(MOIRE_RECIPROCAL, 1.0 * np.linalg.norm(MOIRE_RECIPROCAL[0])))
    small = qc.validate_config(cfg(sweeps__t__system__supercell=1, sweeps__t__system__n_up=n_pw - 1,
                                   sweeps__t__system__n_down=0), resolve=False)["t"].system
    assert noninteracting_ground_state(small, 1.0, shells=1.0).energy < np.inf


def test_components_are_checked_by_their_modules():
    pytest.importorskip("qernel.model")
    msg = error(cfg(sweeps__t__model={"d_modell": 8}))
    assert msg.startswith("sweeps.t.model:") and "d_modell" in msg
    msg = error(cfg(sweeps__t__model="huge"))
    assert msg.startswith("sweeps.t.model:") and "huge" in msg


def test_batch_must_split_over_depths_and_gpus():
    msg = error(cfg(sweeps__t__pretrain={"batch_size": 10}))  # 3 depths × 1 GPU
    assert msg.startswith("sweeps.t.pretrain.batch_size: 10 walkers") and "multiple of 3" in msg
    msg = error(cfg(sweeps__t__pretrain={"batch_size": 9}, sweeps__t__resources={"pretrain": {"gpu": 2}}))
    assert "multiple of 6" in msg
    assert qc.validate_config(cfg(sweeps__t__pretrain={"batch_size": 12},
                                  sweeps__t__resources={"pretrain": {"gpu": 2}}))


def test_pretrain_options_are_checked_by_the_engine():
    pytest.importorskip("qernel.train")
    msg = error(cfg(sweeps__t__pretrain={"stepz": 3, "batch_size": 12}))
    assert msg.startswith("sweeps.t.pretrain:") and "stepz" in msg
    msg = error(cfg(sweeps__t__pretrain={"steps": -3, "batch_size": 12}))
    assert msg.startswith("sweeps.t.pretrain.steps:") and "minimum" in msg


@pytest.mark.parametrize("stage", ["evaluate", "analysis"])
def test_stage_snapshots_load_without_the_pretraining_batch(tmp_path, stage):
    """A stage snapshot leaves out the pretrain section, so the default pretraining batch (256)
    need not split over the sweep's depths there: 9 depths must load for every later stage."""
    raw = cfg(sweeps__t__depths={"start": 0.0, "stop": 8.0, "num": 9}, sweeps__t__pretrain={"batch_size": 18})
    assert qc.validate_config(raw)
    path = tmp_path / f"{stage}.yaml"
    path.write_text(qc.sweep_snapshot("t", raw["sweeps"]["t"], stage))
    sweep = qc.load_sweep(path, "t", stage=stage)
    assert len(sweep.depths) == 9 and "pretrain" not in sweep.raw
    # read as the pretraining stage, the default batch (256) adapts to the 9 depths and says so
    pre = qc.load_sweep(path, "t", stage="pretrain")
    assert pre.pretrain.batch_size == 252 and pre.resolved["pretrain"]["batch_size"] == 252
    assert any(n.startswith("pretrain.batch_size: the default 256 walkers") and "using 252" in n for n in pre.notes)


# -- impossible combinations stop at validation; defaults adapt (issue 15, item 3) -----------
def eval_cfg(evaluate=None, **changes):
    c = cfg(**changes)
    c["sweeps"]["t"]["evaluate"] = evaluate or {}
    return c


@pytest.mark.parametrize("config, key, text", [
    # fewer than 2 measurement steps: no error bar (the example: samples 1 of 16 walkers)
    (eval_cfg({"samples": 1, "batch_size": 16}), "sweeps.t.evaluate.samples",
     "1 samples of 16 walkers make 1 measurement step: error bars need at least 2 steps; the smallest valid "
     "evaluate.samples is 17"),
    (eval_cfg({"samples": 16, "batch_size": 16}), "sweeps.t.evaluate.samples", "the smallest valid evaluate.samples is 17"),
    # the default samples (100000) with a batch the user wrote too large for 2 steps
    (eval_cfg({"batch_size": 100000}), "sweeps.t.evaluate.batch_size",
     "100000 samples (the default) of 100000 walkers make 1 measurement step"),
    # too few samples for any batch: 2 steps of one walker per GPU
    (eval_cfg({"samples": 1}), "sweeps.t.evaluate.samples", "the smallest valid evaluate.samples is 2"),
    (eval_cfg({"samples": 3}, sweeps__t__resources={"evaluate": {"gpu": 2}}), "sweeps.t.evaluate.samples",
     "the smallest valid evaluate.samples is 4"),
    # batches against devices, for every stage
    (eval_cfg({"batch_size": 15}, sweeps__t__resources={"evaluate": {"gpu": 2}}), "sweeps.t.evaluate.batch_size",
     "15 walkers do not split evenly over 2 GPU(s) (resources.evaluate.gpu): use a multiple of 2, e.g. 16"),
    (eval_cfg({"finetune_steps": 5, "finetune": {"batch_size": 9}}, sweeps__t__resources={"evaluate": {"gpu": 2}}),
     "sweeps.t.evaluate.finetune.batch_size", "9 walkers do not split evenly over 2 GPU(s)"),
    (cfg(sweeps__t__pretrain={"batch_size": 18}, sweeps__t__resources={"pretrain": {"gpu": 4}}),
     "sweeps.t.pretrain.batch_size", "18 walkers do not split evenly over 3 depths × 4 GPU(s) (resources.pretrain.gpu): "
                                     "use a multiple of 12, e.g. 24"),
    # a fine-tuning option that is not a training option (evaluation does not import training:
    # the check is in validation, before any job)
    (eval_cfg({"finetune_steps": 5, "finetune": {"learnig_rate": 0.01}}), "sweeps.t.evaluate",
     "unknown finetune key(s) ['finetune.learnig_rate']"),
    # a fine-tuning value that its training option refuses: named at validation, not when the job runs
    (eval_cfg({"finetune_steps": 5, "finetune": {"learning_rate": "fast"}}), "sweeps.t.evaluate",
     "finetune.learning_rate must be a finite number, got 'fast'"),
    (eval_cfg({"finetune_steps": 5, "finetune": {"hop_moves": -1}}), "sweeps.t.evaluate",
     "finetune.hop_moves must be an integer >= 0, got -1"),
    # the series store must hold 2 blocks of the largest series (the error bars need them)
    (eval_cfg({"max_series_elements": 100}), "sweeps.t.evaluate.max_series_elements",
     "100 numbers cannot hold 2 blocks of the largest series"),
])
def test_impossible_combinations_are_named_before_any_job(config, key, text):
    msg = error(config)
    assert msg.startswith(key + ":"), msg
    assert text in msg, msg


def test_impossible_combination_in_the_cli_is_one_line(tmp_path, capsys):
    from qernel import cli

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(eval_cfg({"samples": 1, "batch_size": 16})))
    assert cli.main(["info", "--config", str(path), "--sweep", "t", "--no-model"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "sweeps.t.evaluate.samples:" in err and "Traceback" not in err


@pytest.mark.parametrize("changes, evaluate, expect, note", [
    # three depths and no batch: the default 256 adapts to 255 (the nearest multiple of 3)
    ({"sweeps__t__pretrain": {}}, None, ("pretrain", "batch_size", 255),
     "pretrain.batch_size: the default 256 walkers do not split over 3 depths × 1 GPU(s)"),
    ({"sweeps__t__pretrain": {}, "sweeps__t__resources": {"pretrain": {"gpu": 2}}}, None,
     ("pretrain", "batch_size", 258), "using 258, the nearest multiple of 6"),
    # samples 500 with the default batch 512: 2 steps of 250 walkers
    ({}, {"samples": 500}, ("evaluate", "batch_size", 250), "evaluate.batch_size: the default 512 walkers do not fit "
                                                            "with evaluate.samples = 500"),
    ({"sweeps__t__resources": {"evaluate": {"gpu": 3}}}, {}, ("evaluate", "batch_size", 510), "over 3 GPU(s)"),
])
def test_a_default_adapts_to_the_sweep_and_says_so(changes, evaluate, expect, note):
    c = cfg(**changes)
    if evaluate is not None:
        c["sweeps"]["t"]["evaluate"] = evaluate
    s = qc.validate_config(c)["t"]
    part, key, value = expect
    assert s.resolved[part][key] == value
    assert any(note in n for n in s.notes), s.notes
    assert any(note in line for line in s.snapshot(part).splitlines() if line.startswith("# adapted:"))


def test_a_note_on_one_stage_is_not_in_another_stages_snapshot():
    """An evaluate-only edit that makes the evaluation batch adapt must not touch the pretraining
    snapshot (the pretraining would rerun): its note is in the evaluate snapshot only."""
    adapted = cfg()
    adapted["sweeps"]["t"]["evaluate"] = {"samples": 500}  # the default batch 512 adapts to 250
    plain = cfg()
    plain["sweeps"]["t"]["evaluate"] = {"samples": 128, "batch_size": 16}
    a, b = qc.validate_config(adapted)["t"], qc.validate_config(plain)["t"]
    assert any(n.startswith("evaluate.batch_size") for n in a.notes)
    assert a.snapshot("pretrain") == b.snapshot("pretrain")
    assert a.snapshot("pretrain", compute=True) == b.snapshot("pretrain", compute=True)
    assert "# adapted: evaluate.batch_size" in a.snapshot("evaluate")
    assert "# adapted: evaluate.batch_size" in a.snapshot()


def test_no_note_when_the_defaults_fit():
    s = qc.validate_config(cfg(sweeps__t__depths=[0.0, 1.0], sweeps__t__pretrain={}))["t"]
    assert s.resolved["pretrain"]["batch_size"] == 256 and s.resolved["evaluate"]["batch_size"] == 512
    assert s.notes == ()


# -- sweep names YAML would read as numbers or booleans (issue 15, item 4) -------------------
NAMED = """\
sweeps:
  2024: &one
    system: {supercell: [[1, 0], [0, 1]], n_up: 1, n_down: 0, units: moire, coupling: 0.0, phase_deg: 45}
    depths: [1.0]
  on: *one
  1e3: *one
  0x10: *one
"""


def test_sweep_names_are_the_text_the_user_wrote(tmp_path):
    path = tmp_path / "named.yaml"
    path.write_text(NAMED)
    assert qc.list_sweeps(path) == ["2024", "on", "1e3", "0x10"]
    assert qc.load_sweep(path, "on").name == "on" and qc.load_sweep(path, "0x10", resolve=False).name == "0x10"
    # what Snakemake parses (YAML 1.1: 2024, True, 16 ...) maps back to the names as written
    parsed = yaml.safe_load(NAMED)
    assert set(parsed["sweeps"]) == {2024, True, "1e3", 16}
    fixed = qc.with_written_sweep_names(parsed, [(str(path), qc.read_config(path))])
    assert list(fixed["sweeps"]) == ["2024", "on", "1e3", "0x10"]
    assert qc.validate_config({**fixed, "run_sweeps": [2024, True, "1e3"]}, resolve=False)
    assert qc.run_sweeps({**fixed, "run_sweeps": [2024, True]}) == ["2024", "on"]


def test_sweep_names_yaml_reads_alike_must_be_quoted(tmp_path):
    path = tmp_path / "twins.yaml"
    path.write_text(NAMED.replace("1e3: *one", "yes: *one"))
    with pytest.raises(qc.ConfigError, match=r"^sweeps: the sweep names 'on', 'yes' are the same bool \(True\) to "
                                             r"YAML: quote them"):
        qc.with_written_sweep_names(yaml.safe_load(path.read_text()), [(str(path), qc.read_config(path))])
    # a name without a written form (e.g. from --config) that is not an integer must be quoted
    with pytest.raises(qc.ConfigError, match="quote it"):
        qc.with_written_sweep_names({"sweeps": {True: {}}}, [])
    assert list(qc.with_written_sweep_names({"sweeps": {7: {}}}, [])["sweeps"]) == ["7"]


# -- where a key comes from (issue 15, item 6) -------------------------------------------------
def test_an_error_in_a_merged_sweep_says_where_each_key_comes_from():
    base = {"sweeps": {"demo": {"system": {"units": "moire", "coupling": 10.0, "n_up": 1, "supercell": 1,
                                           "phase_deg": 45}, "depths": [1.0]}}}
    mine = {"sweeps": {"demo": {"system": {"units": "physical", "effective_mass": 0.35, "epsilon": 5.0,
                                           "moire_length_nm": 8.0}}}}
    layers = [("config/config.yaml", base), ("my.yaml", mine)]
    merged = qc.merge_configs(base, mine)
    with pytest.raises(qc.ConfigError) as info:
        qc.validate_config(merged, resolve=False)
    msg = qc.explain_origin(info.value, layers)
    assert msg.startswith("sweeps.demo.system.coupling: not allowed with units: physical")
    assert "sweeps.demo.system.coupling from config/config.yaml; sweeps.demo.system.units from my.yaml" in msg
    assert "--replace-workflow-config" in msg
    # a sweep from one file only: the message stays as it was
    assert qc.explain_origin(info.value, [("my.yaml", merged)]) == str(info.value)
    # every key the base file brings that physical units forbid, in one message, with its origin
    base["sweeps"]["demo"]["system"]["energy_unit_meV"] = 3.3756
    with pytest.raises(qc.ConfigError) as info:
        qc.validate_config(qc.merge_configs(base, mine), resolve=False)
    msg = qc.explain_origin(info.value, layers)
    assert "; so is sweeps.demo.system.energy_unit_meV" in msg
    assert "sweeps.demo.system.energy_unit_meV from config/config.yaml" in msg


NUMBERS = """\
run_sweeps: [1e3]
sweeps:
  1e3:
    description: 1e3
    system: {supercell: [[2, 0], [0, 2]], n_up: 2, n_down: 1, units: moire, coupling: 1.5e0, phase_deg: 45}
    depths: [0.0, 1e0, 2.5]
    model: {preset: tiny, orbital_init_scale: 1e-1}
    pretrain: {batch_size: 12, steps: 1e2, learning_rate: 1e-3, sr_damping: 1.0E-4, max_update_norm: 3e-2}
    evaluate: {samples: 2.4e1, batch_size: 12, init_width: 1e-1, finetune_steps: 2, finetune: {learning_rate: 5e-3}}
"""


def test_numbers_written_as_yaml_1_2_writes_them_are_numbers(tmp_path):
    """`1e-3`, `1.0E-4`, `1e2` are numbers to a user (YAML 1.2) but text to PyYAML and Snakemake
    (YAML 1.1): read where a number is wanted, they are the numbers meant, in every part of a
    sweep (schema keys, model, pretrain, evaluate), and hash like the same numbers written
    with a dot; text stays text where text is wanted (a description, a sweep name)."""
    path = tmp_path / "numbers.yaml"
    path.write_text(NUMBERS)
    plain = yaml.safe_load(NUMBERS)["sweeps"]["1e3"]
    assert plain["pretrain"]["learning_rate"] == "1e-3" and plain["system"]["coupling"] == "1.5e0"  # YAML 1.1
    sweep = qc.load_sweep(path, "1e3")
    assert sweep.resolved["pretrain"]["learning_rate"] == 0.001 and sweep.resolved["pretrain"]["steps"] == 100
    assert sweep.resolved["pretrain"]["sr_damping"] == 1e-4 and sweep.resolved["pretrain"]["max_update_norm"] == 0.03
    assert sweep.resolved["evaluate"]["samples"] == 24 and sweep.resolved["evaluate"]["init_width"] == 0.1
    assert sweep.resolved["model"]["orbital_init_scale"] == 0.1
    assert sweep.resolved["evaluate"]["finetune"] == {"learning_rate": 0.005}  # a training option inside evaluate
    assert sweep.system.coupling == 1.5 and list(sweep.depths) == [0.0, 1.0, 2.5]
    config = qc.read_config(path)
    assert qc.validate_config(config)["1e3"].config_hash == sweep.config_hash
    assert config["sweeps"]["1e3"]["description"] == "1e3" and config["run_sweeps"] == ["1e3"]
    dotted = NUMBERS.replace("1e-3", "0.001").replace("1.0E-4", "0.0001").replace("1e2", "100").replace(
        "3e-2", "0.03").replace("5e-3", "0.005").replace("1.5e0", "1.5").replace("1e0", "1.0").replace("1e-1", "0.1").replace("2.4e1", "24")
    (tmp_path / "dotted.yaml").write_text(dotted)
    assert qc.load_sweep(tmp_path / "dotted.yaml", "1e3").config_hash == sweep.config_hash
    # what cannot be a number is still named
    path.write_text(NUMBERS.replace("learning_rate: 1e-3", "learning_rate: 1e-3x"))
    with pytest.raises(qc.ConfigError, match="learning_rate must be a finite number, got '1e-3x'"):
        qc.load_sweep(path, "1e3")
