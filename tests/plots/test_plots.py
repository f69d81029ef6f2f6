"""Figures of issue 7 (`qernel.plots`), rendered from small synthetic datasets (no training)."""

from __future__ import annotations

import warnings

import matplotlib.image as mpimg
import numpy as np
import pytest
from matplotlib.collections import PathCollection, QuadMesh
from matplotlib.image import AxesImage
from matplotlib.container import ErrorbarContainer
from PIL import Image

from qernel import plots
from qernel.plots import FIGURES, PlotWarning

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------ helpers


def _check_png(path, min_dpi=150):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 300
    assert float(np.std(img[..., :3])) > 0.01, f"{path} looks blank"
    with Image.open(path) as im:
        assert min(im.info["dpi"]) >= min_dpi - 0.5


def _check_pdf(path):
    data = path.read_bytes()
    assert data.startswith(b"%PDF-"), path
    assert b"%%EOF" in data[-64:], path
    assert len(data) > 5_000


def _main_axes(fig):
    """Axes that are not colourbars."""
    return [ax for ax in fig.axes if not hasattr(ax, "_colorbar")]


def _colorbars(fig):
    return [ax for ax in fig.axes if hasattr(ax, "_colorbar")]


def _child_labels(ax):
    labels = []
    for child in ax.child_axes:
        labels += [child.get_xlabel(), child.get_ylabel()]
    return [lab for lab in labels if lab]


def _vlines_at(ax):
    """x positions of full-height vertical lines (axvline) in ax."""
    xs = []
    for line in ax.get_lines():
        x = np.asarray(line.get_xdata(), float)
        y = np.asarray(line.get_ydata(), float)
        if len(x) == 2 and x[0] == x[1] and tuple(y) == (0.0, 1.0):
            xs.append(float(x[0]))
    return xs


def _span_extents(ax):
    """(xmin, xmax) in data coordinates of the axvspan bands in ax."""
    out = []
    for patch in ax.patches:
        verts = patch.get_patch_transform().transform(patch.get_path().vertices)
        out.append((float(verts[:, 0].min()), float(verts[:, 0].max())))
    return out


def _errorbar_data(ax):
    """[(x, y)] of the data lines of the error-bar containers in ax."""
    out = []
    for c in ax.containers:
        if isinstance(c, ErrorbarContainer):
            line = c.lines[0]
            out.append((np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)))
    return out


def _no_plot_warnings(record):
    return [str(w.message) for w in record if issubclass(w.category, PlotWarning)]


# ------------------------------------------------------------------ full render of the clean datasets


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, synth):
    base = tmp_path_factory.mktemp("figures")
    pd_path, train_path = base / "phase_diagram.nc", base / "train.nc"
    synth.make_phase_diagram().to_netcdf(pd_path)
    synth.make_train().to_netcdf(train_path)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        paths = plots.plot_all(pd_path, train_path, base / "out")
    return base / "out", paths, record


def test_plot_all_writes_every_figure_without_warnings(rendered):
    out, paths, record = rendered
    expected = {out / f"{name}.{ext}" for name in FIGURES for ext in ("png", "pdf")}
    assert set(paths) == expected
    assert len(paths) == 10
    assert _no_plot_warnings(record) == []


@pytest.mark.parametrize("name", FIGURES)
def test_files_are_valid_png_and_pdf(rendered, name):
    out, _, _ = rendered
    _check_png(out / f"{name}.png")
    _check_pdf(out / f"{name}.pdf")


# ------------------------------------------------------------------ figure 1


def test_interaction_energy_figure(phase_diagram_ds, synth):
    fig = plots.plot_interaction_energy(phase_diagram_ds)
    assert len(fig.axes) == 2
    top, bottom = fig.axes
    assert "E_M" in top.get_ylabel() and "int" in top.get_ylabel()
    assert "E_M" in bottom.get_xlabel() and "V" in bottom.get_xlabel()
    assert "dimensionless" in bottom.get_ylabel()
    assert any("meV" in lab for lab in _child_labels(top))  # secondary V and energy axes
    assert sum("meV" in lab for lab in _child_labels(top)) == 2
    # data with error bars
    (x, y), = _errorbar_data(top)
    np.testing.assert_allclose(x, phase_diagram_ds["V"].values)
    np.testing.assert_allclose(y, phase_diagram_ds["interaction_energy"].values)
    # derivative panel: finite differences at the midpoints
    mid, deriv, _ = plots.interaction_derivative(x, y, phase_diagram_ds["interaction_energy_stderr"].values)
    (xd, yd), = _errorbar_data(bottom)
    np.testing.assert_allclose(xd, mid)
    np.testing.assert_allclose(yd, deriv)
    # the transition: a vertical line and a ±stderr band on both panels
    for ax in (top, bottom):
        assert synth.V_C in _vlines_at(ax)
        (lo, hi), = _span_extents(ax)
        assert lo == pytest.approx(synth.V_C - synth.V_C_ERR) and hi == pytest.approx(synth.V_C + synth.V_C_ERR)
    # the synthetic liquid→crystal step: the steepest descent brackets V_c
    i = int(np.argmax(np.abs(deriv)))
    assert abs(mid[i] - synth.V_C) < 1.5


def test_interaction_derivative_values():
    mid, d, err = plots.interaction_derivative([0.0, 1.0, 3.0], [0.0, 2.0, 6.0], [0.1, 0.1, 0.2])
    np.testing.assert_allclose(mid, [0.5, 2.0])
    np.testing.assert_allclose(d, [2.0, 2.0])
    np.testing.assert_allclose(err, [np.sqrt(0.02), np.sqrt(0.05) / 2.0])
    assert plots.interaction_derivative([0, 1], [0, 1])[2] is None


def test_transition_read_from_attrs_or_estimated(phase_diagram_ds, synth):
    ds = phase_diagram_ds.drop_vars(["transition_depth_interaction", "transition_depth_interaction_stderr"])
    ds.attrs["transition_depth_interaction"] = synth.V_C
    ds.attrs["transition_depth_interaction_stderr"] = synth.V_C_ERR
    assert plots.transition_depth(ds, "interaction") == (synth.V_C, synth.V_C_ERR)
    assert plots.transition_depth(ds, "structure_factor") == (synth.V_C_S, synth.V_C_S_ERR)
    fig = plots.plot_interaction_energy(ds)
    assert synth.V_C in _vlines_at(fig.axes[0])

    del ds.attrs["transition_depth_interaction"]
    with pytest.warns(PlotWarning, match="transition_depth_interaction"):
        fig = plots.plot_interaction_energy(ds)
    v = ds["V"].values
    mid, deriv, _ = plots.interaction_derivative(v, ds["interaction_energy"].values)
    assert _vlines_at(fig.axes[0]) == [pytest.approx(mid[np.argmax(np.abs(deriv))])]


# ------------------------------------------------------------------ figure 2


def test_energy_components_figure(phase_diagram_ds):
    fig = plots.plot_energy_components(phase_diagram_ds)
    axes = fig.axes
    assert len(axes) == 4
    for ax, word, name in zip(axes, ("total", "kinetic", "moiré", "interaction"),
                              ("energy", "kinetic_energy", "potential_energy", "interaction_energy")):
        assert word in ax.get_ylabel() and "E_M" in ax.get_ylabel()
        (x, y), = _errorbar_data(ax)
        np.testing.assert_allclose(y, phase_diagram_ds[name].values)
        assert any("meV" in lab for lab in _child_labels(ax))
    for ax in axes[2:]:
        assert "E_M" in ax.get_xlabel()
    assert fig.legends, "transition / data legend below the panels"


# ------------------------------------------------------------------ figure 3


def test_select_depths():
    v = np.linspace(0.0, 10.0, 8)
    np.testing.assert_allclose(plots.select_depths(v, 4.35), v[[0, 3, 4, 7]])
    np.testing.assert_allclose(plots.select_depths(v, 0.5), v[[0, 1, 2, 7]])
    np.testing.assert_allclose(plots.select_depths(v, None), v[[0, 2, 5, 7]])
    np.testing.assert_allclose(plots.select_depths(v[:3], 4.35), v[:3])


def test_density_figure(phase_diagram_ds, synth):
    fig = plots.plot_density(phase_diagram_ds)
    maps, cbars = _main_axes(fig), _colorbars(fig)
    assert len(fig.axes) == 7 and len(maps) == 6 and len(cbars) == 1
    assert "a_M" in cbars[0].get_ylabel() and "density" in cbars[0].get_ylabel()
    for ax in maps:
        assert "a_M" in ax.get_xlabel()
        assert any(isinstance(c, PathCollection) for c in ax.collections)  # lattice sites
    assert "a_M" in maps[0].get_ylabel() and "a_M" in maps[4].get_ylabel()
    # one shared colour scale for every map
    clims = {im.get_clim() for ax in maps for im in ax.images if isinstance(im, AxesImage)}
    assert sum(len(ax.images) for ax in maps) == 6
    assert len(clims) == 1
    assert max(clims.pop()) == pytest.approx(
        max(float(phase_diagram_ds["density"].max()), float(phase_diagram_ds["density_supercell"].max())))
    # depths: shallowest, two around the transition, deepest; supercell at the ends
    titles = [ax.get_title() for ax in maps]
    v = phase_diagram_ds["V"].values
    for t, depth in zip(titles[:4], plots.select_depths(v, synth.V_C)):
        assert f"{depth:.3g}" in t
    assert "shallowest" in titles[4] and "deepest" in titles[5]
    assert "3×3" in titles[4]


def test_periodic_map_orientation():
    """The map f(u, w) on fractional coordinates lands at r = u a1 + w a2 (no x/y swap)."""
    from matplotlib.figure import Figure

    n = 32
    g = np.arange(n) / n
    u, w = np.meshgrid(g, g, indexing="ij")
    f = lambda u, w: np.cos(2 * np.pi * u) + 0.5 * np.sin(2 * np.pi * w)  # noqa: E731
    lattice = np.array([[1.0, 0.0], [0.5, np.sqrt(3.0) / 2.0]])
    # exact on the grid, periodic, and bilinear in between
    np.testing.assert_allclose(plots._periodic_interp(g, g, f(u, w), u, w), f(u, w), atol=1e-12)
    np.testing.assert_allclose(plots._periodic_interp(g, g, f(u, w), u + 1, w - 2), f(u, w), atol=1e-12)
    ut, wt = np.array([0.13, 0.71, 0.98]), np.array([0.42, 0.05, 0.66])
    np.testing.assert_allclose(plots._periodic_interp(g, g, f(u, w), ut, wt), f(ut, wt), atol=0.01)
    fig = Figure()
    ax = fig.add_subplot()
    window = ((-0.5, 2.0), (-0.4, 1.4))
    image = plots._periodic_map(ax, g, g, f(u, w), lattice, window, None, "viridis", pixels=200)
    img = image.get_array()
    ny, nx = img.shape
    for x, y in [(0.3, 0.2), (1.7, 1.1), (-0.2, -0.3)]:
        i = int((y - window[1][0]) / (window[1][1] - window[1][0]) * ny)
        j = int((x - window[0][0]) / (window[0][1] - window[0][0]) * nx)
        fu, fw = np.linalg.solve(lattice.T, [x, y])
        assert img[i, j] == pytest.approx(f(fu, fw), abs=0.06)


def test_density_without_supercell(synth):
    ds = synth.make_phase_diagram(with_supercell=False)
    fig = plots.plot_density(ds)
    assert len(_main_axes(fig)) == 4 and len(_colorbars(fig)) == 1


def test_density_supercell_without_matrix_warns(phase_diagram_ds):
    ds = phase_diagram_ds.copy()
    ds.attrs.pop("supercell")
    ds["density_supercell"].attrs.pop("supercell")
    with pytest.warns(PlotWarning, match="supercell"):
        fig = plots.plot_density(ds)
    assert len(_main_axes(fig)) == 4


# ------------------------------------------------------------------ figure 4


def test_structure_factor_peak_computed_at_k(phase_diagram_ds, synth):
    peak, err = plots.structure_factor_peak(phase_diagram_ds)
    k = np.stack([phase_diagram_ds["kx"].values, phase_diagram_ds["ky"].values], -1)
    at_k = np.isclose(np.linalg.norm(k, axis=1), 4 * np.pi / 3)
    assert at_k.sum() == 6  # the six Brillouin-zone corners of the 3×3 supercell grid
    expected = phase_diagram_ds["structure_factor"].values[:, at_k].mean(axis=1)
    np.testing.assert_allclose(peak.values, expected)
    assert np.all(np.isfinite(err.values)) and np.all(err.values > 0)
    # the synthetic order parameter grows across the transition
    assert peak.values[-1] > 3 * peak.values[0]


def test_structure_factor_peak_stored(synth):
    ds = synth.make_phase_diagram(with_peak=True)
    ds["structure_factor_peak"] = ds["structure_factor_peak"] + 1.0  # distinguishable from S(k)
    peak, err = plots.structure_factor_peak(ds)
    np.testing.assert_allclose(peak.values, ds["structure_factor_peak"].values)
    np.testing.assert_allclose(err.values, 0.05)
    fig = plots.plot_structure_factor(ds)
    (x, y), = _errorbar_data(_main_axes(fig)[-1])
    np.testing.assert_allclose(y, ds["structure_factor_peak"].values)


def test_structure_factor_figure(phase_diagram_ds, synth):
    fig = plots.plot_structure_factor(phase_diagram_ds)
    main, cbars = _main_axes(fig), _colorbars(fig)
    assert len(fig.axes) == 6 and len(main) == 5 and len(cbars) == 1
    kplanes, ax_p = main[:4], main[4]
    for ax in kplanes:
        assert "a_M" in ax.get_xlabel()
        scat = [c for c in ax.collections if isinstance(c, PathCollection) and c.get_array() is not None]
        assert len(scat) == 1 and len(scat[0].get_offsets()) == phase_diagram_ds.sizes["k"] - 1  # Γ left out
        rings = [c for c in ax.collections if isinstance(c, PathCollection) and c.get_array() is None]
        assert len(rings) == 1 and len(rings[0].get_offsets()) == 6  # the moiré G vectors
    assert "a_M" in kplanes[0].get_ylabel()
    assert "S" in cbars[0].get_ylabel()
    assert "E_M" in ax_p.get_xlabel() and "S" in ax_p.get_ylabel()
    assert any("meV" in lab for lab in _child_labels(ax_p))
    (x, y), = _errorbar_data(ax_p)
    np.testing.assert_allclose(y, plots.structure_factor_peak(phase_diagram_ds)[0].values)
    assert set(_vlines_at(ax_p)) == {synth.V_C, synth.V_C_S}


# ------------------------------------------------------------------ figure 5


def test_training_figure(train_ds):
    fig = plots.plot_training(train_ds)
    main, cbars = _main_axes(fig), _colorbars(fig)
    assert len(fig.axes) == 7 and len(main) == 5 and len(cbars) == 2
    ax_e, ax_v, ax_lr, ax_a, ax_u = main
    for ax in main:
        assert "step" in ax.get_xlabel()
    assert "E_M" in ax_e.get_ylabel() and "energy" in ax_e.get_ylabel()
    assert "E_M" in ax_v.get_ylabel() and "^2" in ax_v.get_ylabel()
    assert ax_v.get_yscale() == "log"
    assert "learning rate" in ax_lr.get_ylabel() and "acceptance" in ax_a.get_ylabel()
    assert "expert" in ax_u.get_ylabel()
    n_depth = train_ds.sizes["depth"]
    assert len(ax_e.get_lines()) >= n_depth and len(ax_v.get_lines()) >= n_depth
    assert len(ax_a.get_lines()) >= n_depth  # acceptance_per_depth, in the same depth colours
    assert "per electron" in ax_e.get_ylabel()  # from the long_name that qernel.train writes
    assert any(isinstance(c, QuadMesh) for c in ax_u.collections)
    labels = [cb.get_xlabel() + cb.get_ylabel() for cb in cbars]
    assert any("E_M" in lab for lab in labels) and any("usage" in lab for lab in labels)


def test_training_missing_variables_warn(train_ds):
    ds = train_ds.drop_vars(["expert_usage", "energy_per_depth", "learning_rate"])
    with pytest.warns(PlotWarning) as record:
        fig = plots.plot_training(ds)
    messages = " ".join(str(w.message) for w in record)
    for name in ("expert_usage", "energy_per_depth", "learning_rate"):
        assert f"'{name}'" in messages
    main = _main_axes(fig)
    assert len(main) == 5 and len(_colorbars(fig)) == 1  # depth colourbar from variance_per_depth
    assert len(main[0].get_lines()) >= 1  # the batch-averaged energy instead


# ------------------------------------------------------------------ NaN and missing data


def _messages(record):
    return " ".join(str(w.message) for w in record)


@pytest.fixture
def missing_depth_ds(synth):
    """The synthetic dataset with every per-depth variable NaN at the third depth."""
    ds = synth.make_phase_diagram()
    for name in ("energy", "kinetic_energy", "potential_energy", "interaction_energy",
                 "density", "density_supercell", "structure_factor"):
        ds[name].loc[{"V": ds["V"].values[2]}] = np.nan
    return ds


def test_missing_depth_plots_with_warnings(missing_depth_ds):
    ds = missing_depth_ds
    v_bad = float(ds["V"].values[2])
    n = ds.sizes["V"]

    with pytest.warns(PlotWarning) as record:
        fig = plots.plot_interaction_energy(ds)
    assert "'interaction_energy' is NaN at V = 2.857" in _messages(record)
    (x, _), = _errorbar_data(fig.axes[0])
    assert len(x) == n - 1 and v_bad not in x
    assert len(_errorbar_data(fig.axes[1])[0][0]) == n - 2

    with pytest.warns(PlotWarning) as record:
        fig = plots.plot_energy_components(ds)
    for name in ("energy", "kinetic_energy", "potential_energy", "interaction_energy"):
        assert f"'{name}' is NaN" in _messages(record)
    assert all(len(_errorbar_data(ax)[0][0]) == n - 1 for ax in fig.axes)

    with pytest.warns(PlotWarning) as record:
        fig = plots.plot_density(ds)
    assert "'density' is NaN" in _messages(record) and "'density_supercell' is NaN" in _messages(record)
    assert len(_main_axes(fig)) == 6
    for ax in _main_axes(fig):
        assert f"{v_bad:.3g} " not in ax.get_title()

    with pytest.warns(PlotWarning) as record:
        fig = plots.plot_structure_factor(ds)
    assert "'structure_factor' is NaN" in _messages(record)
    (x, _), = _errorbar_data(_main_axes(fig)[-1])
    assert len(x) == n - 1


def test_cli_missing_depth_and_no_train_file(missing_depth_ds, tmp_path):
    """End to end through the CLI entry: NaN depth everywhere and no train.nc still plot."""
    path = tmp_path / "phase_diagram.nc"
    missing_depth_ds.to_netcdf(path)
    out = tmp_path / "cli"
    with pytest.warns(PlotWarning) as record:
        rc = plots.main([str(path), "--train", str(tmp_path / "missing.nc"), "--out", str(out),
                         "--dpi", "150", "--formats", "png"])
    assert rc == 0
    messages = _messages(record)
    for name in ("interaction_energy", "density", "structure_factor", "train"):
        assert f"'{name}'" in messages or f"{name} " in messages
    assert "missing.nc not found" in messages
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}.png" for n in FIGURES if n != "training")
    for p in out.iterdir():
        _check_png(p, min_dpi=150)


def test_plot_all_without_train_path(phase_diagram_ds, tmp_path, monkeypatch):
    """train_path=None: the phase-diagram figures only (saving stubbed out: drawing is tested above)."""
    path = tmp_path / "phase_diagram.nc"
    phase_diagram_ds.to_netcdf(path)
    saved = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, out, name, **kw: saved.append(name) or [out / name])
    with pytest.warns(PlotWarning, match="'training' figure is skipped"):
        paths = plots.plot_all(path, None, tmp_path / "out")
    assert saved == [n for n in FIGURES if n != "training"] and len(paths) == 4


def test_nan_stderr_plots_with_warning(phase_diagram_ds):
    ds = phase_diagram_ds.copy(deep=True)
    ds["interaction_energy_stderr"][3] = np.nan
    with pytest.warns(PlotWarning, match="'interaction_energy_stderr' is NaN"):
        fig = plots.plot_interaction_energy(ds)
    (x, y), = _errorbar_data(fig.axes[0])
    assert len(x) == ds.sizes["V"]  # the point stays, only its bar is gone
    fig.canvas.draw()


def test_missing_stderr_variable_warns(phase_diagram_ds):
    ds = phase_diagram_ds.drop_vars("kinetic_energy_stderr")
    with pytest.warns(PlotWarning, match="'kinetic_energy_stderr' is missing"):
        fig = plots.plot_energy_components(ds)
    assert len(_errorbar_data(fig.axes[1])[0][0]) == ds.sizes["V"]


def test_energy_unit_unknown_or_from_coordinate(synth):
    ds = synth.make_phase_diagram(energy_unit=float("nan"))
    fig = plots.plot_interaction_energy(ds)
    assert _child_labels(fig.axes[0]) == []  # no meV axes when E_M in meV is unknown
    assert "E_M" in fig.axes[0].get_ylabel()

    ds = synth.make_phase_diagram()
    del ds.attrs["energy_unit_meV"]  # still known through the V_meV coordinate
    fig = plots.plot_interaction_energy(ds)
    assert sum("meV" in lab for lab in _child_labels(fig.axes[0])) == 2


def test_aggregate_style_dataset(synth):
    """The names `qernel.aggregate` writes: supercell_density + config attr, uncorrected S(k)."""
    ds = synth.make_phase_diagram(aggregate_style=True)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        fig_d = plots.plot_density(ds)
        fig_s = plots.plot_structure_factor(ds)
    assert _no_plot_warnings(record) == []
    assert len(_main_axes(fig_d)) == 6 and "3×3" in _main_axes(fig_d)[4].get_title()
    main, (cbar,) = _main_axes(fig_s), _colorbars(fig_s)
    assert "rho" in cbar.get_ylabel()  # the uncorrected ⟨|ρ_k|²⟩/N is shown
    # the colour scale is set by the non-Bragg k: the K peaks, not the moiré G peaks
    k = np.stack([ds["kx"].values, ds["ky"].values], -1)
    is_g = plots._moire_g_mask(k)
    assert is_g.sum() == 6
    scat = next(c for c in main[-2].collections if isinstance(c, PathCollection) and c.get_array() is not None)
    s_deep = ds["structure_factor_uncorrected"].isel(V=-1).values
    assert scat.get_clim()[1] == pytest.approx(max(
        float(ds["structure_factor_uncorrected"].sel(V=v).values[~is_g].max())
        for v in plots.select_depths(ds["V"].values, synth.V_C_S)))
    assert s_deep[is_g].max() > scat.get_clim()[1]
    (x, y), = _errorbar_data(main[-1])
    np.testing.assert_allclose(y, ds["structure_factor_peak"].values)
    # the depth-grid interval of each estimate (systematic) is drawn next to the ±stderr band
    lo, hi = plots.transition_interval(ds, "structure_factor")
    assert lo < synth.V_C_S < hi
    spans = _span_extents(main[-1])  # S band, its grid interval, and the E_int band
    assert len(spans) == 3
    assert (pytest.approx(synth.V_C_S - synth.V_C_S_ERR), pytest.approx(synth.V_C_S + synth.V_C_S_ERR)) in spans
    assert (pytest.approx(lo), pytest.approx(hi)) in spans
    fig = plots.plot_interaction_energy(ds)
    lo, hi = plots.transition_interval(ds, "interaction")
    for ax in fig.axes:
        assert len(_span_extents(ax)) == 2 and (pytest.approx(lo), pytest.approx(hi)) in _span_extents(ax)
    assert any("grid interval" in t.get_text() for t in fig.legends[0].get_texts())


# ------------------------------------------------------------------ Hartree–Fock beside VMC


def _with_hf(ds, nan_at=None):
    ds = ds.copy()
    v = ds["V"].values
    for name, scale in (("hf_energy", 1.0), ("hf_kinetic_energy", 0.3), ("hf_potential_energy", -0.5),
                        ("hf_interaction_energy", 0.2), ("hf_structure_factor_peak", 0.1)):
        vals = scale * (1.0 + 0.1 * v)
        if nan_at is not None:
            vals[nan_at] = np.nan
        ds[name] = ("V", vals)
    if nan_at is not None:
        ds["hf_energy"].attrs["nan_reason"] = "V=test: not converged after 1 iterations"
    return ds


def _hf_line(ax):
    lines = [ln for ln in ax.get_lines() if ln.get_label().startswith(plots.HF_LABEL)]
    assert len(lines) == 1, [ln.get_label() for ln in ax.get_lines()]
    return np.asarray(lines[0].get_xdata(), float), np.asarray(lines[0].get_ydata(), float), lines[0]


def test_hartree_fock_drawn_beside_vmc(phase_diagram_ds):
    ds = _with_hf(phase_diagram_ds)
    v = ds["V"].values
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        top = plots.plot_interaction_energy(ds).axes[0]
        comps = plots.plot_energy_components(ds).axes[:4]
        ax_p = _main_axes(plots.plot_structure_factor(ds))[4]
    assert not _no_plot_warnings(record)
    x, y, line = _hf_line(top)
    np.testing.assert_allclose(x, v)
    np.testing.assert_allclose(y, ds["hf_interaction_energy"].values)
    assert line.get_linestyle() == "--"
    assert plots.HF_LABEL in top.get_legend_handles_labels()[1]
    for ax, name in zip(comps, ("hf_energy", "hf_kinetic_energy", "hf_potential_energy", "hf_interaction_energy")):
        lines = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--" and len(ln.get_xdata()) == len(v)]
        assert any(np.allclose(ln.get_ydata(), ds[name].values) for ln in lines), name
    x, y, _ = _hf_line(ax_p)
    np.testing.assert_allclose(y, ds["hf_structure_factor_peak"].values)


def test_hartree_fock_nan_depths_left_out_with_the_reason(phase_diagram_ds):
    ds = _with_hf(phase_diagram_ds, nan_at=[0, 3])
    with pytest.warns(PlotWarning, match="hf_interaction_energy' is NaN .*not converged after 1 iterations"):
        top = plots.plot_interaction_energy(ds).axes[0]
    x, _, _ = _hf_line(top)
    np.testing.assert_allclose(x, np.delete(ds["V"].values, [0, 3]))


def test_without_hartree_fock_nothing_is_drawn_or_warned(phase_diagram_ds):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        top = plots.plot_interaction_energy(phase_diagram_ds).axes[0]
    assert not [ln for ln in top.get_lines() if ln.get_label().startswith(plots.HF_LABEL)]
    assert not _no_plot_warnings(record)
