"""All depths of a sweep → one phase-diagram dataset, with the transition estimated from the data.

Input: the per-depth `results/{sweep}/depth/{V}/observables.nc` (schema below), written with
`qernel.io.write_netcdf` (e.g. from `qernel.observables.observables_dataset`).
Output: `results/{sweep}/phase_diagram.nc` (DESIGN.md §4).

observables.nc (one depth)
--------------------------
Global attrs (required): ``depth`` (V in E_M), ``depth_meV`` (V in meV, NaN if E_M unknown),
plus the provenance attrs of `qernel.io` (units "E_M", energy_unit_meV, config, config_hash,
qernel_version, git_commit); recommended: ``n_electrons``, ``filling``.

Scalar variables (dims ()), energies per electron in E_M; ``*_stderr`` from reblocking:

    energy, energy_stderr                          total
    kinetic_energy, kinetic_energy_stderr
    potential_energy, potential_energy_stderr      moiré potential Σ_i Δ_V(r_i) / N
    interaction_energy, interaction_energy_stderr  λ[Σ_{i<j} v_E + (N/2) ξ_M] / N
    variance        Var(E_L) of the total local energy of one configuration, E_M²
    n_eff           effective number of independent samples of E_L
    n_samples       (optional) steps × walkers

Density (electrons per a_M²), folded onto the moiré unit cell:

    density, density_stderr (x, y)     coords x (n_x,), y (n_y,): fractional coordinates of
                                       the bin centres along a1, a2, in [0, 1); optional 2-D
                                       coords cart_x, cart_y (x, y) in a_M.
                                       mean(density) · √3/2 = ν.
    supercell_density, supercell_density_stderr (sx, sy)   optional, integrates to N.

Structure factor (dimensionless), at supercell reciprocal vectors k ≠ 0:

    structure_factor, structure_factor_stderr (k)          S(k) = ⟨|ρ_k|²⟩/N − |⟨ρ_k⟩|²/N
    structure_factor_uncorrected, ..._stderr (k)           ⟨|ρ_k|²⟩/N (recommended)
    coords kx (k), ky (k) in 1/a_M; optional k_norm (k); optional rho_k_real, rho_k_imag,
    rho_k_stderr (k).

Pair correlation (optional): pair_correlation, pair_correlation_stderr (r), coord r in a_M.

Every depth of a sweep must use the same x, y, k (and sx, sy, r) grids; a variable missing
at some depth becomes NaN there.

phase_diagram.nc
----------------
Dimension ``V`` (coord V in E_M, sorted ascending; coord ``V_meV`` (V) when E_M is known).
Variables: every scalar above over (V); density, density_stderr (V, x, y); structure_factor,
structure_factor_stderr (and the uncorrected pair) (V, k) with coords kx, ky, k_norm (k);
supercell_density (V, sx, sy) and pair_correlation (V, r) when present;
``structure_factor_peak``, ``structure_factor_peak_stderr`` (V): the mean of the uncorrected
S(k) (or S(k) if absent) over the moiré Brillouin-zone corners K (|K| = 4π/3, the six C6
partners present in the k set; its error is the mean of their errors, since S(k) = S(−k)
and the C3 partners are correlated); and the transition estimates, as 0-d variables and as
global attrs of the same names:

    transition_depth_interaction, _stderr          midpoint of the interval with the largest
                                                   |Δ interaction_energy / ΔV|
    transition_depth_structure_factor, _stderr     midpoint of the interval where
                                                   structure_factor_peak rises most (largest
                                                   positive ΔS/ΔV)

Hartree–Fock reference (optional, from the workflow's hartree_fock.nc, `qernel.reference`):
``hf_energy``, ``hf_kinetic_energy``, ``hf_potential_energy``, ``hf_interaction_energy``,
``hf_structure_factor_peak`` and the other ``hf_*`` scalars over V; ``hf_structure_factor``
(and ``_uncorrected``) over (V, k) where the k sets share vectors; ``hf_density`` over (V, x, y)
on the same grid. NaN where HF did not converge or has no result for a depth, with the reason
in the attr ``nan_reason`` of ``hf_energy`` and the global attr ``hf_status`` (also logged).

The ``_stderr`` is the standard deviation over a parametric bootstrap (each value redrawn
from a normal with its error bar); the grid resolution is a separate, systematic
uncertainty, recorded as the interval bounds in the attrs ``<name>_interval`` (E_M).
Whether the two estimates agree (`transition_agreement`): ``transition_depth_difference``
(interaction − structure factor, E_M), ``transition_depth_difference_stderr`` (both bootstraps and
both grid resolutions, interval width/√12, in quadrature) and ``transition_depths_agree`` (1 when
the difference is within AGREEMENT_SIGMAS = 2 of its stderr; also a global attr).
With fewer than two usable depths (or no K point in the k set) a transition is NaN and a
warning is issued.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import warnings
from pathlib import Path

import numpy as np
import xarray as xr

from qernel import io as qio
from qernel.observables import ordering_vector_mask, phase_diagram_layouts

log = logging.getLogger(__name__)

ENERGY_VARIABLES = ("energy", "kinetic_energy", "potential_energy", "interaction_energy")
SCALAR_VARIABLES = tuple(v for name in ENERGY_VARIABLES for v in (name, f"{name}_stderr")) + (
    "variance", "n_eff", "n_samples")
#: Gridded variables by their dimensions (with stderr companions listed explicitly): each
#: observable declares its own (`qernel.observables.PhaseDiagramLayout`).
GRIDDED_VARIABLES = {dims: layout.variables for dims, layout in phase_diagram_layouts().items()}
#: Coordinates that must agree between depths, per dimension set.
_GRID_COORDS = {dims: layout.grid_coords for dims, layout in phase_diagram_layouts().items()}
_EXTRA_COORDS = {dims: layout.extra_coords for dims, layout in phase_diagram_layouts().items() if layout.extra_coords}
#: Global attrs that belong to one depth or one process, not carried into the phase diagram.
_PER_FILE_ATTRS = ("depth", "depth_meV", "date_created", "qernel_version", "git_commit")
TRANSITIONS = ("transition_depth_interaction", "transition_depth_structure_factor")


@dataclasses.dataclass(frozen=True)
class TransitionEstimate:
    """A transition depth (E_M) from finite differences on a V grid.

    depth: the midpoint of the selected interval (V_i, V_{i+1}); stderr: std over the
    parametric bootstrap; interval: (V_i, V_{i+1}); support: the fraction of bootstrap
    replicates that selected the same interval; n_depths: depths used.
    """

    depth: float
    stderr: float
    interval: tuple[float, float]
    support: float
    n_depths: int

    @classmethod
    def undetermined(cls, n_depths: int = 0) -> "TransitionEstimate":
        nan = float("nan")
        return cls(nan, nan, (nan, nan), nan, n_depths)


def estimate_transition(depths, values, stderr=None, mode: str = "abs", n_bootstrap: int = 2000,
                        seed: int = 0, name: str = "transition") -> TransitionEstimate:
    """The depth where `values` (V) changes fastest.

    mode "abs": largest |Δvalue/ΔV|; "rise": largest positive Δvalue/ΔV. Non-finite values
    (or depths) are dropped with a warning; NaN error bars count as 0 (with a warning).
    Returns NaN (with a warning) when fewer than two depths are usable. Raises ValueError for an
    unknown mode or for duplicate depths among the usable ones.
    """
    if mode not in ("abs", "rise"):
        raise ValueError(f"mode must be 'abs' or 'rise', got {mode!r}")
    v = np.asarray(depths, dtype=float).ravel()
    y = np.asarray(values, dtype=float).ravel()
    e = np.zeros_like(y) if stderr is None else np.asarray(stderr, dtype=float).ravel()
    ok = np.isfinite(v) & np.isfinite(y)
    if not np.all(ok):
        warnings.warn(f"{name}: ignoring {int(np.count_nonzero(~ok))} depth(s) with missing or non-finite values",
                      RuntimeWarning, stacklevel=2)
    v, y, e = v[ok], y[ok], e[ok]
    if len(v) < 2:
        warnings.warn(f"{name}: needs at least two depths with finite values, got {len(v)}; "
                      "the transition is undetermined (NaN)", RuntimeWarning, stacklevel=2)
        return TransitionEstimate.undetermined(len(v))
    if not np.all(np.isfinite(e)):
        warnings.warn(f"{name}: treating missing error bars as zero", RuntimeWarning, stacklevel=2)
        e = np.where(np.isfinite(e), e, 0.0)
    order = np.argsort(v)
    v, y, e = v[order], y[order], e[order]
    if np.any(np.diff(v) == 0):
        raise ValueError(f"{name}: duplicate depths {v[np.flatnonzero(np.diff(v) == 0)]}")
    mid = 0.5 * (v[1:] + v[:-1])

    def pick(samples):  # samples (..., n) -> interval index (...)
        slope = np.diff(samples, axis=-1) / np.diff(v)
        return np.argmax(np.abs(slope) if mode == "abs" else slope, axis=-1)

    best = int(pick(y))
    rng = np.random.default_rng(seed)
    boot = pick(y + e * rng.standard_normal((int(n_bootstrap), len(y))))
    stderr_boot = float(np.std(mid[boot], ddof=1)) if n_bootstrap > 1 else float("nan")
    return TransitionEstimate(float(mid[best]), stderr_boot, (float(v[best]), float(v[best + 1])),
                              float(np.mean(boot == best)), len(v))


#: How many standard errors of their difference two transition estimates may differ by and agree.
AGREEMENT_SIGMAS = 2.0


def transition_agreement(a: TransitionEstimate, b: TransitionEstimate) -> tuple[float, float, bool]:
    """(a.depth − b.depth, its standard error, agree) for two transition estimates.

    Each estimate locates the transition only to within its grid interval, so its uncertainty is
    its bootstrap stderr and the interval's resolution added in quadrature: a position uniform over
    an interval of width h has standard deviation h/√12. agree: |difference| <= AGREEMENT_SIGMAS ×
    its stderr (False when either estimate is undetermined).
    """
    def total(e: TransitionEstimate) -> float:
        width = e.interval[1] - e.interval[0] if len(e.interval) == 2 else float("nan")
        return math.hypot(e.stderr if np.isfinite(e.stderr) else 0.0, width / math.sqrt(12.0))

    diff = a.depth - b.depth
    err = math.hypot(total(a), total(b))
    agree = bool(np.isfinite(diff) and np.isfinite(err) and abs(diff) <= AGREEMENT_SIGMAS * err)
    return float(diff), float(err), agree


def structure_factor_peak(ds: xr.Dataset):
    """(peak (..., ), stderr (...)) of S at the K points over the `k` dim of `ds`.

    Uses `structure_factor_uncorrected` if present (it keeps the Bragg part of a pinned
    crystal), else `structure_factor`. NaN (with a warning) if the k set holds no K point.
    """
    name = "structure_factor_uncorrected" if "structure_factor_uncorrected" in ds else "structure_factor"
    mask = ordering_vector_mask(np.stack([ds["kx"].values, ds["ky"].values], axis=-1))
    if not mask.any():
        warnings.warn("no moiré K point among the structure-factor k vectors (the supercell is not "
                      "commensurate with the √3×√3 order): the peak is NaN", RuntimeWarning, stacklevel=2)
        nan = xr.full_like(ds[name].isel(k=0, drop=True), np.nan)
        return nan, nan
    sel = ds[name].isel(k=np.flatnonzero(mask))
    err_name = f"{name}_stderr"
    err = ds[err_name].isel(k=np.flatnonzero(mask)) if err_name in ds else xr.full_like(sel, np.nan)
    return sel.mean("k"), err.mean("k")


def _depth_of(ds: xr.Dataset, index: int) -> float:
    if "depth" in ds.attrs:
        return float(ds.attrs["depth"])
    if "V" in ds.coords and ds["V"].size == 1:
        return float(ds["V"].values.ravel()[0])
    raise ValueError(f"observables dataset #{index} has no 'depth' attribute (V in E_M)")


def _template(datasets, names):
    """The first dataset that holds any of `names`, or None."""
    for ds in datasets:
        if any(n in ds for n in names):
            return ds
    return None


def _common_attrs(datasets) -> dict:
    """Global attrs equal in every dataset, minus the per-file ones."""
    first = dict(datasets[0].attrs)
    common = {}
    for key, value in first.items():
        if key in _PER_FILE_ATTRS:
            continue
        if all(key in ds.attrs and _same(ds.attrs[key], value) for ds in datasets[1:]):
            common[key] = value
    return common


def _same(a, b) -> bool:
    try:
        return bool(np.array_equal(np.asarray(a), np.asarray(b), equal_nan=np.asarray(a).dtype.kind == "f"))
    except TypeError:
        return a == b


def build_phase_diagram(observables_datasets, n_bootstrap: int = 2000, seed: int = 0) -> xr.Dataset:
    """Stack per-depth observables datasets (schema in the module docstring) along V.

    Returns the phase-diagram dataset (not yet written; see `aggregate`). Raises ValueError for no
    datasets, a dataset without a depth (`depth` attribute or a single V), duplicate depths, or
    grid coordinates that differ between depths.
    """
    datasets = list(observables_datasets)
    if not datasets:
        raise ValueError("no observables datasets to aggregate")
    depths = np.array([_depth_of(ds, i) for i, ds in enumerate(datasets)])
    order = np.argsort(depths, kind="stable")
    depths, datasets = depths[order], [datasets[i] for i in order]
    if np.any(np.diff(depths) == 0):
        raise ValueError(f"duplicate depths in the observables: {sorted(set(depths[1:][np.diff(depths) == 0]))}")
    n_v = len(depths)

    data_vars = {}
    for name in SCALAR_VARIABLES:
        if any(name in ds for ds in datasets):
            data_vars[name] = ("V", np.array([float(ds[name].values) if name in ds else np.nan for ds in datasets]))
    missing = [n for n in SCALAR_VARIABLES[:8] if n not in data_vars]
    if missing:
        warnings.warn(f"phase diagram without {missing}: no depth provides them", RuntimeWarning, stacklevel=2)
        for n in missing:
            data_vars[n] = ("V", np.full(n_v, np.nan))

    coords: dict = {"V": ("V", depths)}
    for dims, names in GRIDDED_VARIABLES.items():
        tmpl = _template(datasets, names)
        if tmpl is None:
            continue
        grid = {c: tmpl[c].values for c in _GRID_COORDS[dims]}
        for i, ds in enumerate(datasets):
            if any(n in ds for n in names):
                for c, ref in grid.items():
                    if c not in ds.coords or ds[c].shape != ref.shape or not np.allclose(ds[c].values, ref):
                        raise ValueError(f"depth V={depths[i]:g}: coordinate {c!r} differs from the other "
                                         "depths' (all depths of a sweep must share the grids)")
        for c in _GRID_COORDS[dims] + _EXTRA_COORDS.get(dims, ()):
            if c in tmpl.coords:
                coords[c] = (tmpl[c].dims, tmpl[c].values)
        for name in names:
            ref = next((ds[name] for ds in datasets if name in ds), None)
            if ref is None:
                continue
            stack = np.stack([ds[name].transpose(*dims).values if name in ds else np.full(ref.shape, np.nan)
                              for ds in datasets])
            data_vars[name] = (("V",) + dims, stack)

    attrs = _common_attrs(datasets)
    commits = sorted({str(ds.attrs["git_commit"]) for ds in datasets if "git_commit" in ds.attrs})
    if commits:
        attrs["source_git_commits"] = ",".join(commits)
    depth_meV = np.array([float(ds.attrs.get("depth_meV", np.nan)) for ds in datasets])
    e_m = float(attrs.get("energy_unit_meV", np.nan))
    if np.all(np.isfinite(depth_meV)):
        coords["V_meV"] = ("V", depth_meV)
    elif np.isfinite(e_m):
        coords["V_meV"] = ("V", depths * e_m)

    diagram = xr.Dataset(data_vars, coords=coords, attrs=attrs)

    if "structure_factor" in diagram or "structure_factor_uncorrected" in diagram:
        peak, peak_err = structure_factor_peak(diagram)
        diagram["structure_factor_peak"] = peak
        diagram["structure_factor_peak_stderr"] = peak_err
        diagram["structure_factor_peak"].attrs["source"] = (
            "structure_factor_uncorrected" if "structure_factor_uncorrected" in diagram else "structure_factor")
        if np.all(np.isnan(peak.values)):  # no K point (already warned) or no data at all
            sf = TransitionEstimate.undetermined()
        else:
            sf = estimate_transition(depths, peak.values, peak_err.values, mode="rise", n_bootstrap=n_bootstrap,
                                     seed=seed, name="transition_depth_structure_factor")
    else:
        warnings.warn("no structure factor in the observables: transition_depth_structure_factor is NaN",
                      RuntimeWarning, stacklevel=2)
        sf = TransitionEstimate.undetermined()
    inter = estimate_transition(depths, diagram["interaction_energy"].values,
                                diagram["interaction_energy_stderr"].values, mode="abs",
                                n_bootstrap=n_bootstrap, seed=seed, name="transition_depth_interaction")
    diff, diff_err, agree = transition_agreement(inter, sf)
    diagram["transition_depth_difference"] = ((), diff)
    diagram["transition_depth_difference_stderr"] = ((), diff_err)
    diagram["transition_depths_agree"] = ((), np.int8(agree))
    diagram["transition_depth_difference"].attrs.update(
        units="E_M", description="transition_depth_interaction − transition_depth_structure_factor; its stderr "
                                 "adds each estimate's bootstrap and grid resolution (interval width / √12)")
    diagram["transition_depths_agree"].attrs.update(
        description=f"1 when |difference| <= {AGREEMENT_SIGMAS:g} × its stderr, 0 otherwise or undetermined")
    diagram.attrs["transition_depths_agree"] = int(agree)
    for name, est in zip(TRANSITIONS, (inter, sf)):
        diagram[name] = ((), est.depth)
        diagram[f"{name}_stderr"] = ((), est.stderr)
        diagram[name].attrs.update({"interval": np.array(est.interval), "bootstrap_support": est.support,
                               "n_depths": est.n_depths, "n_bootstrap": int(n_bootstrap)})
        diagram.attrs[name] = est.depth
        diagram.attrs[f"{name}_stderr"] = est.stderr
        diagram.attrs[f"{name}_interval"] = np.array(est.interval)
    return diagram


#: HF energies (and the peak) that must be NaN where HF did not converge.
_HF_NAN_UNLESS_CONVERGED = ("hf_energy", "hf_kinetic_energy", "hf_potential_energy", "hf_interaction_energy",
                            "hf_structure_factor_peak", "hf_translation_order", "hf_translation_overlap",
                            "hf_momentum_x", "hf_momentum_y")


def merge_hartree_fock(diagram: xr.Dataset, hf: xr.Dataset, tol: float = 1e-6) -> xr.Dataset:
    """The phase diagram with the HF reference `hf` (schema: `qernel.reference`) added over V.

    Depths are matched by value (|ΔV| <= tol·max(1, |V|)); a diagram depth without an HF result
    gets NaN ("no Hartree–Fock result"), and so does every depth where hf_converged is 0. The
    reasons go to the attr ``nan_reason`` of hf_energy and to the global attr ``hf_status``, and
    are logged. k-resolved HF arrays are matched to the diagram's k vectors (NaN where absent);
    hf_density is added when its grid equals the diagram's. Returns a new dataset.
    """
    out = diagram.copy()
    v_dia = np.asarray(diagram["V"].values, float)
    v_hf = np.asarray(hf["V"].values, float)
    statuses = json.loads(hf.attrs["hf_status_json"]) if "hf_status_json" in hf.attrs else [None] * len(v_hf)
    idx = np.full(len(v_dia), -1)
    for i, v in enumerate(v_dia):
        hit = np.flatnonzero(np.abs(v_hf - v) <= tol * max(1.0, abs(v)))
        if hit.size:
            idx[i] = hit[0]
    take = np.where(idx >= 0, idx, 0)
    converged = np.where(idx >= 0, np.asarray(hf["hf_converged"].values)[take] if "hf_converged" in hf else 0, 0)
    status = []
    for i, v in enumerate(v_dia):
        if idx[i] < 0:
            status.append(f"V={v:g}: no Hartree–Fock result for this depth")
        else:
            status.append(statuses[idx[i]] or f"V={v:g}: {'converged' if converged[i] else 'not converged'}")
    for name in hf.data_vars:
        var = hf[name]
        if var.dims == ("V",):
            vals = np.asarray(var.values, float)[take]
            vals = np.where(idx >= 0, vals, np.nan)
            if name in _HF_NAN_UNLESS_CONVERGED:
                vals = np.where(converged == 1, vals, np.nan)
            if name == "hf_converged":
                vals = converged.astype(np.int8)
            out[name] = ("V", vals, dict(var.attrs))
        elif var.dims == ("V", "k"):
            if "k" not in diagram.dims:
                continue
            k_dia = np.stack([diagram["kx"].values, diagram["ky"].values], -1)
            k_hf = np.stack([hf["kx"].values, hf["ky"].values], -1)
            match = np.full(len(k_dia), -1)
            for j, kv in enumerate(k_dia):
                hit = np.flatnonzero(np.all(np.abs(k_hf - kv) <= 1e-6 * max(1.0, float(np.linalg.norm(kv))), -1))
                if hit.size:
                    match[j] = hit[0]
            vals = np.asarray(var.values, float)[take][:, np.where(match >= 0, match, 0)]
            vals[:, match < 0] = np.nan
            vals[(idx < 0) | (converged != 1)] = np.nan
            out[name] = (("V", "k"), vals, dict(var.attrs))
        elif var.dims == ("V", "x", "y"):
            if "x" in diagram.coords and not (diagram["x"].shape == hf["x"].shape and np.allclose(diagram["x"], hf["x"])
                                              and np.allclose(diagram["y"], hf["y"])):
                warnings.warn(f"{name}: the HF grid differs from the phase diagram's; left out", RuntimeWarning,
                              stacklevel=2)
                continue
            vals = np.asarray(var.values, float)[take]
            vals[(idx < 0) | (converged != 1)] = np.nan
            if "x" not in out.coords:
                out = out.assign_coords(x=("x", hf["x"].values), y=("y", hf["y"].values))
            out[name] = (("V", "x", "y"), vals, dict(var.attrs))
    bad = [st for st, c in zip(status, converged) if c != 1]
    if "hf_energy" in out:
        out["hf_energy"].attrs["nan_reason"] = "; ".join(bad) if bad else "none: HF converged at every depth"
    out.attrs["hf_status"] = "; ".join(status)
    for key, value in hf.attrs.items():
        if key.startswith("hf_") and key not in ("hf_status", "hf_status_json"):
            out.attrs[key] = value
    for st in bad:
        log.warning("Hartree–Fock reference is NaN at %s", st)
    return out


def aggregate(paths, out_path, attrs: dict | None = None, n_bootstrap: int = 2000, seed: int = 0,
              hartree_fock=None) -> xr.Dataset:
    """Read the per-depth observables.nc files, build the phase diagram, write it atomically.

    attrs: extra global attrs (e.g. `qernel.io.provenance_attrs(config, sweep)`), which win
    over those carried from the inputs. hartree_fock: path of the sweep's hartree_fock.nc
    (`qernel.reference`), merged by `merge_hartree_fock`; if it cannot be read, the hf_*
    variables are NaN with the reason (the VMC outputs are written regardless). Returns the
    dataset as written.
    """
    datasets = [qio.read_netcdf(Path(p)) for p in paths]
    diagram = build_phase_diagram(datasets, n_bootstrap=n_bootstrap, seed=seed)
    if hartree_fock is not None:
        try:
            hf = qio.read_netcdf(Path(hartree_fock))
        except (OSError, ValueError) as e:
            reason = f"Hartree–Fock file {str(hartree_fock)!r} unreadable: {e}"
            log.warning("%s; hf_* are NaN", reason)
            for name in ("hf_energy", "hf_interaction_energy", "hf_structure_factor_peak"):
                diagram[name] = ("V", np.full(diagram.sizes["V"], np.nan), {"nan_reason": reason})
            diagram.attrs["hf_status"] = reason
        else:
            diagram = merge_hartree_fock(diagram, hf)
    qio.write_netcdf(diagram, out_path, attrs)
    return qio.read_netcdf(out_path)
