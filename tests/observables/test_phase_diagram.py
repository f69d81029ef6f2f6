"""phase_diagram.nc: DESIGN.md §4 names and units, round trip, transition estimates, edge cases."""

import warnings

import numpy as np
import pytest
import xarray as xr

from qernel import io as qio
from qernel.aggregate import TransitionEstimate, aggregate, build_phase_diagram, estimate_transition, transition_agreement
from qernel.lattice import Supercell
from qernel.observables import (MOIRE_CELL_AREA, DensityAccumulator, EnergyAccumulator, StructureFactorAccumulator,
                                bin_centres, default_kvectors, observables_dataset, ordering_vector_mask)

E_M = 3.3756
CONFIG = {"system": {"supercell": [[3, 0], [0, 3]], "n_up": 6, "units": "physical", "effective_mass": 0.35,
                     "epsilon": 5.0, "moire_length_nm": 8.031, "phase_deg": 45}, "seed": 0}
DESIGN_VARIABLES = {  # name: dims, from DESIGN.md §4
    **{n: ("V",) for e in ("energy", "kinetic_energy", "potential_energy", "interaction_energy")
       for n in (e, f"{e}_stderr")},
    "density": ("V", "x", "y"), "density_stderr": ("V", "x", "y"),
    "structure_factor": ("V", "k"), "structure_factor_stderr": ("V", "k"),
    "transition_depth_interaction": (), "transition_depth_interaction_stderr": (),
    "transition_depth_structure_factor": (), "transition_depth_structure_factor_stderr": (),
}


def synthetic(depth, e_int, peak, supercell=Supercell.diagonal(3), rng=None, err=0.003, sk_err=0.01,
              with_sk=True):
    """One depth's observables.nc content (the schema of qernel.aggregate)."""
    rng = np.random.default_rng(int(depth * 100)) if rng is None else rng
    e_kin, e_pot = 0.5 + 0.01 * depth, -0.8 * depth
    data = {"kinetic_energy": ((), e_kin), "potential_energy": ((), e_pot), "interaction_energy": ((), e_int),
            "energy": ((), e_kin + e_pot + e_int), "variance": ((), 0.4), "n_eff": ((), 5000.0)}
    for name in ("kinetic_energy", "potential_energy", "interaction_energy", "energy"):
        data[f"{name}_stderr"] = ((), err)
    nu = 6 / supercell.n_cells
    data["density"] = (("x", "y"), nu / MOIRE_CELL_AREA * (1 + 0.01 * rng.standard_normal((12, 12))))
    data["density_stderr"] = (("x", "y"), np.full((12, 12), 0.01))
    coords = {"x": bin_centres(12), "y": bin_centres(12)}
    if with_sk:
        k = default_kvectors(supercell)
        s = np.where(ordering_vector_mask(k), peak, 1.0)
        for name in ("structure_factor", "structure_factor_uncorrected"):
            data[name] = ("k", s)
            data[f"{name}_stderr"] = ("k", np.full(len(k), sk_err))
        coords.update(kx=("k", k[:, 0]), ky=("k", k[:, 1]))
    return xr.Dataset(data, coords=coords, attrs={"depth": float(depth), "depth_meV": float(depth) * E_M,
                                                  **qio.provenance_attrs(CONFIG, "demo")})


def step_sweep(depths, rng):
    e_int = -0.3 - 0.01 * depths + 0.2 * (depths > 4.25) + 0.003 * rng.standard_normal(len(depths))
    peak = 0.2 + 1.3 / (1 + np.exp(-(depths - 6.25) / 0.1)) + 0.01 * rng.standard_normal(len(depths))
    return [synthetic(v, e, p) for v, e, p in zip(depths, e_int, peak)]


def test_roundtrip_has_design_variables_with_units(tmp_path):
    depths = np.arange(0.0, 10.01, 0.5)
    datasets = step_sweep(depths, np.random.default_rng(0))
    paths = []
    for i in np.random.default_rng(1).permutation(len(datasets)):  # unsorted on purpose
        p = tmp_path / f"depth/{depths[i]:g}/observables.nc"
        qio.write_netcdf(datasets[i], p)
        paths.append(p)
    out = tmp_path / "phase_diagram.nc"
    written = aggregate(paths, out)
    with xr.open_dataset(out, engine="netcdf4") as pd:
        for name, dims in DESIGN_VARIABLES.items():
            assert name in pd, name
            assert pd[name].dims == dims, name
            assert pd[name].attrs.get("units"), name
            assert pd[name].attrs.get("long_name"), name
        for c in ("V", "V_meV", "x", "y", "kx", "ky"):
            assert c in pd.coords and pd[c].attrs.get("units"), c
        assert pd["V"].attrs["units"] == "E_M" and pd["V_meV"].attrs["units"] == "meV"
        assert pd["kx"].dims == ("k",) and pd["ky"].dims == ("k",)
        np.testing.assert_allclose(pd["V"], depths)  # sorted
        np.testing.assert_allclose(pd["V_meV"], depths * E_M)
        for key in qio.REQUIRED_ATTRS + ("transition_depth_interaction", "transition_depth_structure_factor"):
            assert key in pd.attrs, key
        assert pd.attrs["units"] == "E_M" and pd.attrs["energy_unit_meV"] == pytest.approx(E_M, rel=1e-4)
        assert pd.attrs["config_hash"] == qio.config_hash(CONFIG)
        # density integrates to ν at every depth; values survive the trip
        np.testing.assert_allclose(pd["density"].mean(("x", "y")) * np.sqrt(3) / 2, 6 / 9, rtol=0.01)
        np.testing.assert_allclose(pd["interaction_energy"], [float(d["interaction_energy"]) for d in datasets])
        xr.testing.assert_identical(pd.load(), written)
        rebuilt = build_phase_diagram([qio.read_netcdf(p) for p in paths])
        xr.testing.assert_allclose(pd.drop_vars(["V_meV"]).reset_coords(drop=True)[list(rebuilt.data_vars)],
                                   rebuilt.drop_vars(["V_meV"]).reset_coords(drop=True))


def test_transitions_find_known_steps():
    depths = np.arange(0.0, 10.01, 0.5)
    pd = build_phase_diagram(step_sweep(depths, np.random.default_rng(2)), seed=1)
    assert float(pd["transition_depth_interaction"]) == pytest.approx(4.25)
    assert float(pd["transition_depth_structure_factor"]) == pytest.approx(6.25)
    # two sharp steps 2 E_M apart on a 0.5 grid: they do not agree, and the dataset says so
    assert float(pd["transition_depth_difference"]) == pytest.approx(-2.0)
    assert int(pd["transition_depths_agree"]) == 0 and pd.attrs["transition_depths_agree"] == 0
    assert pd.attrs["transition_depth_interaction"] == pytest.approx(4.25)
    np.testing.assert_allclose(pd.attrs["transition_depth_interaction_interval"], [4.0, 4.5])
    # the steps are far above the noise: the bootstrap agrees
    assert float(pd["transition_depth_interaction_stderr"]) < 0.1
    assert float(pd["transition_depth_structure_factor_stderr"]) < 0.1
    assert pd["transition_depth_interaction"].attrs["bootstrap_support"] > 0.95
    # the peak is read at the K points
    np.testing.assert_allclose(pd["structure_factor_peak"].sel(V=10.0), 1.5, atol=0.05)
    assert pd["structure_factor_peak"].attrs["source"] == "structure_factor_uncorrected"


def test_bootstrap_uncertainty_grows_with_error_bars():
    v = np.arange(0.0, 6.0, 0.5)
    y = np.where(v > 2.8, 0.05, 0.0)
    sharp = estimate_transition(v, y, np.full(len(v), 1e-4), seed=0)
    noisy = estimate_transition(v, y, np.full(len(v), 0.05), seed=0)
    assert sharp.depth == pytest.approx(2.75) and sharp.stderr < 1e-12 and sharp.support == 1.0
    assert noisy.stderr > 0.5 and noisy.support < 0.8
    rise = estimate_transition(v, -y + 0.2 * (v > 4.1), mode="rise")
    assert rise.depth == pytest.approx(4.25)


def test_transition_agreement_counts_bootstrap_and_grid_resolution():
    """Two estimates agree when their difference is within 2 standard errors, each estimate's
    error being its bootstrap stderr and its interval's resolution (width/√12) in quadrature."""
    same = TransitionEstimate(3.125, 0.0, (2.5, 3.75), 1.0, 9)
    diff, err, agree = transition_agreement(same, same)
    assert diff == 0.0 and err == pytest.approx(np.sqrt(2) * 1.25 / np.sqrt(12)) and agree
    neighbour = TransitionEstimate(4.375, 0.256, (3.75, 5.0), 0.8, 9)
    diff, err, agree = transition_agreement(neighbour, same)
    assert diff == pytest.approx(1.25)
    assert err == pytest.approx(np.sqrt(0.256**2 + 2 * 1.25**2 / 12))
    assert not agree  # 1.25 > 2 × 0.571: adjacent intervals, but more than 2σ apart
    far = TransitionEstimate(8.125, 0.0, (7.5, 8.75), 1.0, 9)
    assert not transition_agreement(far, same)[2]
    fine = TransitionEstimate(3.3, 0.0, (3.25, 3.35), 1.0, 9)
    assert transition_agreement(fine, same)[2]  # within the coarse estimate's resolution
    assert not transition_agreement(TransitionEstimate.undetermined(), same)[2]


def test_single_depth_gives_nan_transition(tmp_path):
    with pytest.warns(RuntimeWarning, match="at least two depths"):
        written = aggregate([qio.write_netcdf(synthetic(3.0, -0.3, 1.0), tmp_path / "o.nc")], tmp_path / "pd.nc")
    assert written.sizes["V"] == 1
    for name in ("transition_depth_interaction", "transition_depth_structure_factor"):
        assert np.isnan(float(written[name])) and np.isnan(written.attrs[name])


def test_missing_and_nan_values():
    depths = np.arange(0.0, 10.01, 0.5)
    datasets = step_sweep(depths, np.random.default_rng(3))
    datasets[3]["interaction_energy"] = np.nan  # a failed depth
    datasets[5] = synthetic(depths[5], -0.3, 0.2, with_sk=False)  # no structure factor there
    datasets[7] = datasets[7].drop_vars(["density", "density_stderr"])
    with pytest.warns(RuntimeWarning, match="ignoring 1 depth"):
        pd = build_phase_diagram(datasets)
    assert float(pd["transition_depth_interaction"]) == pytest.approx(4.25)
    assert float(pd["transition_depth_structure_factor"]) == pytest.approx(6.25)
    assert np.all(np.isnan(pd["structure_factor"].isel(V=5)))
    assert np.all(np.isnan(pd["density"].isel(V=7))) and not np.any(np.isnan(pd["density"].isel(V=6)))


def test_no_ordering_vector_and_bad_inputs():
    sc = Supercell.diagonal(2)
    datasets = [synthetic(v, -0.3 - 0.1 * v, 1.0, supercell=sc) for v in (0.0, 1.0, 2.0)]
    with pytest.warns(RuntimeWarning, match="no moiré K point"):
        pd = build_phase_diagram(datasets)
    assert np.all(np.isnan(pd["structure_factor_peak"])) and np.isnan(float(pd["transition_depth_structure_factor"]))
    assert float(pd["transition_depth_interaction"]) == pytest.approx(0.5)
    mixed = [synthetic(0.0, -0.3, 1.0), synthetic(1.0, -0.3, 1.0, supercell=Supercell.diagonal(6))]
    with pytest.raises(ValueError, match="kx"):
        build_phase_diagram(mixed)
    with pytest.raises(ValueError, match="duplicate"):
        build_phase_diagram([synthetic(1.0, -0.3, 1.0), synthetic(1.0, -0.2, 1.0)])
    with pytest.raises(ValueError, match="depth"):
        build_phase_diagram([synthetic(1.0, -0.3, 1.0).drop_attrs()])
    with pytest.raises(ValueError):
        build_phase_diagram([])


def test_accumulators_produce_the_schema(tmp_path):
    """The accumulators' datasets are valid observables.nc files for the aggregation."""
    sc = Supercell.diagonal(3)
    rng = np.random.default_rng(4)
    paths = []
    for depth in (1.0, 2.0, 3.0):
        x = sc.to_cart(rng.random((40, 8, 6, 2)))
        energy = EnergyAccumulator(6).update(tuple(rng.normal(size=(3, 40, 8)) + depth))
        ds = observables_dataset(depth, energy.result(), DensityAccumulator(sc, (12, 12)).update(x).result(),
                                 StructureFactorAccumulator(sc).update(x).result(), energy_unit_meV=E_M,
                                 attrs=qio.provenance_attrs(CONFIG, "demo"))
        paths.append(qio.write_netcdf(ds, tmp_path / f"{depth}/observables.nc"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pd = aggregate(paths, tmp_path / "phase_diagram.nc")
    for name, dims in DESIGN_VARIABLES.items():
        assert pd[name].dims == dims and pd[name].attrs["units"]
    assert pd["density"].shape == (3, 12, 12)
    np.testing.assert_allclose(pd["V_meV"], np.array([1.0, 2.0, 3.0]) * E_M)
    np.testing.assert_allclose(pd["energy"], pd["kinetic_energy"] + pd["potential_energy"] + pd["interaction_energy"])


# -- the Hartree–Fock reference (qernel.reference's hartree_fock.nc) ---------------------------
def synthetic_hf(depths, converged, energies, supercell=Supercell.diagonal(3)):
    """A hartree_fock.nc (schema of qernel.reference) with its k set in reversed order."""
    import json

    k = default_kvectors(supercell)[::-1]
    nv = len(depths)
    sk = np.outer(np.arange(1, nv + 1), np.where(ordering_vector_mask(k), 1.3, 0.9))
    status = [f"V={v:.3f}: " + ("converged" if c else "not converged after 3 iterations (test)")
              for v, c in zip(depths, converged)]
    data = {"hf_energy": ("V", np.asarray(energies, float)), "hf_interaction_energy": ("V", 0.5 * np.asarray(energies)),
            "hf_converged": ("V", np.asarray(converged, np.int8)),
            "hf_structure_factor_peak": ("V", sk[:, ordering_vector_mask(k)].mean(axis=1)),
            "hf_structure_factor_uncorrected": (("V", "k"), sk),
            "hf_density": (("V", "x", "y"), np.full((nv, 12, 12), 0.77))}
    return xr.Dataset(data, coords={"V": ("V", np.asarray(depths, float)), "kx": ("k", k[:, 0]), "ky": ("k", k[:, 1]),
                                    "x": bin_centres(12), "y": bin_centres(12)},
                      attrs={"hf_status": "; ".join(status), "hf_status_json": json.dumps(status), "hf_shells": 2.0})


def test_hartree_fock_merged_nan_with_reason_where_not_converged(tmp_path):
    depths = np.array([0.0, 2.5, 5.0, 7.5, 10.0])
    datasets = step_sweep(depths, np.random.default_rng(1))
    paths = []
    for i, ds in enumerate(datasets):
        paths.append(qio.write_netcdf(ds, tmp_path / f"o{i}.nc"))
    plain = aggregate(paths, tmp_path / "plain.nc")
    hf_path = qio.write_netcdf(synthetic_hf([0.0, 2.5, 5.0, 10.0], [1, 1, 0, 1], [-1.0, -2.0, -3.0, -4.0]),
                               tmp_path / "hf.nc", qio.provenance_attrs(CONFIG, "demo"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        merged = aggregate(paths, tmp_path / "pd.nc", hartree_fock=hf_path)
    for name in ("energy", "interaction_energy", "structure_factor_peak", "transition_depth_interaction"):
        np.testing.assert_array_equal(merged[name].values, plain[name].values)  # VMC untouched
    np.testing.assert_array_equal(merged["hf_energy"].values, [-1.0, -2.0, np.nan, np.nan, -4.0])
    np.testing.assert_array_equal(merged["hf_converged"].values, [1, 1, 0, 0, 1])
    assert np.isnan(merged["hf_interaction_energy"].values[2]) and np.isnan(merged["hf_structure_factor_peak"][3])
    reason = merged["hf_energy"].attrs["nan_reason"]
    assert "V=5.000: not converged" in reason and "V=7.5: no Hartree–Fock result" in reason
    assert "V=0.000: converged" in merged.attrs["hf_status"] and merged.attrs["hf_shells"] == 2.0
    # k-resolved HF is aligned to the diagram's k vectors (the file's k order was reversed)
    mask = ordering_vector_mask(np.stack([merged["kx"].values, merged["ky"].values], -1))
    hf_sk = merged["hf_structure_factor_uncorrected"].values
    np.testing.assert_allclose(hf_sk[0], np.where(mask, 1.3, 0.9))
    np.testing.assert_allclose(hf_sk[4], 4 * np.where(mask, 1.3, 0.9))
    assert np.all(np.isnan(hf_sk[2])) and np.all(np.isnan(hf_sk[3]))
    np.testing.assert_allclose(merged["hf_structure_factor_peak"].values[[0, 1, 4]], [1.3, 2.6, 5.2])
    assert merged["hf_density"].dims == ("V", "x", "y") and float(merged["hf_density"][0, 0, 0]) == 0.77


def test_unreadable_hartree_fock_file_still_writes_the_vmc_diagram(tmp_path):
    paths = [qio.write_netcdf(ds, tmp_path / f"o{i}.nc")
             for i, ds in enumerate(step_sweep(np.array([0.0, 5.0, 10.0]), np.random.default_rng(2)))]
    bad = tmp_path / "hf.nc"
    bad.write_text("not netcdf")
    merged = aggregate(paths, tmp_path / "pd.nc", hartree_fock=bad)
    assert np.all(np.isfinite(merged["energy"].values))
    assert np.all(np.isnan(merged["hf_energy"].values)) and "unreadable" in merged["hf_energy"].attrs["nan_reason"]


def test_non_converging_hartree_fock_run_gives_nan_and_reason_in_the_phase_diagram(tmp_path):
    """The real chain: `hartree_fock_sweep` with max_iter = 1 (no convergence) → hartree_fock.nc
    → aggregate: hf_* NaN with the reason; the VMC variables complete."""
    import math

    from qernel.reference import HFOptions, hartree_fock_sweep
    from qernel.system import System

    system = System(Supercell.diagonal(3), n_up=6, coupling=10.62, phase=math.radians(45))
    depths = np.array([5.0, 10.0])
    hf = hartree_fock_sweep(system, depths, None, HFOptions(shells=1.0, starts=1, max_iter=1, seeded=False))
    hf_path = qio.write_netcdf(hf, tmp_path / "hf.nc", qio.provenance_attrs(CONFIG, "demo"))
    paths = [qio.write_netcdf(ds, tmp_path / f"o{i}.nc")
             for i, ds in enumerate(step_sweep(depths, np.random.default_rng(3)))]
    with pytest.warns(RuntimeWarning, match="hf_density: the HF grid differs"):  # 24×24 HF, 12×12 synthetic VMC
        merged = aggregate(paths, tmp_path / "pd.nc", hartree_fock=hf_path)
    assert "hf_density" not in merged
    assert np.all(np.isfinite(merged["energy"].values)) and np.all(np.isfinite(merged["structure_factor_peak"]))
    for name in ("hf_energy", "hf_interaction_energy", "hf_structure_factor_peak"):
        assert np.all(np.isnan(merged[name].values)), name
    assert "V=5.000: not converged after" in merged["hf_energy"].attrs["nan_reason"]
    assert np.all(np.isfinite(merged["hf_energy_bound"].values))
