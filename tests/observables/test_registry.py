"""The observables package's seams: every registered observable follows the protocol, and no
module of the package imports another module's private name."""

import ast
import math
from pathlib import Path

import pytest
import xarray as xr

import qernel
from qernel.evaluate import EvalConfig
from qernel.lattice import Supercell
from qernel.observables import OBSERVABLE_TYPES, Observable, default_observables
from qernel.system import System

PACKAGE = Path(qernel.__file__).parent


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def test_no_private_name_crosses_a_module_boundary():
    modules = dict(_modules())
    found = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("qernel"):
                for a in node.names:
                    if a.name.startswith("_") and not a.name.startswith("__"):
                        found.append(f"{name}: from {node.module} import {a.name}")
                    if f"{node.module}.{a.name}" in modules:
                        aliases[a.asname or a.name] = f"{node.module}.{a.name}"
            elif isinstance(node, ast.Import):
                aliases.update({a.asname or a.name: a.name for a in node.names if a.name.startswith("qernel")})
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                found.append(f"{name}:{node.lineno}: {node.value.id}.{node.attr}")
    assert not found, found


@pytest.mark.parametrize("pair_bins", [0, 5])
def test_default_observables_follow_the_protocol(pair_bins):
    system = System(Supercell.diagonal(2), n_up=2, n_down=1, coupling=1.0, phase=math.radians(45.0))
    cfg = EvalConfig(density_bins=(3, 4), structure_factor_shells=1.0, pair_correlation_bins=pair_bins)
    observables = default_observables(system, cfg)
    assert [type(o) for o in observables] == list(OBSERVABLE_TYPES)
    names = []
    for o in observables:
        assert isinstance(o, Observable) and hash(o) == hash(type(o).from_config(system, cfg))  # keys the jit cache
        coord_dims = set(xr.Dataset(coords=o.coords()).dims)
        for name, spec in o.series().items():
            names.append(name)
            assert len(spec.dims) == len(spec.shape) and spec.units and spec.long_name
            assert set(spec.dims) <= coord_dims, (name, spec.dims)
    assert len(names) == len(set(names))  # one home per series
    expected = {"energy", "kinetic_energy", "potential_energy", "interaction_energy", "local_energy_variance",
                "density", "supercell_density", "rho_k_abs2", "rho_k_real", "rho_k_imag"}
    assert set(names) == expected | ({"pair_correlation"} if pair_bins else set())
    assert observables[-1].attrs()["pair_r_max"] == pytest.approx(1.0)  # half of |L| = 2 a_M
