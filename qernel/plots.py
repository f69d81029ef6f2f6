"""Publication figures of a sweep, drawn only from its netCDF files (DESIGN.md §4).

    plot_all(phase_diagram_path, train_path, out_dir) -> list[Path]   # PNG + PDF of every figure

Each figure also has its own public function that takes an ``xarray.Dataset`` and returns
the ``matplotlib.figure.Figure`` (nothing is drawn from in-memory training state, so
``qernel plot`` can redraw everything from the files alone):

* ``interaction_energy``: :func:`plot_interaction_energy`, E_int/N vs V and d(E_int/N)/dV, transition;
* ``energy_components``: :func:`plot_energy_components`, total, kinetic, moiré, interaction vs V;
* ``density``: :func:`plot_density`, n(r) on the moiré cell at up to 4 depths (+ supercell view);
* ``structure_factor``: :func:`plot_structure_factor`, S(k) maps and S(K) vs V, transition;
* ``training``: :func:`plot_training`, per-depth E and Var(E_L), learning rate, acceptance, MoE usage.

Units: depths V and energies in E_M (per electron); lengths in a_M; wave vectors in 1/a_M;
densities in electrons per a_M². Where the dataset knows E_M in meV (attribute
``energy_unit_meV``, or the coordinate ``V_meV``) the energy axes get a secondary meV axis.

Missing or NaN data never stops a figure: the affected depths or error bars are left out
and a :class:`PlotWarning` (a ``UserWarning``) names the variable.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import matplotlib as mpl
import numpy as np
import xarray as xr
from matplotlib import colors as mcolors
from matplotlib import ticker as mticker
from matplotlib.figure import Figure
from matplotlib.patches import Polygon

from qernel.lattice import MOIRE_LATTICE

__all__ = [
    "FIGURES",
    "HF_LABEL",
    "K_POINT_NORM",
    "PlotWarning",
    "build_parser",
    "interaction_derivative",
    "load_dataset",
    "main",
    "plot_all",
    "plot_density",
    "plot_energy_components",
    "plot_interaction_energy",
    "plot_structure_factor",
    "plot_training",
    "run",
    "save_figure",
    "select_depths",
    "structure_factor_peak",
    "transition_depth",
    "transition_interval",
]

#: File stems of the figures written by :func:`plot_all` (each as ``.png`` and ``.pdf``).
FIGURES = ("interaction_energy", "energy_components", "density", "structure_factor", "training")

#: |K| of the moiré Brillouin-zone corner, 4π/3 in 1/a_M: the ordering vector of the
#: √3×√3 (honeycomb at ν = 2/3) generalised Wigner crystal.
K_POINT_NORM = 4.0 * np.pi / 3.0

#: Okabe–Ito palette (colour-blind safe).
OKABE_ITO = {
    "black": "#000000",
    "orange": "#E69F00",
    "skyblue": "#56B4E9",
    "green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "purple": "#CC79A7",
}
_C_DATA = OKABE_ITO["blue"]
_C_TRANSITION = OKABE_ITO["vermillion"]
_C_TRANSITION_2 = OKABE_ITO["green"]
_DENSITY_CMAP = "viridis"
_SK_CMAP = "magma"
_DEPTH_CMAP = "viridis"
_USAGE_CMAP = "PuOr_r"

_FONT = 9
_RC = {
    "font.size": _FONT,
    "axes.labelsize": _FONT,
    "axes.titlesize": _FONT,
    "figure.titlesize": _FONT + 1,
    "xtick.labelsize": _FONT - 1,
    "ytick.labelsize": _FONT - 1,
    "legend.fontsize": _FONT - 1,
    "legend.frameon": False,
    "axes.linewidth": 0.8,
    "lines.linewidth": 1.4,
    "lines.markersize": 4.5,
    "errorbar.capsize": 2.0,
    "xtick.direction": "in",
    "ytick.direction": "in",
    "mathtext.fontset": "dejavusans",
    "axes.prop_cycle": mpl.cycler(color=list(OKABE_ITO.values())[1:] + ["#000000"]),
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "savefig.dpi": 200,
}

# Labels (mathtext). Units always in parentheses so that they are easy to find.
_EM = r"$E_M$"
_V_LABEL = r"moiré depth $V$ (" + _EM + ")"
_V_MEV_LABEL = r"$V$ (meV)"
_LENGTH = r"$a_M$"
_INV_LENGTH = r"$a_M^{-1}$"


class PlotWarning(UserWarning):
    """Data missing or NaN in a dataset being plotted (the figure is still drawn)."""


def _warn(message: str) -> None:
    warnings.warn(message, PlotWarning, stacklevel=3)


# --------------------------------------------------------------------------------------
# Reading datasets
# --------------------------------------------------------------------------------------


def load_dataset(path) -> xr.Dataset:
    """Read a netCDF file fully into memory (and close it)."""
    with xr.open_dataset(Path(path)) as ds:
        return ds.load()


def _prepare_phase_diagram(ds: xr.Dataset) -> xr.Dataset:
    if "V" not in ds.dims:
        raise ValueError("phase_diagram dataset has no dimension 'V'")
    if "V" not in ds.coords:
        raise ValueError("phase_diagram dataset has no coordinate 'V' (depths in E_M)")
    return ds.sortby("V")


def _scalar(ds: xr.Dataset, name: str) -> float | None:
    """A scalar stored as a 0-d variable or as an attribute (None if absent or not a number)."""
    value = None
    if name in ds.data_vars and ds[name].size == 1:
        value = ds[name].values.reshape(())
    elif name in ds.attrs:
        value = ds.attrs[name]
    if value is None:
        return None
    try:
        value = float(np.asarray(value).reshape(-1)[0])
    except (TypeError, ValueError, IndexError):
        return None
    return value


def _energy_unit_meV(ds: xr.Dataset) -> float | None:
    """E_M in meV, or None where unknown (attr NaN/absent and no usable V_meV coordinate)."""
    e = _scalar(ds, "energy_unit_meV")
    if e is not None and np.isfinite(e) and e > 0:
        return e
    if "V_meV" in ds.variables and "V" in ds.coords:
        v = np.asarray(ds["V"].values, dtype=float)
        vm = np.asarray(ds["V_meV"].values, dtype=float)
        ok = np.isfinite(v) & np.isfinite(vm) & (np.abs(v) > 1e-12)
        if ok.any():
            ratio = vm[ok] / v[ok]
            if np.allclose(ratio, ratio[0], rtol=1e-6) and ratio[0] > 0:
                return float(ratio[0])
    return None


def _depth_text(v: float, e_meV: float | None) -> str:
    text = f"$V = {v:.3g}$ " + _EM
    if e_meV is not None:
        text += f" ({v * e_meV:.3g} meV)"
    return text


def _series(ds: xr.Dataset, name: str, stderr_name: str | None = None, warn_nan: bool = True):
    """(V, y, yerr) of the 1-D variable ``name`` over V, NaN depths dropped (with warnings).

    ``yerr`` is None where no stderr variable exists; NaN stderr entries become 0 (no bar).
    Returns None (after a warning) when ``name`` is absent. ``warn_nan=False`` leaves the
    warning about NaN values of ``name`` to the caller (already given).
    """
    if name not in ds.data_vars:
        _warn(f"phase_diagram: variable '{name}' is missing; it is not plotted")
        return None
    da = ds[name]
    if da.dims != ("V",):
        da = da.squeeze()
        if da.dims != ("V",):
            _warn(f"phase_diagram: variable '{name}' has dims {da.dims}, expected ('V',); not plotted")
            return None
    v = np.asarray(ds["V"].values, dtype=float)
    y = np.asarray(da.values, dtype=float)
    stderr_name = stderr_name or f"{name}_stderr"
    if stderr_name in ds.data_vars:
        err = np.asarray(ds[stderr_name].values, dtype=float).reshape(-1)
    else:
        _warn(f"phase_diagram: variable '{stderr_name}' is missing; '{name}' is plotted without error bars")
        err = None
    bad = ~np.isfinite(y)
    if bad.any() and warn_nan:
        _warn(
            f"phase_diagram: variable '{name}' is NaN at V = {_fmt_list(v[bad])} E_M; "
            "those depths are left out"
        )
    keep = ~bad
    if err is not None:
        bad_err = ~np.isfinite(err) & keep
        if bad_err.any():
            _warn(
                f"phase_diagram: variable '{stderr_name}' is NaN at V = {_fmt_list(v[bad_err])} E_M; "
                "those points are plotted without error bars"
            )
        err = np.where(np.isfinite(err), err, 0.0)[keep]
    return v[keep], y[keep], err


def _fmt_list(values) -> str:
    return ", ".join(f"{x:.4g}" for x in np.asarray(values).ravel())


def _fmt_pm(value: float, err: float | None) -> str:
    """'4.31 ± 0.35' with the precision set by two significant digits of the error."""
    if err is None or not np.isfinite(err) or err <= 0:
        return f"{value:.3g}"
    digits = max(0, 1 - int(math.floor(math.log10(err))))
    return f"{value:.{digits}f} \\pm {err:.{digits}f}"


def transition_depth(ds: xr.Dataset, which: str = "interaction"):
    """The transition depth estimate ``(V_c, stderr)`` in E_M stored in the dataset.

    ``which`` is ``"interaction"`` or ``"structure_factor"``: the variable or attribute
    ``transition_depth_{which}`` and its ``_stderr``. Returns ``(None, None)`` if absent;
    a missing or NaN stderr is returned as None.
    """
    vc = _scalar(ds, f"transition_depth_{which}")
    if vc is None or not np.isfinite(vc):
        return None, None
    err = _scalar(ds, f"transition_depth_{which}_stderr")
    if err is None or not np.isfinite(err):
        err = None
    return vc, err


def transition_interval(ds: xr.Dataset, which: str = "interaction"):
    """The depth-grid interval ``(V_i, V_{i+1})`` (E_M) holding the transition, or None.

    Read from the attribute ``interval`` of the variable ``transition_depth_{which}`` or the
    global attribute ``transition_depth_{which}_interval`` (as `qernel.aggregate` writes them):
    the systematic uncertainty from the grid resolution, separate from the stderr.
    """
    name = f"transition_depth_{which}"
    raw = ds[name].attrs.get("interval") if name in ds.variables else None
    if raw is None:
        raw = ds.attrs.get(f"{name}_interval")
    if raw is None:
        return None
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return None
    try:
        lo, hi = (float(x) for x in np.asarray(raw, dtype=float).ravel())
    except (TypeError, ValueError):
        return None
    if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
        return None
    return lo, hi


def interaction_derivative(v, e, err=None):
    """Finite-difference derivative dE/dV between neighbouring depths.

    ``v`` (n,) sorted depths, ``e`` (n,) energies, ``err`` (n,) standard errors or None.
    Returns ``(v_mid, dE/dV, stderr)`` at the n-1 midpoints; the stderr propagates the two
    independent errors, sqrt(σ_i² + σ_{i+1}²)/ΔV (None if ``err`` is None).
    """
    v = np.asarray(v, dtype=float)
    e = np.asarray(e, dtype=float)
    dv = np.diff(v)
    mid = 0.5 * (v[1:] + v[:-1])
    deriv = np.diff(e) / dv
    if err is None:
        return mid, deriv, None
    err = np.asarray(err, dtype=float)
    return mid, deriv, np.sqrt(err[1:] ** 2 + err[:-1] ** 2) / dv


def _transition_interaction(ds: xr.Dataset, v, e):
    """V_c from the dataset; else the midpoint with the largest |dE_int/dV| (± half a step)."""
    vc, err = transition_depth(ds, "interaction")
    if vc is not None:
        if err is None:
            _warn("phase_diagram: 'transition_depth_interaction_stderr' is missing or NaN; no uncertainty band drawn")
        return vc, err, "dataset"
    if len(v) < 2:
        _warn("phase_diagram: 'transition_depth_interaction' is missing and fewer than 2 depths; no transition drawn")
        return None, None, None
    mid, deriv, _ = interaction_derivative(v, e)
    i = int(np.argmax(np.abs(deriv)))
    _warn(
        "phase_diagram: 'transition_depth_interaction' is missing; estimated here as the largest "
        "|dE_int/dV| on the depth grid (± half the grid step)"
    )
    return float(mid[i]), float(0.5 * (v[i + 1] - v[i])), "estimated"


# --------------------------------------------------------------------------------------
# Small drawing helpers
# --------------------------------------------------------------------------------------


def _new_figure(figsize) -> Figure:
    fig = Figure(figsize=figsize, layout="constrained")
    fig.get_layout_engine().set(w_pad=0.03, h_pad=0.03, hspace=0.04, wspace=0.04)
    return fig


def _finish(fig: Figure) -> Figure:
    """Fix tick styling on every axes (also the ones created lazily at draw time)."""
    for ax in fig.axes:
        for a in [ax, *ax.child_axes]:
            a.tick_params(labelsize=_FONT - 1, direction="in", which="both")
    return fig


def _meV_xaxis(ax, e_meV: float | None, label: str = _V_MEV_LABEL):
    if e_meV is None:
        return None
    sec = ax.secondary_xaxis("top", functions=(lambda x: x * e_meV, lambda x: x / e_meV))
    sec.set_xlabel(label)
    return sec


def _meV_yaxis(ax, e_meV: float | None, label: str):
    if e_meV is None:
        return None
    sec = ax.secondary_yaxis("right", functions=(lambda y: y * e_meV, lambda y: y / e_meV))
    sec.set_ylabel(label)
    return sec


def _mark_transition(ax, vc, err, color=_C_TRANSITION, label=None, linestyle="--", interval=None,
                     interval_label=None):
    """V_c as a vertical line, ±stderr as a shaded band, the grid interval (if any) hatched."""
    if vc is None:
        return
    if interval is not None:
        ax.axvspan(*interval, facecolor="none", edgecolor=color, hatch="////", lw=0, alpha=0.45, zorder=0,
                   label=interval_label)
    if err is not None and err > 0:
        ax.axvspan(vc - err, vc + err, color=color, alpha=0.15, lw=0, zorder=0)
    ax.axvline(vc, color=color, ls=linestyle, lw=1.2, label=label, zorder=1)


def _transition_label(name: str, vc, err, e_meV, source=None) -> str:
    text = f"${name} = {_fmt_pm(vc, err)}$ " + _EM
    if e_meV is not None:
        text += f" (${_fmt_pm(vc * e_meV, None if err is None else err * e_meV)}$ meV)"
    if source == "estimated":
        text += "\n(largest slope on the grid)"
    return text


def _with_sem(label: str, err) -> str:
    """``label`` + ' (±1 s.e.)' when error bars are actually drawn."""
    if err is not None and np.any(np.asarray(err) > 0):
        return label + " (±1 s.e.)"
    return label + " (no error bars)"


def _errorbar(ax, v, y, err, **kwargs):
    style = dict(fmt="o-", color=_C_DATA, ms=4, lw=1.2, elinewidth=1.0, capsize=2.0, mec="white", mew=0.5)
    style.update(kwargs)
    return ax.errorbar(v, y, yerr=err, **style)


#: Label and style of the Hartree–Fock reference drawn beside VMC.
HF_LABEL = "Hartree–Fock"
_HF_STYLE = dict(ls="--", marker="D", ms=3.5, lw=1.0, mfc="none", color=OKABE_ITO["black"], zorder=2.2)


def _draw_hartree_fock(ax, ds: xr.Dataset, name: str, label: str | None = HF_LABEL, warn: bool = True) -> bool:
    """Draw the HF reference ``name`` (over V) as a dashed line with open diamonds where it is
    finite. Absent: nothing (files from before the HF stage). NaN at some depths: a PlotWarning
    naming them (with the reason recorded by the aggregate, if any). Returns whether drawn."""
    if name not in ds.data_vars or ds[name].dims != ("V",):
        return False
    v = np.asarray(ds["V"].values, float)
    y = np.asarray(ds[name].values, float)
    ok = np.isfinite(y)
    if (~ok).any() and warn:
        reason = ds["hf_energy"].attrs.get("nan_reason") if "hf_energy" in ds.data_vars else None
        _warn(f"phase_diagram: '{name}' is NaN at V = {_fmt_list(v[~ok])} E_M (Hartree–Fock"
              + (f": {reason}" if reason else " did not converge") + "); those depths are left out")
    if not ok.any():
        return False
    ax.plot(v[ok], y[ok], label=label, **_HF_STYLE)
    return True


def _figure_legend(fig: Figure, *axes, ncols: int = 1):
    """One legend below the panels (never on top of data)."""
    handles, labels = [], []
    for ax in axes:
        h, lab = ax.get_legend_handles_labels()
        handles += h
        labels += lab
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=ncols)


def _empty_panel(ax, text: str):
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4", fontsize=_FONT - 1)


# --------------------------------------------------------------------------------------
# Figure 1: interaction energy and its derivative
# --------------------------------------------------------------------------------------


def plot_interaction_energy(ds: xr.Dataset) -> Figure:
    """E_int per electron vs V (error bars), d(E_int/N)/dV below, the transition marked.

    Axes: ``fig.axes == [top, bottom]`` (the meV axes are child axes of ``top``). Raises
    ValueError when `ds` has no dimension or coordinate V.
    """
    with mpl.rc_context(_RC):
        ds = _prepare_phase_diagram(ds)
        e_meV = _energy_unit_meV(ds)
        fig = _new_figure((4.6, 5.0))
        ax_e, ax_d = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1.35, 1.0]})
        ax_e.set_ylabel(r"interaction energy $E_\mathrm{int}/N$ (" + _EM + ")")
        ax_d.set_ylabel(r"$\mathrm{d}(E_\mathrm{int}/N)/\mathrm{d}V$ (dimensionless)")
        ax_d.set_xlabel(_V_LABEL)
        _meV_xaxis(ax_e, e_meV)
        _meV_yaxis(ax_e, e_meV, r"$E_\mathrm{int}/N$ (meV)")
        series = _series(ds, "interaction_energy")
        if series is None or len(series[0]) == 0:
            _empty_panel(ax_e, "interaction_energy not available")
            _empty_panel(ax_d, "no derivative")
            return _finish(fig)
        v, e, err = series
        vc, vc_err, source = _transition_interaction(ds, v, e)
        label = None if vc is None else _transition_label("V_c", vc, vc_err, e_meV, source)
        interval = transition_interval(ds, "interaction") if source == "dataset" else None
        for ax in (ax_e, ax_d):
            _mark_transition(ax, vc, vc_err, label=label if ax is ax_e else None, interval=interval,
                             interval_label=None if interval is None or ax is ax_d else
                             f"depth-grid interval [{interval[0]:.3g}, {interval[1]:.3g}] " + _EM)
        _errorbar(ax_e, v, e, err, label=_with_sem("VMC", err))
        _draw_hartree_fock(ax_e, ds, "hf_interaction_energy")
        if len(v) >= 2:
            mid, deriv, derr = interaction_derivative(v, e, err)
            _errorbar(ax_d, mid, deriv, derr, fmt="s-", color=OKABE_ITO["black"], ms=3.5,
                      label="finite difference")
            ax_d.axhline(0.0, color="0.6", lw=0.7, zorder=0)
        else:
            _empty_panel(ax_d, "fewer than 2 depths: no derivative")
        ax_e.label_outer()
        _figure_legend(fig, ax_e)
        return _finish(fig)


# --------------------------------------------------------------------------------------
# Figure 2: energy components
# --------------------------------------------------------------------------------------

_COMPONENTS = (
    ("energy", "total", r"$E/N$", OKABE_ITO["black"]),
    ("kinetic_energy", "kinetic", r"$E_\mathrm{kin}/N$", OKABE_ITO["blue"]),
    ("potential_energy", "moiré potential", r"$E_\mathrm{pot}/N$", OKABE_ITO["green"]),
    ("interaction_energy", "interaction", r"$E_\mathrm{int}/N$", OKABE_ITO["vermillion"]),
)


def plot_energy_components(ds: xr.Dataset) -> Figure:
    """Total, kinetic, moiré-potential and interaction energy per electron vs V (2×2 panels).

    Each panel has its own y range (the components differ by orders of magnitude) and
    shows the transition band; ``fig.axes`` holds the four panels in that order. Raises
    ValueError when `ds` has no dimension or coordinate V.
    """
    with mpl.rc_context(_RC):
        ds = _prepare_phase_diagram(ds)
        e_meV = _energy_unit_meV(ds)
        vc, vc_err = transition_depth(ds, "interaction")
        fig = _new_figure((7.0, 5.2))
        axes = fig.subplots(2, 2, sharex=True).ravel()
        for k, (ax, (name, label, symbol, color)) in enumerate(zip(axes, _COMPONENTS)):
            ax.set_ylabel(f"{label} {symbol} (" + _EM + ")")
            if k >= 2:
                ax.set_xlabel(_V_LABEL)
            else:
                _meV_xaxis(ax, e_meV)
            _meV_yaxis(ax, e_meV, f"{symbol} (meV)")
            _mark_transition(ax, vc, vc_err, label=None)
            series = _series(ds, name)
            if series is None or len(series[0]) == 0:
                _empty_panel(ax, f"{name} not available")
                continue
            v, y, err = series
            _errorbar(ax, v, y, err, color=color)
            _draw_hartree_fock(ax, ds, "hf_" + name, label=HF_LABEL if k == 0 else None, warn=k == 0)
        if vc is not None:
            axes[0].plot([], [], color=_C_TRANSITION, ls="--",
                         label=_transition_label("V_c", vc, vc_err, e_meV) + r" from $E_\mathrm{int}$")
        axes[0].plot([], [], "o", color="0.3", label="VMC, per electron (error bars ±1 s.e.)")
        _figure_legend(fig, axes[0], ncols=2)
        return _finish(fig)


# --------------------------------------------------------------------------------------
# Figure 3: density maps
# --------------------------------------------------------------------------------------


def select_depths(v, vc=None, n: int = 4) -> np.ndarray:
    """Up to ``n`` depths from sorted ``v``: the shallowest, the deepest and those around ``vc``.

    With a transition depth ``vc`` the two middle picks are the grid depths just below and
    just above it (replaced by their nearest unused neighbours when they coincide with the
    ends); without one, the picks are spread evenly over the grid.
    """
    v = np.unique(np.asarray(v, dtype=float))
    if len(v) <= n:
        return v
    if n < 3 or vc is None or not np.isfinite(vc):
        return v[np.unique(np.round(np.linspace(0, len(v) - 1, n)).astype(int))]
    chosen = {0, len(v) - 1}
    below = int(np.searchsorted(v, vc, side="right")) - 1  # last index with v <= vc
    order = sorted(range(len(v)), key=lambda i: (abs(v[i] - vc), i))
    # the grid depth just below and just above vc first, then the next nearest
    preferred = [i for i in (below, below + 1) if 0 <= i < len(v)] + order
    for i in preferred:
        if len(chosen) >= n:
            break
        chosen.add(i)
    return v[sorted(chosen)]


#: Names of the supercell density, first match wins (the aggregate writes ``supercell_density``).
SUPERCELL_DENSITY_NAMES = ("density_supercell", "supercell_density")


def _supercell_density_name(ds: xr.Dataset) -> str | None:
    return next((n for n in SUPERCELL_DENSITY_NAMES if n in ds.data_vars), None)


def _find_key(obj, key: str, depth: int = 0):
    """The first value stored under ``key`` in nested dicts/lists (breadth before depth)."""
    if depth > 6:
        return None
    if isinstance(obj, dict):
        if key in obj:
            return obj[key]
        children = list(obj.values())
    elif isinstance(obj, list):
        children = obj
    else:
        return None
    for child in children:
        found = _find_key(child, key, depth + 1)
        if found is not None:
            return found
    return None


def _supercell_matrix(ds: xr.Dataset) -> np.ndarray | None:
    """The integer supercell matrix S (2, 2) from attrs, a variable or the config attr, or None."""
    candidates = []
    name = _supercell_density_name(ds)
    if name is not None:
        candidates.append(ds[name].attrs.get("supercell"))
    for key in ("supercell", "supercell_matrix"):
        candidates.append(ds.attrs.get(key))
        if key in ds.data_vars:
            candidates.append(ds[key].values)
    for key in ("system", "config", "system_config"):
        raw = ds.attrs.get(key)
        if isinstance(raw, str):
            try:
                cfg = json.loads(raw)
            except ValueError:
                continue
            candidates.append(_find_key(cfg, "supercell"))
    for c in candidates:
        if c is None:
            continue
        if isinstance(c, str):
            try:
                c = json.loads(c)
            except ValueError:
                try:
                    c = ast.literal_eval(c)
                except (ValueError, SyntaxError):
                    continue
        try:
            s = np.asarray(c, dtype=float)
        except (TypeError, ValueError):
            continue
        if s.size == 4:
            s = s.reshape(2, 2)
            if np.allclose(s, np.round(s)) and abs(np.linalg.det(s)) > 0.5:
                return np.round(s).astype(int)
    return None


def _frac_grid(da: xr.DataArray, dim: str) -> np.ndarray:
    n = da.sizes[dim]
    if dim in da.coords:
        return np.asarray(da[dim].values, dtype=float)
    return np.arange(n) / n


def _periodic_interp(fx, fy, values, u, w):
    """Bilinear interpolation of a periodic map given on the sorted fractional grid (fx, fy).

    ``values`` (len(fx), len(fy)); ``u``, ``w`` fractional coordinates of any shape (any
    value: they are wrapped into the cell).
    """
    vals = np.pad(np.asarray(values, float), ((0, 1), (0, 1)), mode="wrap")
    out_idx = []
    for grid, t in ((fx, u), (fy, w)):
        ext = np.append(grid, grid[0] + 1.0)
        t = np.mod(t - grid[0], 1.0) + grid[0]
        i = np.clip(np.searchsorted(ext, t, side="right") - 1, 0, len(grid) - 1)
        frac = (t - ext[i]) / (ext[i + 1] - ext[i])
        out_idx.append((i, frac))
    (i, a), (j, b) = out_idx
    return ((1 - a) * (1 - b) * vals[i, j] + a * (1 - b) * vals[i + 1, j]
            + (1 - a) * b * vals[i, j + 1] + a * b * vals[i + 1, j + 1])


def _periodic_map(ax, fx, fy, values, lattice, window, norm, cmap, pixels: int = 360):
    """Draw a periodic map, given on the fractional grid (fx, fy) of ``lattice`` (rows a1, a2),
    as an image over the Cartesian ``window`` ((x0, x1), (y0, y1)) in a_M.

    The map is sampled on a Cartesian pixel grid (bilinear, periodic), so the picture is the
    true periodic continuation whatever the cell shape.
    """
    (x0, x1), (y0, y1) = window
    nx = pixels
    ny = max(2, int(round(pixels * (y1 - y0) / (x1 - x0))))
    xs = x0 + (np.arange(nx) + 0.5) * (x1 - x0) / nx
    ys = y0 + (np.arange(ny) + 0.5) * (y1 - y0) / ny
    cart = np.stack(np.meshgrid(xs, ys, indexing="xy"), -1)  # (ny, nx, 2)
    frac = cart @ np.linalg.inv(lattice)
    img = _periodic_interp(np.asarray(fx, float), np.asarray(fy, float), values, frac[..., 0], frac[..., 1])
    image = ax.imshow(img, origin="lower", extent=(x0, x1, y0, y1), norm=norm, cmap=cmap,
                      interpolation="bilinear", aspect="equal")
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    return image


def _lattice_sites(window, margin=0.05):
    (x0, x1), (y0, y1) = window
    frac = np.array([[x0, y0], [x0, y1], [x1, y0], [x1, y1]]) @ np.linalg.inv(MOIRE_LATTICE)
    lo = np.floor(frac.min(axis=0)).astype(int) - 1
    hi = np.ceil(frac.max(axis=0)).astype(int) + 1
    n1, n2 = np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1), indexing="ij")
    pts = np.stack([n1.ravel(), n2.ravel()], -1) @ MOIRE_LATTICE
    inside = ((pts[:, 0] >= x0 - margin) & (pts[:, 0] <= x1 + margin)
              & (pts[:, 1] >= y0 - margin) & (pts[:, 1] <= y1 + margin))
    return pts[inside]


def _draw_sites_and_cell(ax, window, cell):
    sites = _lattice_sites(window)
    ax.scatter(sites[:, 0], sites[:, 1], s=16, facecolors="none", edgecolors="white", linewidths=0.8, zorder=3,
               label="moiré lattice sites")
    corners = np.array([[0.0, 0.0], cell[0], cell[0] + cell[1], cell[1]])
    ax.add_patch(Polygon(corners, closed=True, fill=False, ec="white", lw=0.9, ls="--", zorder=4))


def _window_around(cell, margin):
    corners = np.array([[0.0, 0.0], cell[0], cell[0] + cell[1], cell[1]])
    lo = corners.min(axis=0) - margin
    hi = corners.max(axis=0) + margin
    return (lo[0], hi[0]), (lo[1], hi[1])


def _valid_rows(ds, name, dims):
    """Depth values whose map ``name`` is finite everywhere; warn about the others."""
    da = ds[name].transpose("V", *dims)
    v = np.asarray(ds["V"].values, dtype=float)
    finite = np.isfinite(da.values).reshape(len(v), -1)
    good = finite.all(axis=1)
    if (~good).any():
        _warn(f"phase_diagram: variable '{name}' is NaN at V = {_fmt_list(v[~good])} E_M; those depths are left out")
    return da, v[good]


def plot_density(ds: xr.Dataset, depths: Sequence[float] | None = None) -> Figure:
    """Density n(r) on the moiré unit cell at up to 4 depths (+ supercell view), one colour scale.

    The maps are drawn in Cartesian coordinates (a_M): the unit-cell map is tiled over the
    neighbouring cells, with the unit cell outlined (dashed) and the moiré lattice sites
    R = n1 a1 + n2 a2 drawn as open circles. When ``density_supercell`` (or
    ``supercell_density``) and the supercell matrix exist, a second row shows the full
    supercell at the shallowest and deepest depths.
    ``fig.axes``: the unit-cell panels, then the supercell panels, then the colourbar.
    Raises ValueError when `ds` has no dimension or coordinate V, KeyError when it has no
    ``density``.
    """
    with mpl.rc_context(_RC):
        ds = _prepare_phase_diagram(ds)
        e_meV = _energy_unit_meV(ds)
        if "density" not in ds.data_vars:
            raise KeyError("phase_diagram: variable 'density' is missing")
        da, v_ok = _valid_rows(ds, "density", ("x", "y"))
        vc, _ = transition_depth(ds, "interaction")
        if vc is None:
            vc, _ = transition_depth(ds, "structure_factor")
        picks = np.asarray(depths, dtype=float) if depths is not None else select_depths(v_ok, vc, 4)
        fx, fy = _frac_grid(da, "x"), _frac_grid(da, "y")

        super_da, super_picks, s_matrix = None, [], None
        super_name = _supercell_density_name(ds)
        if super_name is not None:
            s_matrix = _supercell_matrix(ds)
            if s_matrix is None:
                _warn(f"phase_diagram: '{super_name}' exists but no supercell matrix (attribute 'supercell' "
                      "or the config's system.supercell) was found; supercell view left out")
            else:
                super_da, sv_ok = _valid_rows(ds, super_name, ("sx", "sy"))
                if len(sv_ok):
                    super_picks = list(np.unique([sv_ok[0], sv_ok[-1]]))

        maps = [da.sel(V=v, method="nearest").values for v in picks]
        super_maps = [super_da.sel(V=v).values for v in super_picks]
        allvals = np.concatenate([m.ravel() for m in maps + super_maps]) if (maps or super_maps) else np.array([1.0])
        vmax = float(np.nanmax(allvals)) if np.isfinite(allvals).any() else 1.0
        vmin = min(0.0, float(np.nanmin(allvals))) if np.isfinite(allvals).any() else 0.0
        norm = mcolors.Normalize(vmin=vmin, vmax=vmax)

        n_top = max(len(picks), 1)
        has_super = len(super_maps) > 0
        fig = _new_figure((7.2, 2.25 + (2.55 if has_super else 0.0)))
        if has_super:
            gs = fig.add_gridspec(2, 2 * n_top, height_ratios=[1.0, 1.45])
        else:
            gs = fig.add_gridspec(1, 2 * n_top)
        top_axes = [fig.add_subplot(gs[0, 2 * i: 2 * i + 2]) for i in range(n_top)]

        cell = MOIRE_LATTICE
        centre = 0.5 * (cell[0] + cell[1])
        window = ((centre[0] - 1.0, centre[0] + 1.0), (centre[1] - 0.85, centre[1] + 0.85))
        mesh = None
        for k, ax in enumerate(top_axes):
            ax.set_xlabel(r"$x$ (" + _LENGTH + ")")
            if k == 0:
                ax.set_ylabel(r"$y$ (" + _LENGTH + ")")
            if k >= len(maps):
                _empty_panel(ax, "no finite density")
                continue
            mesh = _periodic_map(ax, fx, fy, maps[k], cell, window, norm, _DENSITY_CMAP)
            _draw_sites_and_cell(ax, window, cell)
            ax.set_title(_depth_text(picks[k], e_meV))
        super_axes = []
        if has_super:
            half = n_top  # two panels, each spanning half the width
            super_cell = s_matrix @ MOIRE_LATTICE
            s_window = _window_around(super_cell, 0.3)
            sx, sy = _frac_grid(super_da, "sx"), _frac_grid(super_da, "sy")
            for k, (v, m) in enumerate(zip(super_picks, super_maps)):
                ax = fig.add_subplot(gs[1, k * half: (k + 1) * half])
                super_axes.append(ax)
                mesh = _periodic_map(ax, sx, sy, m, super_cell, s_window, norm, _DENSITY_CMAP)
                _draw_sites_and_cell(ax, s_window, super_cell)
                label = "shallowest" if k == 0 else "deepest"
                s_txt = "×".join(str(abs(int(s_matrix[i, i]))) for i in range(2)) if np.count_nonzero(
                    s_matrix - np.diag(np.diag(s_matrix))) == 0 else str(s_matrix.tolist())
                ax.set_title(f"supercell {s_txt}, {label}: " + _depth_text(v, e_meV))
                ax.set_xlabel(r"$x$ (" + _LENGTH + ")")
                if k == 0:
                    ax.set_ylabel(r"$y$ (" + _LENGTH + ")")
        if mesh is None:
            mesh = mpl.cm.ScalarMappable(norm=norm, cmap=_DENSITY_CMAP)
        cbar = fig.colorbar(mesh, ax=top_axes + super_axes, shrink=0.9 if has_super else 1.0, pad=0.02)
        cbar.set_label(r"density $n(\mathbf{r})$ (electrons / " + _LENGTH + r"$^2$)")
        if len(maps):
            nu = float(np.mean(maps[0]) * abs(np.linalg.det(cell)))
            fig.suptitle(
                rf"Density $n(\mathbf{{r}})$ ($\int_\mathrm{{cell}} n\,\mathrm{{d}}^2r = {nu:.3g}$ per moiré cell);"
                " circles: moiré lattice sites; dashed: unit cell / supercell"
            )
        return _finish(fig)


# --------------------------------------------------------------------------------------
# Figure 4: structure factor
# --------------------------------------------------------------------------------------


def _k_vectors(ds: xr.Dataset) -> np.ndarray:
    for name in ("kx", "ky"):
        if name not in ds.variables:
            raise KeyError(f"phase_diagram: coordinate '{name}' of structure_factor is missing")
    return np.stack([np.asarray(ds["kx"].values, float), np.asarray(ds["ky"].values, float)], -1)


def _sk_name(ds: xr.Dataset) -> str | None:
    """The S(k) variable to show: ``structure_factor_uncorrected`` (⟨|ρ_k|²⟩/N, keeps the Bragg
    part of a pinned crystal; what the aggregate's peak uses) if present, else ``structure_factor``."""
    return next((n for n in ("structure_factor_uncorrected", "structure_factor") if n in ds.data_vars), None)


def _k_point_mask(k: np.ndarray):
    """(mask, |k| used): the k with |k| closest to |K| = 4π/3 (within 0.1 %)."""
    knorm = np.linalg.norm(k, axis=-1)
    dev = np.abs(knorm - K_POINT_NORM)
    return dev <= dev.min() + 1e-3 * K_POINT_NORM, knorm


def _moire_g_mask(k: np.ndarray, tol: float = 1e-6) -> np.ndarray:
    """True for the k that are moiré reciprocal lattice vectors G (their S holds the Bragg peaks
    of the moiré-periodic density, present at every depth)."""
    f = np.asarray(k, float) @ MOIRE_LATTICE.T / (2.0 * np.pi)
    return np.all(np.abs(f - np.round(f)) < tol, axis=-1) & (np.linalg.norm(k, axis=-1) > 1e-9)


def structure_factor_peak(ds: xr.Dataset):
    """S at the ordering vector K vs V: ``(peak, stderr)`` as DataArrays over V.

    Uses ``structure_factor_peak`` (+ ``_stderr``) when stored (the aggregate writes them);
    otherwise averages the S(k) of :func:`_sk_name` over the k-points whose |k| is closest to
    |K| = 4π/3 (the moiré Brillouin-zone corners), as the aggregate does: the stderr is the
    mean of their stderrs (S(k) = S(−k) and the C3 partners are correlated), NaN if unknown.
    Raises KeyError when neither the peak nor S(k) is stored, or S(k) lacks ``kx``/``ky``.
    """
    if "structure_factor_peak" in ds.data_vars:
        peak = ds["structure_factor_peak"]
        if "structure_factor_peak_stderr" in ds.data_vars:
            err = ds["structure_factor_peak_stderr"]
        else:
            err = xr.full_like(peak, np.nan)
        return peak, err
    name = _sk_name(ds)
    if name is None:
        raise KeyError("phase_diagram: variables 'structure_factor' and 'structure_factor_peak' are missing")
    k = _k_vectors(ds)
    sel, knorm = _k_point_mask(k)
    if np.abs(knorm[sel][0] - K_POINT_NORM) > 0.05 * K_POINT_NORM:
        _warn(f"phase_diagram: no k-point at |K| = 4π/3; '{name}' peak taken at |k| = {knorm[sel][0]:.4g}")
    idx = np.flatnonzero(sel)
    peak = ds[name].isel(k=idx).mean("k")
    if f"{name}_stderr" in ds.data_vars:
        err = ds[f"{name}_stderr"].isel(k=idx).mean("k")
    else:
        err = xr.full_like(peak, np.nan)
    peak.attrs.update({"n_k": int(sel.sum()), "source": name})
    return peak, err


def _bz_hexagon():
    angles = np.deg2rad(np.arange(0, 361, 60))
    return K_POINT_NORM * np.stack([np.cos(angles), np.sin(angles)], -1)


def plot_structure_factor(ds: xr.Dataset, depths: Sequence[float] | None = None) -> Figure:
    """S(k) in the k-plane at up to 4 depths (top row) and S(K) vs V (bottom, with V_c).

    The maps show ``structure_factor_uncorrected`` where present (the quantity whose K-point
    mean is the stored peak), else ``structure_factor``; k = 0 is left out. The colour scale
    is set by the k that are not moiré reciprocal vectors G: the Bragg peaks of the
    moiré-periodic density at G (ringed) may saturate it. ``fig.axes``: the k-plane panels,
    the S(K)-vs-V panel, then the colourbar. Raises ValueError when `ds` has no dimension or
    coordinate V, KeyError when S(k) lacks ``kx``/``ky``.
    """
    with mpl.rc_context(_RC):
        ds = _prepare_phase_diagram(ds)
        e_meV = _energy_unit_meV(ds)
        sk_name = _sk_name(ds)
        has_sk = sk_name is not None
        if has_sk:
            sk, v_ok = _valid_rows(ds, sk_name, ("k",))
            k = _k_vectors(ds)
        else:
            _warn("phase_diagram: variable 'structure_factor' is missing; no S(k) maps")
            v_ok = np.array([])
        vc_s, vc_s_err = transition_depth(ds, "structure_factor")
        vc_i, vc_i_err = transition_depth(ds, "interaction")
        picks = np.asarray(depths, float) if depths is not None else select_depths(
            v_ok, vc_s if vc_s is not None else vc_i, 4)

        n_top = max(len(picks), 1)
        fig = _new_figure((7.2, 5.4))
        gs = fig.add_gridspec(2, n_top, height_ratios=[1.0, 1.1])
        top_axes = [fig.add_subplot(gs[0, i]) for i in range(n_top)]
        ax_p = fig.add_subplot(gs[1, :])

        scat, extend = None, "neither"
        if has_sk and len(picks):
            knorm = np.linalg.norm(k, axis=-1)
            nonzero = knorm > 1e-8
            bragg = _moire_g_mask(k)
            rows = [sk.sel(V=v, method="nearest").values for v in picks]
            scale_k = nonzero & ~bragg if (nonzero & ~bragg).any() else nonzero
            vals = np.concatenate([r[scale_k] for r in rows])
            norm = mcolors.Normalize(vmin=min(0.0, float(np.nanmin(vals))), vmax=float(np.nanmax(vals)))
            if max(float(np.nanmax(r[nonzero])) for r in rows) > norm.vmax * (1 + 1e-9):
                extend = "max"
            kmax = float(knorm.max()) * 1.08
            # marker size from the k-point spacing and the panel size (~1.55 in wide)
            kk = k[nonzero][:400]
            d = np.linalg.norm(kk[:, None] - kk[None], axis=-1)
            d[d < 1e-9] = np.inf
            spacing = float(d.min()) if np.isfinite(d).any() else kmax
            diam_pt = 0.55 * spacing / (2 * kmax) * 1.55 * 72
            size = float(np.clip(diam_pt**2, 4.0, 120.0))
            hexagon = _bz_hexagon()
            for i, (ax, v, row) in enumerate(zip(top_axes, picks, rows)):
                ax.plot(hexagon[:, 0], hexagon[:, 1], color="0.6", lw=0.7, ls="--", zorder=3)
                order = np.argsort(row[nonzero])
                scat = ax.scatter(k[nonzero, 0][order], k[nonzero, 1][order], c=row[nonzero][order], s=size,
                                  norm=norm, cmap=_SK_CMAP, edgecolors="none", zorder=2)
                if bragg.any():
                    ax.scatter(k[bragg, 0], k[bragg, 1], s=size * 1.6, facecolors="none", edgecolors="0.35",
                               linewidths=0.7, zorder=2.5)
                ax.set_xlim(-kmax, kmax)
                ax.set_ylim(-kmax, kmax)
                ax.set_aspect("equal")
                ax.set_facecolor("0.92")
                ax.set_title(_depth_text(v, None) if e_meV is None else _depth_text(v, e_meV).replace(" (", "\n("))
                ax.set_xlabel(r"$k_x$ (" + _INV_LENGTH + ")")
                if i == 0:
                    ax.set_ylabel(r"$k_y$ (" + _INV_LENGTH + ")")
        else:
            for ax in top_axes:
                _empty_panel(ax, "no S(k)")
        if scat is None:
            scat = mpl.cm.ScalarMappable(norm=mcolors.Normalize(0, 1), cmap=_SK_CMAP)
        cbar = fig.colorbar(scat, ax=top_axes, pad=0.02, extend=extend)
        if sk_name == "structure_factor_uncorrected":
            cbar.set_label(r"$S(\mathbf{k}) = \langle|\rho_\mathbf{k}|^2\rangle/N$ (dimensionless)")
        else:
            cbar.set_label(r"$S(\mathbf{k})$ (dimensionless)")

        ax_p.set_xlabel(_V_LABEL)
        ax_p.set_ylabel(r"$S(\mathbf{K})$, $|\mathbf{K}| = 4\pi/3\,a_M^{-1}$ (dimensionless)")
        _meV_xaxis(ax_p, e_meV)
        try:
            peak, err = structure_factor_peak(ds)
        except KeyError as exc:
            _warn(str(exc.args[0]))
            _empty_panel(ax_p, "no structure factor")
            return _finish(fig)
        stored = "structure_factor_peak" in ds.data_vars
        name = "structure_factor_peak" if stored else sk_name
        err_name = f"{name}_stderr"
        tmp = xr.Dataset({name: peak}, coords={"V": ds["V"]})
        if err_name in ds.data_vars:
            tmp[err_name] = err
        # a NaN S(k) row was reported with the maps above
        series = _series(tmp, name, err_name, warn_nan=stored or not has_sk)
        if vc_s is None:
            _warn("phase_diagram: 'transition_depth_structure_factor' is missing; not marked on the S(K) panel")
        if vc_s is not None:
            interval = transition_interval(ds, "structure_factor")
            _mark_transition(ax_p, vc_s, vc_s_err, interval=interval,
                             interval_label=None if interval is None else
                             f"depth-grid interval [{interval[0]:.3g}, {interval[1]:.3g}] " + _EM,
                             label=_transition_label(r"V_c^{S}", vc_s, vc_s_err, e_meV) + r" from $S(\mathbf{K})$")
        if vc_i is not None:
            _mark_transition(ax_p, vc_i, vc_i_err, color=_C_TRANSITION_2, linestyle=":",
                             label=_transition_label(r"V_c^{\mathrm{int}}", vc_i, vc_i_err, e_meV)
                             + r" from $E_\mathrm{int}$")
        if series is not None and len(series[0]):
            v, y, e = series
            _errorbar(ax_p, v, y, e, color=OKABE_ITO["purple"], label=_with_sem(r"$S$ at the K points", e))
        _draw_hartree_fock(ax_p, ds, "hf_structure_factor_peak", label=HF_LABEL + r" $S(\mathbf{K})$")
        _figure_legend(fig, ax_p)
        return _finish(fig)


# --------------------------------------------------------------------------------------
# Figure 5: training curves
# --------------------------------------------------------------------------------------


def _running_mean(y: np.ndarray, window: int, axis: int = 0) -> np.ndarray:
    """NaN-aware centred running mean along ``axis`` (window clipped at the ends)."""
    if window <= 1:
        return y
    y = np.moveaxis(np.asarray(y, float), axis, 0)
    ok = np.isfinite(y)
    c = np.concatenate([np.zeros((1,) + y.shape[1:]), np.cumsum(np.where(ok, y, 0.0), axis=0)])
    n = np.concatenate([np.zeros((1,) + y.shape[1:]), np.cumsum(ok, axis=0)])
    idx = np.arange(y.shape[0])
    lo = np.clip(idx - window // 2, 0, y.shape[0])
    hi = np.clip(idx + window - window // 2, 0, y.shape[0])
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (c[hi] - c[lo]) / (n[hi] - n[lo])
    return np.moveaxis(out, 0, axis)


def _robust_limits(values, log=False, pad=0.08):
    vals = np.asarray(values, float)
    vals = vals[np.isfinite(vals)]
    if log:
        vals = vals[vals > 0]
        if not len(vals):
            return None
        vals = np.log10(vals)
    if not len(vals):
        return None
    lo, hi = np.percentile(vals, [1.0, 99.0]) if len(vals) > 50 else (vals.min(), vals.max())
    span = hi - lo if hi > lo else max(abs(hi), 1.0) * 0.1
    lo, hi = lo - pad * span, hi + pad * span
    return (10**lo, 10**hi) if log else (lo, hi)


def plot_training(ds: xr.Dataset) -> Figure:
    """Training curves: energy and Var(E_L) per depth, learning rate, acceptance, expert usage.

    Layout: energy | variance (log) | learning rate on top; acceptance | expert usage below.
    ``fig.axes``: [energy, variance, learning rate, acceptance, expert usage, depth colourbar
    (when per-depth data exist), usage colourbar (when expert usage exists)]. Noisy per-step
    curves are drawn faint with a running mean on top. Raises ValueError when `ds` has no
    dimension ``step``.
    """
    with mpl.rc_context(_RC):
        if "step" in ds.coords:
            steps = np.asarray(ds["step"].values, float)
        elif "step" in ds.dims:
            steps = np.arange(ds.sizes["step"], dtype=float)
        else:
            raise ValueError("train dataset has no dimension 'step'")
        n_steps = len(steps)
        window = max(1, n_steps // 60) if n_steps > 60 else 1
        fig = _new_figure((7.2, 5.2))
        gs = fig.add_gridspec(2, 3)
        ax_e = fig.add_subplot(gs[0, 0])
        ax_v = fig.add_subplot(gs[0, 1], sharex=ax_e)
        ax_lr = fig.add_subplot(gs[0, 2], sharex=ax_e)
        ax_a = fig.add_subplot(gs[1, 0], sharex=ax_e)
        ax_u = fig.add_subplot(gs[1, 1:], sharex=ax_e)
        for ax in (ax_e, ax_v, ax_lr, ax_a, ax_u):
            ax.set_xlabel("optimisation step")
        ax_e.xaxis.set_major_locator(mticker.MaxNLocator(nbins=4, integer=True))
        ax_e.xaxis.set_major_formatter(mticker.EngFormatter(sep=""))
        per_electron = any("per electron" in str(ds[n].attrs.get("long_name", ""))
                           for n in ("energy_per_depth", "energy") if n in ds.data_vars)
        ax_e.set_ylabel((r"energy per electron $\langle E_L \rangle/N$ (" if per_electron
                         else r"energy $\langle E_L \rangle$ (") + _EM + ")")
        ax_v.set_ylabel(r"variance $\mathrm{Var}(E_L)$ (" + _EM + r"$^2$)")
        ax_v.set_yscale("log")
        ax_lr.set_ylabel("learning rate (dimensionless)")
        ax_a.set_ylabel("MCMC acceptance (fraction)")
        ax_u.set_ylabel("expert")

        # --- per-depth energy and variance
        depth_axes_used = False
        per_depth = [n for n in ("energy_per_depth", "variance_per_depth") if n in ds.data_vars]
        depth_dim = None
        if per_depth:
            depth_dim = next((d for d in ds[per_depth[0]].dims if d != "step"), None)
        if depth_dim is not None:
            depths = np.asarray(ds[depth_dim].values, float) if depth_dim in ds.coords else np.arange(
                ds.sizes[depth_dim], dtype=float)
            cmap = mpl.colormaps[_DEPTH_CMAP]
            sd = np.sort(depths)
            if len(sd) > 1 and np.all(np.diff(sd) > 0):
                # one discrete colour per depth, boundaries halfway between depths
                edges = np.concatenate([[sd[0] - 0.5 * (sd[1] - sd[0])], 0.5 * (sd[1:] + sd[:-1]),
                                        [sd[-1] + 0.5 * (sd[-1] - sd[-2])]])
                dnorm = mcolors.BoundaryNorm(edges, cmap.N)
            else:
                dnorm = mcolors.Normalize(sd[0] - 1.0, sd[-1] + 1.0)
            col = [cmap(dnorm(d)) for d in depths]
        for name, ax, aggregate, log in (("energy_per_depth", ax_e, "energy", False),
                                         ("variance_per_depth", ax_v, "variance", True)):
            if name in ds.data_vars and depth_dim is not None and depth_dim in ds[name].dims:
                y = np.asarray(ds[name].transpose("step", depth_dim).values, float)
                if log:
                    y = np.where(y > 0, y, np.nan)
                    sm = 10 ** _running_mean(np.log10(y), window)
                else:
                    sm = _running_mean(y, window)
                for j in range(y.shape[1]):
                    if window > 1:
                        ax.plot(steps, y[:, j], color=col[j], lw=0.5, alpha=0.25, rasterized=True)
                    ax.plot(steps, sm[:, j], color=col[j], lw=1.2)
                lim = _robust_limits(sm, log=log)
                depth_axes_used = True
                if not np.isfinite(y).any():
                    _warn(f"train: variable '{name}' is all NaN")
            elif aggregate in ds.data_vars:
                _warn(f"train: variable '{name}' is missing; plotting the batch-averaged '{aggregate}'")
                y = np.asarray(ds[aggregate].values, float)
                if log:
                    y = np.where(y > 0, y, np.nan)
                    sm = 10 ** _running_mean(np.log10(y), window)
                else:
                    sm = _running_mean(y, window)
                if window > 1:
                    ax.plot(steps, y, color="0.5", lw=0.5, alpha=0.4, rasterized=True)
                ax.plot(steps, sm, color="k", lw=1.2, label="batch mean")
                ax.legend(loc="upper right")
                lim = _robust_limits(sm, log=log)
            else:
                _warn(f"train: variables '{name}' and '{aggregate}' are missing")
                _empty_panel(ax, f"{aggregate} not recorded")
                lim = None
            if lim is not None and lim[0] < lim[1]:
                ax.set_ylim(*lim)
        if depth_axes_used:
            sm_ = mpl.cm.ScalarMappable(norm=dnorm, cmap=cmap)
            cb = fig.colorbar(sm_, ax=[ax_e, ax_v], location="top", aspect=35, pad=0.02)
            cb.set_label(r"depth $V$ (" + _EM + ")")
            if len(depths) <= 12:
                cb.set_ticks(np.sort(depths))
                cb.set_ticklabels([f"{d:.3g}" for d in np.sort(depths)])

        # --- acceptance per depth (same colours), else the batch mean; then the learning rate
        acc_done = False
        if ("acceptance_per_depth" in ds.data_vars and depth_axes_used
                and depth_dim in ds["acceptance_per_depth"].dims):
            y = np.asarray(ds["acceptance_per_depth"].transpose("step", depth_dim).values, float)
            if np.isfinite(y).any():
                sm = _running_mean(y, window)
                for j in range(y.shape[1]):
                    if window > 1:
                        ax_a.plot(steps, y[:, j], color=col[j], lw=0.5, alpha=0.25, rasterized=True)
                    ax_a.plot(steps, sm[:, j], color=col[j], lw=1.2)
                acc_done = True
        for name, ax, log_ok in (("learning_rate", ax_lr, True), ("acceptance", ax_a, False)):
            if name == "acceptance" and acc_done:
                continue
            if name not in ds.data_vars:
                _warn(f"train: variable '{name}' is missing")
                _empty_panel(ax, f"{name} not recorded")
                continue
            y = np.asarray(ds[name].values, float).reshape(n_steps, -1)[:, 0]
            if not np.isfinite(y).any():
                _warn(f"train: variable '{name}' is all NaN")
                _empty_panel(ax, f"{name} is NaN")
                continue
            if name == "acceptance" and window > 1:
                ax.plot(steps, y, color=_C_DATA, lw=0.5, alpha=0.3, rasterized=True)
                ax.plot(steps, _running_mean(y, window), color=_C_DATA, lw=1.2)
            else:
                ax.plot(steps, y, color=_C_DATA if name == "acceptance" else OKABE_ITO["black"], lw=1.2)
            pos = y[np.isfinite(y) & (y > 0)]
            if log_ok and len(pos) and pos.max() / pos.min() > 20:
                ax.set_yscale("log")
        ax_a.set_ylim(0.0, 1.0)

        # --- expert usage heat map: rows (layer, expert), colour centred on balanced usage
        if "expert_usage" in ds.data_vars:
            u = ds["expert_usage"]
            dims = [d for d in u.dims if d != "step"]
            u = u.transpose("step", *dims)
            arr = np.asarray(u.values, float)
            if arr.ndim == 2:
                arr = arr[:, None, :]
            n_layers, n_experts = arr.shape[1], arr.shape[2]
            rows = arr.reshape(n_steps, n_layers * n_experts)
            nb = min(n_steps, 150)  # bin steps so that the map stays light
            bins = np.linspace(0, n_steps, nb + 1).astype(int)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                binned = np.stack([np.nanmean(rows[a:b], axis=0) for a, b in zip(bins[:-1], bins[1:])])
                balanced = float(np.nanmean(np.nansum(arr, axis=2))) / n_experts
            if not np.isfinite(balanced) or balanced <= 0:
                balanced = 1.0 / n_experts
            if not np.isfinite(arr).all():
                _warn("train: variable 'expert_usage' has NaN entries")
            step_edges = np.concatenate([steps[np.minimum(bins[:-1], n_steps - 1)], [steps[-1] + (
                steps[-1] - steps[-2] if n_steps > 1 else 1.0)]])
            vmax = max(2 * balanced, float(np.nanmax(binned)) if np.isfinite(binned).any() else 2 * balanced)
            unorm = mcolors.TwoSlopeNorm(vcenter=balanced, vmin=0.0, vmax=vmax)
            mesh = ax_u.pcolormesh(step_edges, np.arange(n_layers * n_experts + 1) - 0.5, binned.T, norm=unorm,
                                   cmap=_USAGE_CMAP, rasterized=True)
            for layer in range(1, n_layers):
                ax_u.axhline(layer * n_experts - 0.5, color="k", lw=1.0)
            ax_u.set_yticks([layer * n_experts + (n_experts - 1) / 2 for layer in range(n_layers)])
            ax_u.set_yticklabels([f"layer {layer}" for layer in range(n_layers)])
            ax_u.set_ylim(n_layers * n_experts - 0.5, -0.5)
            ax_u.set_ylabel(f"expert ({n_experts} per layer)")
            cb = fig.colorbar(mesh, ax=ax_u, pad=0.01, aspect=15)
            cb.set_label(f"usage (fraction; balanced = {balanced:.3g})")
        else:
            _warn("train: variable 'expert_usage' is missing")
            _empty_panel(ax_u, "expert usage not recorded")
        return _finish(fig)


# --------------------------------------------------------------------------------------
# Saving and the entry points
# --------------------------------------------------------------------------------------


def save_figure(fig: Figure, out_dir, name: str, dpi: int = 200, formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """Write ``fig`` as ``out_dir/name.{png,pdf}`` (dpi ≥ 150 for the raster); returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    with mpl.rc_context(_RC):
        for fmt in formats:
            path = out_dir / f"{name}.{fmt}"
            tmp = path.with_name(f".{path.name}.tmp")
            fig.savefig(tmp, format=fmt, dpi=max(150, int(dpi)), metadata=_metadata(fmt))
            tmp.replace(path)
            paths.append(path)
    return paths


def _metadata(fmt: str) -> dict:
    if fmt == "pdf":
        return {"Creator": "qernel.plots", "Producer": None}
    if fmt == "png":
        return {"Software": "qernel.plots"}
    return {}


def plot_all(phase_diagram_path, train_path, out_dir, *, dpi: int = 200,
             formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """Draw every figure from ``phase_diagram.nc`` (and ``train.nc``) into ``out_dir``.

    ``train_path`` may be None or a missing file: the phase-diagram figures are still drawn
    (with a warning). A figure whose essential variable is missing is skipped with a
    warning. Returns the written files (``FIGURES`` stems × ``formats``).
    """
    ds = load_dataset(phase_diagram_path)
    written: list[Path] = []
    makers = {
        "interaction_energy": plot_interaction_energy,
        "energy_components": plot_energy_components,
        "density": plot_density,
        "structure_factor": plot_structure_factor,
    }
    for name, make in makers.items():
        try:
            fig = make(ds)
        except KeyError as exc:
            _warn(f"figure '{name}' skipped: {exc.args[0] if exc.args else exc}")
            continue
        written += save_figure(fig, out_dir, name, dpi=dpi, formats=formats)
    if train_path is None or not Path(train_path).exists():
        _warn(f"train file {train_path!s} not found; the 'training' figure is skipped")
    else:
        written += save_figure(plot_training(load_dataset(train_path)), out_dir, "training", dpi=dpi, formats=formats)
    return written


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Add the plot arguments (phase_diagram, --train, --out, --dpi, --formats) to ``parser``."""
    parser = parser or argparse.ArgumentParser(prog="qernel-plot", description=__doc__.splitlines()[0])
    parser.add_argument("phase_diagram", type=Path, help="phase_diagram.nc")
    parser.add_argument("--train", type=Path, default=None, help="train.nc (optional)")
    parser.add_argument("--out", type=Path, required=True, help="output folder for the figures")
    parser.add_argument("--dpi", type=int, default=200, help="PNG resolution (≥ 150)")
    parser.add_argument("--formats", nargs="+", default=["png", "pdf"], help="file formats (default: png pdf)")
    return parser


def run(args: argparse.Namespace) -> list[Path]:
    """Run from parsed arguments (see :func:`build_parser`); prints and returns the written files."""
    paths = plot_all(args.phase_diagram, args.train, args.out, dpi=args.dpi, formats=tuple(args.formats))
    for p in paths:
        print(p)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m qernel.plots phase_diagram.nc --train train.nc --out figures/``."""
    run(build_parser().parse_args(argv))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
