"""netCDF output: provenance attrs, CF attrs, atomic writes."""

import json
import os
import re

import numpy as np
import pytest
import xarray as xr

from qernel import io as qio
from qernel.units import WSE2_WS2

PHYSICAL = {"system": {"supercell": [[3, 0], [0, 3]], "n_up": 6, "n_down": 0, "units": "physical",
                       "effective_mass": 0.35, "epsilon": 5.0, "moire_length_nm": 8.031, "phase_deg": 45},
            "depths": {"start": 0.0, "stop": 30.0, "num": 8}, "seed": 0}
MOIRE = {"system": {"supercell": [[3, 0], [0, 3]], "n_up": 6, "units": "moire", "coupling": 10.62,
                    "phase_deg": 45}, "depths": [0.0, 5.0], "seed": 0}


def test_config_hash_is_canonical():
    a = {"b": 1, "a": {"y": [1, 2], "x": 0.5}}
    b = {"a": {"x": 0.5, "y": (1, 2)}, "b": np.int64(1)}
    assert qio.config_hash(a) == qio.config_hash(b)
    assert re.fullmatch(r"[0-9a-f]{64}", qio.config_hash(a))
    assert qio.config_hash(a) != qio.config_hash({**a, "b": 2})


def test_provenance_attrs():
    attrs = qio.provenance_attrs(PHYSICAL, "demo")
    for key in qio.REQUIRED_ATTRS + ("sweep", "date_created"):
        assert key in attrs
    assert attrs["units"] == "E_M"
    assert attrs["energy_unit_meV"] == pytest.approx(WSE2_WS2.energy_unit_meV)
    assert attrs["energy_unit_meV"] == pytest.approx(3.3756, rel=1e-4)
    assert json.loads(attrs["config"]) == PHYSICAL
    assert attrs["config_hash"] == qio.config_hash(PHYSICAL)
    assert attrs["git_commit"] == "unknown" or re.fullmatch(r"[0-9a-f]{40}(-dirty)?", attrs["git_commit"])
    assert attrs["qernel_version"]
    assert np.isnan(qio.provenance_attrs(MOIRE, "demo")["energy_unit_meV"])
    assert qio.provenance_attrs(MOIRE, "demo", energy_unit_meV=2.0)["energy_unit_meV"] == 2.0


def sample_dataset():
    return xr.Dataset(
        {"energy": ((), -1.5), "energy_stderr": ((), 0.01),
         "density": (("x", "y"), np.ones((3, 4))), "mystery": ("x", np.arange(3.0))},
        coords={"x": [0.1, 0.5, 0.9], "y": [0.125, 0.375, 0.625, 0.875]},
    )


def test_write_roundtrip_with_cf_attrs(tmp_path):
    path = tmp_path / "sub" / "out.nc"
    qio.write_netcdf(sample_dataset(), path, {**qio.provenance_attrs(PHYSICAL, "demo"), "flag": True,
                                                "nothing": None, "nested": {"a": 1}})
    assert sorted(os.listdir(path.parent)) == ["out.nc"]  # no temporary file left behind
    with xr.open_dataset(path, engine="netcdf4") as ds:
        assert ds.attrs["units"] == "E_M"
        assert ds.attrs["flag"] == 1 and "nothing" not in ds.attrs
        assert json.loads(ds.attrs["nested"]) == {"a": 1}
        assert ds["energy"].attrs["units"] == "E_M"
        assert ds["energy_stderr"].attrs["long_name"].startswith("standard error of total energy")
        assert ds["density"].attrs["units"] == "a_M^-2"
        assert ds["x"].attrs["units"] == "1" and "long_name" in ds["y"].attrs
        assert "units" not in ds["mystery"].attrs  # unknown names are not invented
        assert qio.config_from_attrs(ds) == PHYSICAL
        xr.testing.assert_equal(ds, sample_dataset())


def test_write_is_atomic(tmp_path):
    path = tmp_path / "out.nc"
    qio.write_netcdf(sample_dataset(), path, qio.provenance_attrs(MOIRE, "demo"))
    before = path.read_bytes()
    bad = sample_dataset().assign(broken=("x", np.array([{"a": 1}, None, 3], dtype=object)))
    with pytest.raises(Exception):
        qio.write_netcdf(bad, path, qio.provenance_attrs(MOIRE, "demo"))
    assert path.read_bytes() == before  # the old file is untouched
    assert sorted(os.listdir(tmp_path)) == ["out.nc"]
    # an overwrite replaces the file; the reader gets a closed, loaded copy
    qio.write_netcdf(sample_dataset().assign(energy=-2.0), path, qio.provenance_attrs(MOIRE, "demo"))
    assert float(qio.read_netcdf(path)["energy"]) == -2.0


def test_missing_provenance_warns(tmp_path):
    with pytest.warns(RuntimeWarning, match="provenance"):
        qio.write_netcdf(sample_dataset(), tmp_path / "x.nc")
    ds = qio.read_netcdf(tmp_path / "x.nc")
    assert ds.attrs["config"] == "unknown" and np.isnan(ds.attrs["energy_unit_meV"])
    assert ds.attrs["git_commit"] and ds.attrs["qernel_version"]
