"""The sweep-level Hartree–Fock reference (qernel.reference) and `qernel hartree-fock`."""

import math

import numpy as np
import pytest
import yaml

from qernel import cli
from qernel import io as qio
from qernel.hartree_fock import Basis
from qernel.lattice import Supercell
from qernel.observables import ordering_vector_mask
from qernel.reference import HFOptions, choose_shells, hartree_fock_sweep
from qernel.system import System

DEMO = System(Supercell.diagonal(3), n_up=6, coupling=10.62, phase=math.radians(45))
CHEAP = HFOptions(shells=1.0, starts=1, max_iter=100)


def test_sweep_dataset_conventions_and_crystal():
    ds = hartree_fock_sweep(DEMO, [10.0], ["10.000"], CHEAP)
    assert int(ds["hf_converged"][0]) == 1
    e = {n: float(ds[n][0]) for n in ("hf_energy", "hf_kinetic_energy", "hf_potential_energy",
                                      "hf_interaction_energy")}
    assert e["hf_energy"] == pytest.approx(e["hf_kinetic_energy"] + e["hf_potential_energy"]
                                           + e["hf_interaction_energy"], rel=1e-12)
    assert e["hf_energy"] == pytest.approx(float(ds["hf_energy_bound"][0]), rel=1e-12)
    k = np.stack([ds["kx"].values, ds["ky"].values], -1)
    mask = ordering_vector_mask(k)
    assert float(ds["hf_structure_factor_peak"][0]) == pytest.approx(
        float(ds["hf_structure_factor_uncorrected"][0, mask].mean()), rel=1e-12)
    assert float(ds["hf_translation_order"][0]) > 0.2 and np.isnan(float(ds["hf_momentum_x"][0]))
    assert float(ds["hf_density"][0].mean()) * math.sqrt(3) / 2 == pytest.approx(6 / 9, rel=1e-9)
    assert "V=10.000: converged" in ds.attrs["hf_status"]


def test_not_converged_is_nan_with_reason_and_keeps_the_bound():
    # (at V = 0 the band start is a plane-wave determinant: always self-consistent, so V = 5)
    ds = hartree_fock_sweep(DEMO, [5.0], ["5.000"], HFOptions(shells=1.0, starts=1, max_iter=1, seeded=False))
    assert int(ds["hf_converged"][0]) == 0
    for name in ("hf_energy", "hf_interaction_energy", "hf_structure_factor_peak"):
        assert np.isnan(float(ds[name][0]))
    assert np.isfinite(float(ds["hf_energy_bound"][0]))
    assert "V=5.000: not converged after" in ds.attrs["hf_status"]


def test_cost_bound_lowers_the_shells_then_skips():
    m2, m25, m3 = (Basis.build(DEMO, s).size for s in (2.0, 2.5, 3.0))
    assert choose_shells(DEMO, HFOptions(shells=3.0, max_plane_waves=m3)) == (3.0, m3)
    assert choose_shells(DEMO, HFOptions(shells=3.0, max_plane_waves=m3 - 1)) == (2.5, m25)
    assert choose_shells(DEMO, HFOptions(shells=3.0, max_plane_waves=m2 - 1)) == (None, m2)
    ds = hartree_fock_sweep(DEMO, [5.0], ["5.000"], HFOptions(max_plane_waves=m2 - 1))
    assert np.isnan(float(ds["hf_energy"][0])) and "hartree_fock.max_plane_waves" in ds.attrs["hf_status"]
    ds = hartree_fock_sweep(DEMO, [5.0], ["5.000"], HFOptions(enabled=False))
    assert np.isnan(float(ds["hf_energy"][0])) and "hartree_fock.enabled is false" in ds.attrs["hf_status"]
    # the paper family is over the default bound (paper_6x6: 517 plane waves at 2 shells)
    six = System(Supercell.diagonal(6), n_up=24, coupling=10.62)
    assert choose_shells(six, HFOptions()) == (None, 517)
    assert choose_shells(six, HFOptions(max_plane_waves=600)) == (2.0, 517)


def test_options_reject_unknown_and_bad_values():
    with pytest.raises(ValueError, match="hartree_fock.shels: unknown option"):
        HFOptions.from_dict({"shels": 2})
    with pytest.raises(ValueError, match="hartree_fock.starts: must be positive"):
        HFOptions.from_dict({"starts": 0})


def _config(tmp_path, hf):
    sweep = {"system": {"supercell": 3, "n_up": 6, "units": "moire", "coupling": 10.62, "phase_deg": 45},
             "depths": [5.0, 10.0], "hartree_fock": hf}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"sweeps": {"s": sweep}}))
    return path


def test_cli_writes_nan_with_reason_when_hf_does_not_converge(tmp_path, capsys):
    cfg = _config(tmp_path, {"shells": 1.0, "starts": 1, "max_iter": 1, "seeded": False})
    out = tmp_path / "hf.nc"
    assert cli.main(["hartree-fock", "--config", str(cfg), "--sweep", "s", "--out", str(out), "-q"]) == 0
    ds = qio.read_netcdf(out)
    assert list(ds["V"].values) == [5.0, 10.0]
    assert np.all(np.isnan(ds["hf_energy"].values)) and "not converged" in ds.attrs["hf_status"]
    assert ds.attrs["units"] == "E_M" and "config_hash" in ds.attrs


def test_cli_bad_option_names_the_key(tmp_path, capsys):
    cfg = _config(tmp_path, {"shels": 1.0})
    assert cli.main(["hartree-fock", "--config", str(cfg), "--sweep", "s", "--out", str(tmp_path / "x.nc")]) == 2
    assert "sweeps.s.hartree_fock.shels" in capsys.readouterr().err
    assert not (tmp_path / "x.nc").exists()
