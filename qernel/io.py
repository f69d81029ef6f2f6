"""netCDF output: atomic writes with the provenance and CF-style metadata of DESIGN.md §4.

Every file QERNEL writes carries global attributes

    units            "E_M" (every energy in the file is in E_M = ħ²/(m* a_M²))
    energy_unit_meV  E_M in meV (NaN when the system was given in moiré units only)
    config           the full (sweep) config as canonical JSON (sorted keys; JSON is YAML)
    config_hash      sha256 of that canonical JSON (`qernel.config.config_hash`, the one hash)
    sweep            the sweep name
    qernel_version   the installed package version ("unknown" if not installed)
    git_commit       `git rev-parse HEAD` of the source tree (+ "-dirty" with local changes), or "unknown"
    date_created     ISO 8601, UTC

and every variable and coordinate that QERNEL knows (`VARIABLE_ATTRS`) gets CF-style
`units` and `long_name` attributes. Files are written to a temporary file in the target's
folder and renamed over the target (`qernel.atomic`), so a reader never sees half a file.
"""

from __future__ import annotations

import datetime
import functools
import json
import subprocess
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np
import xarray as xr

from qernel.atomic import atomic_path
from qernel.config import canonical_json, config_hash, to_plain

#: The netCDF engine used for every read and write.
ENGINE = "netcdf4"

_ENERGY_TERMS = {
    "energy": "total energy per electron",
    "kinetic_energy": "kinetic energy per electron",
    "potential_energy": "moire potential energy per electron",
    "interaction_energy": "interaction energy per electron (Ewald Coulomb including the Madelung term)",
}

#: (units, long_name) of every variable and coordinate QERNEL writes. `<name>_stderr` gets the
#: units of <name> and the long_name "standard error of <long_name>" automatically.
VARIABLE_ATTRS: dict[str, tuple[str, str]] = {
    **{name: ("E_M", long) for name, long in _ENERGY_TERMS.items()},
    "variance": ("E_M^2", "variance of the local energy of one configuration (total, not per electron)"),
    "n_eff": ("1", "effective number of independent samples of the local energy"),
    "n_samples": ("1", "number of samples (steps times walkers)"),
    "V": ("E_M", "moire potential depth V"),
    "V_meV": ("meV", "moire potential depth V"),
    "depth": ("E_M", "moire potential depth V"),
    "x": ("1", "fractional coordinate of the moire unit cell along a1 (bin centre)"),
    "y": ("1", "fractional coordinate of the moire unit cell along a2 (bin centre)"),
    "cart_x": ("a_M", "cartesian x of the density bin centre"),
    "cart_y": ("a_M", "cartesian y of the density bin centre"),
    "sx": ("1", "fractional coordinate of the supercell along L1 (bin centre)"),
    "sy": ("1", "fractional coordinate of the supercell along L2 (bin centre)"),
    "density": ("a_M^-2", "one-body density folded onto the moire unit cell (integrates to the filling)"),
    "supercell_density": ("a_M^-2", "one-body density on the supercell (integrates to N)"),
    "kx": ("a_M^-1", "wave vector x component"),
    "ky": ("a_M^-1", "wave vector y component"),
    "k_norm": ("a_M^-1", "wave vector length"),
    "structure_factor": ("1", "static structure factor S(k) = <|rho_k|^2>/N - |<rho_k>|^2/N"),
    "structure_factor_uncorrected": ("1", "static structure factor without the disconnected part, <|rho_k|^2>/N"),
    "rho_k_real": ("1", "real part of <rho_k> = <sum_i exp(-i k.r_i)>"),
    "rho_k_imag": ("1", "imaginary part of <rho_k> = <sum_i exp(-i k.r_i)>"),
    "rho_k_stderr": ("1", "standard error of <rho_k> (real and imaginary parts in quadrature)"),
    "structure_factor_peak": ("1", "structure factor at the ordering vectors (moire Brillouin-zone corners K)"),
    "r": ("a_M", "pair distance (bin centre)"),
    "pair_correlation": ("1", "pair correlation function g(r)"),
    "transition_depth_interaction": ("E_M", "depth V of the largest |d interaction_energy / dV|"),
    "transition_depth_structure_factor": ("E_M", "depth V of the steepest rise of the structure-factor peak at K"),
    # training logs (train.nc)
    "step": ("1", "optimisation step"),
    "acceptance": ("1", "Metropolis acceptance ratio"),
    "learning_rate": ("1", "learning rate"),
    "expert_usage": ("1", "fraction of tokens routed to each expert"),
}


def variable_attrs(name: str) -> dict[str, str]:
    """{"units", "long_name"} for a known variable name, {} otherwise."""
    if name in VARIABLE_ATTRS:
        units, long_name = VARIABLE_ATTRS[name]
        return {"units": units, "long_name": long_name}
    if name.endswith("_stderr"):
        base = variable_attrs(name[: -len("_stderr")])
        if base:
            return {"units": base["units"], "long_name": "standard error of " + base["long_name"]}
    return {}


# -- provenance -----------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def qernel_version() -> str:
    """The installed qernel version, or "unknown"."""
    try:
        return metadata.version("qernel")
    except metadata.PackageNotFoundError:
        return "unknown"


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """`git rev-parse HEAD` of the source tree this package lives in, with "-dirty" when tracked
    files have local changes (the results then cannot be reproduced from the commit alone), or
    "unknown" outside a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return rev + ("-dirty" if dirty else "") if rev else "unknown"


def energy_unit_from_config(config: dict) -> float:
    """E_M in meV from a sweep config given in physical units, else NaN.

    Looks for `system: {units: physical, effective_mass, moire_length_nm}` (DESIGN.md §6), in
    the mapping itself or under its `system` key; an explicit `energy_unit_meV` wins.
    """
    from qernel.units import moire_energy_meV

    system = config.get("system", config) if isinstance(config, dict) else {}
    if not isinstance(system, dict):
        return float("nan")
    for source in (config, system):
        if isinstance(source, dict) and source.get("energy_unit_meV") is not None:
            return float(source["energy_unit_meV"])
    if system.get("units") == "physical" and "effective_mass" in system and "moire_length_nm" in system:
        try:
            return float(moire_energy_meV(float(system["effective_mass"]), float(system["moire_length_nm"])))
        except (TypeError, ValueError):
            return float("nan")
    return float("nan")


def provenance_attrs(config_dict: dict, sweep_name: str, energy_unit_meV: float | None = None) -> dict:
    """The global attrs of DESIGN.md §4 for outputs of `sweep_name` with this config.

    energy_unit_meV: E_M in meV; by default derived from the config (NaN if in moiré units).
    """
    e_m = energy_unit_from_config(config_dict) if energy_unit_meV is None else float(energy_unit_meV)
    return {
        "units": "E_M",
        "energy_unit_meV": e_m,
        "config": canonical_json(config_dict),
        "config_hash": config_hash(config_dict),
        "sweep": str(sweep_name),
        "qernel_version": qernel_version(),
        "git_commit": git_commit(),
        "date_created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


REQUIRED_ATTRS = ("units", "energy_unit_meV", "config", "config_hash", "qernel_version", "git_commit")


def _netcdf_attr(value):
    """An attribute value netCDF can store (None → dropped, bool → int, mappings → JSON)."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, dict):
        return canonical_json(value)
    if isinstance(value, (list, tuple)):
        arr = np.asarray(to_plain(value))
        return arr if arr.dtype.kind in "iuf" else canonical_json(list(value))
    if isinstance(value, Path):
        return str(value)
    return value


def _clean_attrs(attrs: dict) -> dict:
    out = {}
    for key, value in attrs.items():
        v = _netcdf_attr(value)
        if v is not None:
            out[str(key)] = v
    return out


def annotate(ds: xr.Dataset, attrs: dict | None = None) -> xr.Dataset:
    """A copy of `ds` with global attrs merged (`attrs` win), the required provenance keys
    filled in (version, commit; "unknown"/NaN with a warning for the config and E_M), and
    units/long_name on every known variable and coordinate."""
    out = ds.copy()
    merged = {**ds.attrs, **(attrs or {})}
    merged.setdefault("units", "E_M")
    merged.setdefault("qernel_version", qernel_version())
    merged.setdefault("git_commit", git_commit())
    missing = [key for key in ("config", "config_hash", "energy_unit_meV") if key not in merged]
    if missing:
        warnings.warn(f"netCDF output without provenance attrs {missing}: pass provenance_attrs(config, sweep)",
                      RuntimeWarning, stacklevel=3)
        merged.setdefault("config", "unknown")
        merged.setdefault("config_hash", "unknown")
        merged.setdefault("energy_unit_meV", float("nan"))
    out.attrs = _clean_attrs(merged)
    for name in list(out.variables):
        known = variable_attrs(str(name))
        current = dict(out[name].attrs)
        for key, value in known.items():
            current.setdefault(key, value)
        out[name].attrs = _clean_attrs(current)
    return out


def write_netcdf(ds: xr.Dataset, path, attrs: dict | None = None) -> Path:
    """Write `ds` (annotated, see `annotate`) to `path` atomically; returns the path.

    The data go to a temporary file in the same folder, are flushed to disk, and the file is
    renamed over `path` (`qernel.atomic`); on any error `path` is untouched. Raises OSError.
    """
    path = Path(path)
    out = annotate(ds, attrs)
    with atomic_path(path) as tmp:
        out.to_netcdf(tmp, engine=ENGINE)
    return path


def read_netcdf(path) -> xr.Dataset:
    """Open a QERNEL netCDF file fully into memory (the file is closed on return)."""
    with xr.open_dataset(path, engine=ENGINE) as ds:
        return ds.load()


def config_from_attrs(ds: xr.Dataset) -> dict | None:
    """The config mapping stored in a dataset's `config` attribute (None if absent/unknown)."""
    text = ds.attrs.get("config")
    if not text or text == "unknown":
        return None
    return json.loads(text)
