"""Synthetic phase_diagram.nc / train.nc datasets (no training) for the plotting tests.

The datasets mimic the default sweep (DESIGN.md §1, §4): spin-polarised holes at ν = 2/3 in a
3×3 supercell, depths 0…10 E_M, E_M = 3.3756 meV, and a liquid → generalised-Wigner-crystal
transition at V_c ≈ 4.35 E_M: a step in the interaction energy, an S(K) peak at the moiré
Brillouin-zone corners that grows across V_c, a unit-cell density that sharpens on the
moiré sites, and a supercell density whose occupied sites form a honeycomb (one √3×√3
sublattice emptied).
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

E_M_MEV = 3.3756
NU = 2.0 / 3.0
V_C = 4.35
V_C_ERR = 0.4
V_C_S = 4.6
V_C_S_ERR = 0.5
A1 = np.array([1.0, 0.0])
A2 = np.array([0.5, np.sqrt(3.0) / 2.0])
LATTICE = np.stack([A1, A2])
CELL_AREA = np.sqrt(3.0) / 2.0
K_NORM = 4.0 * np.pi / 3.0


def order_parameter(v):
    """Crystalline order m(V) ∈ [0, 1]: 0 in the liquid, 1 deep in the crystal."""
    return 0.5 * (1.0 + np.tanh((np.asarray(v, float) - V_C) / 0.6))


def _gaussian_sum(frac, sites_frac, lattice, widths, weights, n_images=1):
    """Σ_s w_s exp(-|r - R_s|²/(2σ²)) / (2πσ²), periodic over `lattice`; frac (..., 2)."""
    cart = frac @ lattice
    out = np.zeros(frac.shape[:-1])
    shifts = np.array([(i, j) for i in range(-n_images, n_images + 1) for j in range(-n_images, n_images + 1)])
    for s, w in zip(sites_frac, weights):
        for sh in shifts:
            d = cart - (s + sh) @ lattice
            r2 = np.sum(d**2, axis=-1)
            out += w * np.exp(-r2 / (2 * widths**2)) / (2 * np.pi * widths**2)
    return out


def unit_cell_density(v, n=24):
    """(n, n) density on the fractional grid i/n of the moiré cell, integrating to ν."""
    g = np.arange(n) / n
    frac = np.stack(np.meshgrid(g, g, indexing="ij"), -1)
    width = 0.30 / np.sqrt(1.0 + 0.35 * v)
    peak = _gaussian_sum(frac, np.zeros((1, 2)), LATTICE, width, [1.0])
    loc = 1.0 - 0.6 * np.exp(-v / 2.5)  # localised fraction, the rest uniform
    dens = loc * peak / (peak.mean() * CELL_AREA) + (1.0 - loc) / CELL_AREA
    return NU * dens


def supercell_density(v, n=36, size=3):
    """(n, n) density on the fractional grid of the size×size supercell (honeycomb order)."""
    g = np.arange(n) / n
    frac = np.stack(np.meshgrid(g, g, indexing="ij"), -1)
    m = order_parameter(v)
    sites, weights = [], []
    for n1 in range(size):
        for n2 in range(size):
            sites.append([n1 / size, n2 / size])
            empty = (n1 - n2) % 3 == 0  # one √3×√3 sublattice
            weights.append(NU * (1.0 - m) if empty else NU * (1.0 + 0.5 * m))
    super_lattice = size * LATTICE
    width = 0.30 / np.sqrt(1.0 + 0.35 * v)
    dens = _gaussian_sum(frac, np.array(sites), super_lattice, width, weights)
    total = NU * size * size
    return dens / (dens.mean() * size * size * CELL_AREA) * total


def supercell_kpoints(size=3, cutoff=2.2 * K_NORM):
    """Supercell reciprocal lattice vectors (incl. Γ) with |k| <= cutoff, (M, 2) in 1/a_M."""
    recip = 2 * np.pi * np.linalg.inv(size * LATTICE).T
    n = int(np.ceil(cutoff / np.linalg.norm(recip, axis=1).min())) + 2
    ij = np.array([(i, j) for i in range(-n, n + 1) for j in range(-n, n + 1)])
    k = ij @ recip
    k = k[np.linalg.norm(k, axis=1) <= cutoff + 1e-9]
    return k[np.argsort(np.linalg.norm(k, axis=1), kind="stable")]


def structure_factor(v, k):
    """S(k) at depth v: liquid-like background plus a K-point peak growing as m(V)²."""
    knorm = np.linalg.norm(k, axis=-1)
    base = 1.0 - np.exp(-((knorm / 3.0) ** 1.5)) + 0.25 * np.exp(-((knorm - K_NORM) ** 2) / 0.8)
    at_k = np.isclose(knorm, K_NORM, rtol=1e-6)
    return base + np.where(at_k, 0.15 + 3.5 * order_parameter(v) ** 2, 0.0)


def make_phase_diagram(n_depths=8, with_supercell=True, with_peak=False, energy_unit=E_M_MEV, seed=0,
                       aggregate_style=False):
    """A phase_diagram dataset with the DESIGN.md §4 names.

    Default: the names of the plotting brief (``density_supercell`` with a ``supercell`` attr,
    S(k) only in ``structure_factor``, the peak computed by the plots). ``aggregate_style``:
    as `qernel.aggregate` writes it: ``supercell_density``, the supercell matrix only inside
    the JSON ``config`` attr, ``structure_factor_uncorrected`` (with the Bragg peaks of the
    moiré-periodic density at the moiré reciprocal vectors G) and the stored
    ``structure_factor_peak`` = its mean over the K points.
    """
    rng = np.random.default_rng(seed)
    v = np.linspace(0.0, 10.0, n_depths)
    m = order_parameter(v)
    e_int = -17.0 - 0.45 * m + 0.02 * v
    e_kin = 2.0 + 0.9 * v**0.8
    e_pot = -4.24 * v * v / (v + 1.5)
    err = lambda scale: scale * (1.0 + 0.3 * rng.random(n_depths))  # noqa: E731
    s_int, s_kin, s_pot = err(0.02), err(0.015), err(0.015)
    s_tot = np.sqrt(s_int**2 + s_kin**2 + s_pot**2) * 0.6
    n = 24
    k = supercell_kpoints()
    sk = np.stack([structure_factor(x, k) for x in v])
    data = {
        "energy": ("V", e_int + e_kin + e_pot + rng.normal(0, s_tot)),
        "energy_stderr": ("V", s_tot),
        "kinetic_energy": ("V", e_kin + rng.normal(0, s_kin)),
        "kinetic_energy_stderr": ("V", s_kin),
        "potential_energy": ("V", e_pot + rng.normal(0, s_pot)),
        "potential_energy_stderr": ("V", s_pot),
        "interaction_energy": ("V", e_int + rng.normal(0, s_int)),
        "interaction_energy_stderr": ("V", s_int),
        "density": (("V", "x", "y"), np.stack([unit_cell_density(x, n) for x in v])),
        "structure_factor": (("V", "k"), sk + rng.normal(0, 0.02, sk.shape)),
        "structure_factor_stderr": (("V", "k"), 0.02 + 0.02 * sk),
        "transition_depth_interaction": ((), V_C),
        "transition_depth_interaction_stderr": ((), V_C_ERR),
    }
    coords = {
        "V": ("V", v, {"units": "E_M"}),
        "V_meV": ("V", v * (energy_unit if np.isfinite(energy_unit) else np.nan)),
        "x": ("x", np.arange(n) / n),
        "y": ("y", np.arange(n) / n),
        "kx": ("k", k[:, 0]),
        "ky": ("k", k[:, 1]),
    }
    if with_supercell:
        ns = 36
        data["density_supercell"] = (("V", "sx", "sy"), np.stack([supercell_density(x, ns) for x in v]),
                                     {"supercell": "[[3, 0], [0, 3]]"})
        coords["sx"] = ("sx", np.arange(ns) / ns)
        coords["sy"] = ("sy", np.arange(ns) / ns)
    if with_peak:
        at_k = np.isclose(np.linalg.norm(k, axis=1), K_NORM)
        data["structure_factor_peak"] = ("V", sk[:, at_k].mean(axis=1))
        data["structure_factor_peak_stderr"] = ("V", np.full(n_depths, 0.05))
    ds = xr.Dataset(data, coords=coords)
    ds.attrs.update({
        "units": "E_M",
        "energy_unit_meV": float(energy_unit),
        "transition_depth_structure_factor": V_C_S,
        "transition_depth_structure_factor_stderr": V_C_S_ERR,
        "supercell": "[[3, 0], [0, 3]]",
    })
    if aggregate_style:
        import json

        del ds.attrs["supercell"]
        if with_supercell:
            ds = ds.rename({"density_supercell": "supercell_density"})
            del ds["supercell_density"].attrs["supercell"]
        ds.attrs["config"] = json.dumps({"system": {"supercell": [[3, 0], [0, 3]], "n_up": 6, "n_down": 0},
                                         "depths": {"start": 0.0, "stop": 10.0, "num": n_depths}})
        frac = k @ LATTICE.T / (2 * np.pi)
        is_g = np.all(np.isclose(frac, np.round(frac)), axis=1) & (np.linalg.norm(k, axis=1) > 1e-9)
        bragg = 6.0 * (0.3 + 0.7 * (1.0 - np.exp(-v / 3.0)))[:, None] * is_g[None, :]
        ds["structure_factor_uncorrected"] = ds["structure_factor"] + bragg
        ds["structure_factor_uncorrected_stderr"] = ds["structure_factor_stderr"]
        at_k = np.isclose(np.linalg.norm(k, axis=1), K_NORM)
        ds["structure_factor_peak"] = ds["structure_factor_uncorrected"].isel(k=np.flatnonzero(at_k)).mean("k")
        ds["structure_factor_peak_stderr"] = ds["structure_factor_uncorrected_stderr"].isel(
            k=np.flatnonzero(at_k)).mean("k")
        ds["transition_depth_structure_factor"] = ((), V_C_S)
        ds["transition_depth_structure_factor_stderr"] = ((), V_C_S_ERR)
        for name, vc in (("transition_depth_interaction", V_C), ("transition_depth_structure_factor", V_C_S)):
            i = int(np.searchsorted(v, vc)) - 1  # the grid interval holding V_c
            ds[name].attrs["interval"] = np.array([v[i], v[i + 1]])
    return ds


def make_train(n_steps=600, depths=None, seed=1, n_layers=2, n_experts=4):
    """A train dataset like `qernel.train` writes: per-step and per-depth curves that converge,
    the learning-rate schedule, and MoE usage (fractions per layer)."""
    rng = np.random.default_rng(seed)
    depths = np.linspace(0.0, 10.0, 8) if depths is None else np.asarray(depths, float)
    step = np.arange(n_steps)
    e_final = -15.0 + 0.9 * depths**0.8 - 4.24 * depths**2 / (depths + 1.5)
    decay = np.exp(-step / (n_steps / 6))[:, None]
    var = (0.05 + 0.02 * depths)[None, :] + 20.0 * decay
    e = e_final[None, :] + 8.0 * decay + rng.normal(0, 1, (n_steps, len(depths))) * np.sqrt(var / 64)
    var_noisy = var * np.exp(rng.normal(0, 0.2, var.shape))
    logits = rng.normal(0, 1, (n_steps, n_layers, n_experts)) * (0.2 + decay[:, :, None])
    logits += np.linspace(-0.4, 0.4, n_experts)[None, None, :] * decay[:, :, None] * 3
    usage = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    ds = xr.Dataset(
        {
            "energy": ("step", e.mean(1)),
            "variance": ("step", var_noisy.mean(1)),
            "acceptance": ("step", np.clip(0.55 + 0.05 * rng.normal(size=n_steps) - 0.2 * decay[:, 0], 0, 1)),
            "learning_rate": ("step", 0.05 / (1.0 + step / 100.0)),
            "energy_per_depth": (("step", "depth"), e,
                                 {"units": "E_M", "long_name": "energy per electron at each depth"}),
            "variance_per_depth": (("step", "depth"), var_noisy, {"units": "E_M^2"}),
            "acceptance_per_depth": (("step", "depth"), np.clip(
                0.5 + 0.02 * depths[None, :] + 0.05 * rng.normal(size=e.shape) - 0.2 * decay, 0, 1)),
            "expert_usage": (("step", "layer", "expert"), usage),
        },
        coords={"step": step, "depth": ("depth", depths, {"units": "E_M"}), "layer": np.arange(n_layers),
                "expert": np.arange(n_experts)},
        attrs={"units": "E_M", "energy_unit_meV": E_M_MEV},
    )
    return ds


@pytest.fixture
def phase_diagram_ds():
    return make_phase_diagram()


@pytest.fixture
def train_ds():
    return make_train()


@pytest.fixture(scope="session")
def synth():
    """This module (the factories and constants above) for tests that need them directly."""
    import sys

    return sys.modules[__name__]
