"""The `qernel` command line: every step of the workflow, runnable by hand.

    qernel pretrain    --config F --sweep S --out-dir DIR [--model-out FILE]
    qernel evaluate    --config F --sweep S --depth V --checkpoint FILE --out FILE
    qernel observables --config F --sweep S [--depth V] --evaluation FILE --out FILE
    qernel aggregate   --config F --sweep S --out FILE OBSERVABLES [OBSERVABLES ...]
    qernel plot        --config F --sweep S --phase-diagram FILE [--train FILE] --out-dir DIR
    qernel bands       --config F --sweep S [--depth V ...] [--levels N] [--shells X]
    qernel info        --config F --sweep S [--no-model] | --list

`--depth` takes a depth's path label in the config's units ("2.500"; a number is rounded to
the label). Every command logs at start (to stderr) the qernel version and git commit, the JAX
devices (count and kind) and the resolved sweep. Bad input — an unknown sweep or depth, a
missing input file, an invalid config — ends with a one-line error naming the problem and exit
status 2. The heavy modules are imported inside each command, so `qernel --help`, `bands` and
`info` work whatever else is installed. A run that stops (a failed step, an unwritable file)
ends with one line too, exit status 1 (QERNEL_TRACEBACK=1 shows the traceback).

Checkpoints: `pretrain` keeps one set of resume checkpoints per run-defining config
(`qernel.checkpoint.claim`): OUT_DIR/checkpoints/ holds the current config's, the sets of other
configs wait in OUT_DIR/checkpoints.<hash>/ and are resumed when their config comes back.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import zlib
from pathlib import Path

from qernel import __version__
from qernel.cache import use_compilation_cache
from qernel.config import DEFAULT_CONFIG_PATH, STAGE_KEYS, ConfigError, list_sweeps, load_sweep

log = logging.getLogger("qernel")

#: Exit status for bad input (argparse uses the same for bad arguments).
EXIT_BAD_INPUT = 2
#: Exit status for a run that stopped (a failed step, a file that cannot be written, ...).
EXIT_FAILED = 1
#: Set this environment variable to 1 to get the traceback of a stop instead of one line.
TRACEBACK_ENV = "QERNEL_TRACEBACK"


class CLIError(Exception):
    """Bad input to a command: reported as one line, exit status 2."""


# -- helpers --------------------------------------------------------------------------------
def _existing(path, what: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise CLIError(f"{what} {str(p)!r} does not exist")
    return p


def _configs(args) -> list[str]:
    """The --config files of a command (repeatable; default config/config.yaml)."""
    config = getattr(args, "config", None)
    if not config:
        return [DEFAULT_CONFIG_PATH]
    return [config] if isinstance(config, (str, os.PathLike)) else list(config)


def _config_label(args) -> str:
    return " + ".join(map(str, _configs(args)))


def _load(args, resolve: bool = True, stage: str | None = None):
    try:
        return load_sweep(_configs(args), args.sweep, resolve=resolve, stage=stage)
    except ConfigError as e:
        raise CLIError(str(e) if not e.key else f"{_config_label(args)}: {e}") from None


def _log_start(args, sweep, resolve: bool = True, stage: str | None = None) -> None:
    """Log what this job runs with: version, commit, devices, the resolved sweep (with a stage,
    only the parts that stage reads: its config snapshot holds no others, whose defaults would
    only mislead)."""
    import jax

    from qernel.io import git_commit
    from qernel.parallel import device_summary

    log.info("qernel %s (git %s): %s", __version__, git_commit(), " ".join(sys.argv[1:]) or args.command)
    n_devices, kind = device_summary()
    log.info("devices: %d × %s; process %d", n_devices, kind, jax.process_index())
    summary = sweep.summary(resolve=resolve)
    log.info("sweep %s from %s (config hash %s)", sweep.name, _config_label(args), summary["config_hash"][:12])
    if stage is not None:
        summary = {k: v for k, v in summary.items() if k in ("sweep", "config_hash") + STAGE_KEYS[stage]}
    log.info("resolved sweep: %s", json.dumps(summary, default=str))
    for note in sweep.notes if resolve else ():
        log.info("adapted: %s", note)


def provenance(sweep, **extra) -> dict:
    """Global attrs for the outputs of this sweep (DESIGN.md §4, `qernel.io.provenance_attrs`):
    config = the resolved parts of the sweep that the config file gave (in the workflow: the parts
    this stage reads), config_hash = their `qernel.config.config_hash`; `extra` added."""
    from qernel.io import provenance_attrs

    attrs = provenance_attrs(sweep.given, sweep.name, sweep.energy_unit_meV)
    attrs.update(extra)
    return attrs


def depth_seed(sweep, label: str) -> int:
    """A seed per depth that does not change when other depths join the grid."""
    return (sweep.seed * 1_000_003 + zlib.crc32(label.encode())) % (2**31 - 1)


def _depth(sweep, value: str) -> tuple[str, float]:
    try:
        index = sweep.depth_index(value)
    except ConfigError as e:
        raise CLIError(str(e)) from None
    return sweep.depth_labels[index], float(sweep.depths[index])


def _wavefunction(sweep):
    from qernel.model import make_wavefunction

    return make_wavefunction(sweep.system, sweep.model, cond_range=sweep.cond_range,
                             condition_names=sweep.conditions.names)


# -- commands -------------------------------------------------------------------------------
def cmd_pretrain(args) -> int:
    """`qernel pretrain`: train the sweep's model over all its depths; returns 0.

    Raises CLIError for an invalid config or an unknown sweep.
    """
    sweep = _load(args, stage="pretrain")
    _log_start(args, sweep, stage="pretrain")
    from qernel import checkpoint
    from qernel.atomic import copy_atomic
    from qernel.config import RUN
    from qernel.train import run_training

    out_dir = Path(args.out_dir)
    model_out = Path(args.model_out) if args.model_out else out_dir / "model.msgpack"
    out_dir.mkdir(parents=True, exist_ok=True)
    # one checkpoint set per run-defining config: another config's set is kept aside, never lost
    checkpoint.claim(out_dir / "checkpoints", sweep.run_hash("pretrain"), sweep.stage_config("pretrain", (RUN,)),
                     what="pretraining checkpoints")
    t0 = time.time()
    result = run_training(sweep.system, _wavefunction(sweep), sweep.conditions, sweep.pretrain, out_dir,
                          seed=sweep.seed, attrs=provenance(sweep))
    log.info("pretraining finished in %.1f s", time.time() - t0)
    if Path(result.model_path).resolve() != model_out.resolve():
        copy_atomic(result.model_path, model_out)
    log.info("final model: %s; training log: %s", model_out, result.train_nc)
    return 0


def cmd_evaluate(args) -> int:
    """`qernel evaluate`: sample the pretrained model at one depth → an evaluation file; returns 0.

    Raises CLIError for an invalid config or an unknown sweep or depth, a missing checkpoint file, or
    a checkpoint that cannot be used (corrupt, or for another model or system: ModelCheckpointError).
    """
    sweep = _load(args, stage="evaluate")
    label, depth = _depth(sweep, args.depth)
    ckpt = _existing(args.checkpoint, "checkpoint")
    _log_start(args, sweep, stage="evaluate")
    log.info("depth %s %s = %.6f E_M", label, sweep.config_units, depth)
    from qernel.evaluate import ModelCheckpointError, evaluate_depth
    from qernel.train import finetune

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        point = sweep.conditions.point(sweep.depth_labels.index(label))  # the grid point's condition vector
        evaluate_depth(sweep.system, _wavefunction(sweep), ckpt, point, sweep.evaluate, out,
                       seed=depth_seed(sweep, label), attrs=provenance(sweep, depth_label=label), finetune=finetune)
    except ModelCheckpointError as err:
        raise CLIError(str(err)) from None
    log.info("wrote %s", out)
    return 0


def cmd_observables(args) -> int:
    """`qernel observables`: one depth's evaluation file → its observables file; returns 0.

    Raises CLIError for an invalid config or an unknown sweep or depth, or a missing evaluation file.
    """
    sweep = _load(args, stage="analysis")
    label = _depth(sweep, args.depth)[0] if args.depth is not None else None
    evaluation = _existing(args.evaluation, "evaluation file")
    _log_start(args, sweep, stage="analysis")
    from qernel.observables import compute_observables

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    extra = {"depth_label": label} if label is not None else {}
    compute_observables(evaluation, out, attrs=provenance(sweep, **extra))
    log.info("wrote %s", out)
    return 0


def cmd_aggregate(args) -> int:
    """`qernel aggregate`: the per-depth observables files → the phase diagram; returns 0.

    Raises CLIError for an invalid config or an unknown sweep, or a missing observables file.
    """
    sweep = _load(args, stage="analysis")
    inputs = [_existing(p, "observables file") for p in args.observables]
    _log_start(args, sweep, stage="analysis")
    from qernel.aggregate import aggregate

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    hf = Path(args.hartree_fock) if getattr(args, "hartree_fock", None) else None
    if hf is not None and not hf.is_file():
        log.warning("Hartree-Fock file %s does not exist: hf_* are NaN", hf)
    aggregate(inputs, out, attrs=provenance(sweep), seed=sweep.seed, hartree_fock=hf)
    log.info("wrote %s from %d depths", out, len(inputs))
    return 0


def cmd_hartree_fock(args) -> int:
    """The Hartree–Fock reference at every depth of the sweep → one netCDF over V (qernel.reference).

    Raises CLIError for an invalid config or an unknown sweep, or bad `hartree_fock` options.
    """
    sweep = _load(args, resolve=False, stage="analysis")
    from qernel.reference import HFOptions, hartree_fock_sweep

    try:
        options = HFOptions.from_dict(sweep.raw.get("hartree_fock"), key=f"sweeps.{sweep.name}.hartree_fock")
    except (TypeError, ValueError) as e:
        raise CLIError(f"{args.config}: {e}") from None
    _log_start(args, sweep, resolve=False, stage="analysis")
    log.info("hartree_fock options: %s", options)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # seed 0, not the sweep's seed (which is the VMC's): the reference is a function of the physics
    # and the hartree_fock options alone, and the model's HF orbital prior (seed 0) reads its solutions
    ds = hartree_fock_sweep(sweep.system, sweep.depths, sweep.depth_labels, options, seed=0, workers=args.workers)
    from qernel.io import write_netcdf

    write_netcdf(ds, out, provenance(sweep))
    log.info("wrote %s (%s)", out, ds.attrs["hf_status"])
    return 0


def cmd_plot(args) -> int:
    """`qernel plot`: the figures of a phase diagram (and training log) → OUT_DIR; returns 0.

    Raises CLIError for an invalid config or an unknown sweep, or a missing phase-diagram file.
    """
    sweep = _load(args, stage="analysis")
    phase_diagram = _existing(args.phase_diagram, "phase diagram")
    train = Path(args.train) if args.train else None
    if train is not None and not train.is_file():
        log.warning("training log %s does not exist: the training figure is skipped", train)
    _log_start(args, sweep, stage="analysis")
    from qernel.plots import plot_all

    written = plot_all(phase_diagram, train, Path(args.out_dir))
    for path in written:
        log.info("wrote %s", path)
    return 0


def cmd_bands(args) -> int:
    """`qernel bands`: print the exact non-interacting levels at the sweep's depths; returns 0.

    Raises CLIError for an invalid config or an unknown sweep or depth.
    """
    sweep = _load(args, resolve=False)
    labels = [_depth(sweep, d)[0] for d in args.depth] if args.depth else list(sweep.depth_labels)
    _log_start(args, sweep, resolve=False)
    from qernel import bands as qbands

    s = sweep.system
    shells = qbands.DEFAULT_SHELLS if args.shells is None else args.shells
    n_max = max(s.n_up, s.n_down)
    n_levels = args.levels if args.levels is not None else n_max + 2
    e_m = sweep.energy_unit_meV

    def mev(x):
        return f"{x * e_m:12.6f}" if e_m is not None else f"{'n/a':>12}"

    rows = [list(r) for r in s.supercell.matrix]
    print("Exact non-interacting levels (qernel.bands, the λ = 0 reference), "
          f"plane-wave cutoff {shells:g} shells")
    print(f"sweep {sweep.name}: supercell {rows} ({s.supercell.n_cells} cells), N = {s.n_electrons} "
          f"({s.n_up} up, {s.n_down} down), filling {s.filling:.6g}, φ = {s.phase_deg:g}°, "
          f"E_M = {'%.6g meV' % e_m if e_m is not None else 'n/a (units: moire without energy_unit_meV)'}")
    for label in labels:
        index = sweep.depth_index(label)
        depth = float(sweep.depths[index])
        gs = qbands.noninteracting_ground_state(s, depth, shells=shells, n_bands=max(n_levels, n_max))
        flat = sorted(((float(e), ik, ib) for ik, row in enumerate(gs.bands.energies) for ib, e in enumerate(row)),
                      key=lambda t: (round(t[0], 12), t[1], t[2]))
        up, down = set(gs.occupied_up), set(gs.occupied_down)
        print()
        print(f"V = {label} {sweep.config_units}" + (f" = {depth:.6f} E_M" if sweep.units == "physical" else
                                                     (f" = {depth * e_m:.6f} meV" if e_m is not None else "")))
        print(f"  {'#':>4}  {'k-point (kx, ky) [1/a_M]':>26}  {'band':>4}  {'E (E_M)':>12}  {'E (meV)':>12}  occupied")
        for n, (e, ik, ib) in enumerate(flat[:n_levels], start=1):
            k = gs.bands.kpoints[ik]
            occ = ("↑" if (ik, ib) in up else "") + ("↓" if (ik, ib) in down else "")
            print(f"  {n:>4}  ({k[0]:+11.6f}, {k[1]:+11.6f})  {ib:>4}  {e:12.6f}  {mev(e)}  {occ}")
        per = gs.energy / s.n_electrons
        shell = "closed shell" if gs.closed_shell else "open shell: the highest occupied level is degenerate"
        known = e_m is not None
        print(f"  N-electron energy: total {gs.energy:.6f} E_M" + (f" = {gs.energy * e_m:.6f} meV" if known else "")
              + f"; per electron {per:.6f} E_M" + (f" = {per * e_m:.6f} meV" if known else " (meV: n/a)")
              + f"  ({shell})")
    return 0


def cmd_info(args) -> int:
    """`qernel info`: print the resolved sweep and model summary (--list: the sweep names); returns 0.

    Raises CLIError for an invalid config or an unknown sweep.
    """
    if args.list:
        try:
            names = list_sweeps(_configs(args))
        except ConfigError as e:
            raise CLIError(str(e) if not e.key else f"{_config_label(args)}: {e}") from None
        print("\n".join(names))
        return 0
    sweep = _load(args)
    _log_start(args, sweep)
    import yaml

    print(yaml.safe_dump(json.loads(json.dumps(sweep.summary(), default=str)), sort_keys=False,
                         default_flow_style=None, width=100, allow_unicode=True).rstrip())
    if args.no_model:
        return 0
    try:
        from qernel.model import make_wavefunction  # noqa: F401
    except ModuleNotFoundError as e:
        print(f"model: not available ({e})")
        return 0
    import jax

    from qernel.model import ModelConfig, make_wavefunction

    model = ModelConfig.from_spec(sweep.model)
    if model.orbital_prior and model.prior_source != "bands":
        # the summary and the count need shapes only: the Hartree–Fock orbitals (minutes) are solved
        # when training starts, not for this summary
        print(f"orbital prior: {model.prior_source} orbitals at {model.prior_anchors} anchor depths, solved when "
              "pretraining starts (the summary below shows the model built with band orbitals; same parameters)")
        model = model.with_band_prior()
    wf = make_wavefunction(sweep.system, model, cond_range=sweep.cond_range, condition_names=sweep.conditions.names)
    key = jax.random.PRNGKey(sweep.seed)
    try:  # shapes suffice for the summary and the count: no need to run the initialisation
        params = jax.eval_shape(wf.init, key)
        summary, n_params = wf.summary(params), wf.n_params(params)
    except Exception:  # noqa: BLE001 (a summary that needs values: initialise for real)
        params = wf.init(key)
        summary, n_params = wf.summary(params), wf.n_params(params)
    print("model summary:")
    print(summary)
    print(f"parameters: {n_params}")
    from qernel import memory

    est = memory.sweep_estimate(sweep)
    gpus = int(sweep.resources["pretrain"].get("gpu", 0) or 0)
    print(f"training step (qernel.memory model, per device of {max(gpus, 1)}): {est.describe()}")
    print(f"GPU memory asked: {memory.gpu_memory_gb(sweep):g} GB per GPU (resources.pretrain.gpu_memory_gb); "
          f"the step may plan {memory.GPU_MEMORY_MARGIN:.0%} of it")
    return 0


# -- parser ---------------------------------------------------------------------------------
def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", action="append", metavar="FILE",
                   help=f"config file (YAML) with the sweeps (default: {DEFAULT_CONFIG_PATH}); repeat it to merge "
                        "several, each key by key over the ones before (the workflow passes a stage's snapshots "
                        "results/<sweep>/config/<stage>.yaml and <stage>.compute.yaml)")
    p.add_argument("--sweep", default="demo", metavar="NAME", help="sweep name in the config (default: demo)")
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qernel",
        description="QERNEL: one conditioned neural wavefunction for moiré phase-diagram sweeps. Each "
                    "subcommand is one step of the Snakemake workflow and can be run by hand. Energies in "
                    "E_M (and meV where E_M is known); depths are given by their labels in the config's units.",
        epilog="Bad input (unknown sweep or depth, missing input file, invalid config) exits with status 2.")
    parser.add_argument("--version", action="version", version=f"qernel {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("pretrain", help="pretrain the shared model over all depths of a sweep",
                       description="Pretrain the conditioned model over every depth of the sweep. Writes "
                                   "OUT_DIR/train.nc, OUT_DIR/train.log, resume checkpoints in "
                                   "OUT_DIR/checkpoints/ (a rerun resumes from the newest) and the final model.")
    _common(p)
    p.add_argument("--out-dir", required=True, metavar="DIR",
                   help="output folder (results/<sweep>/pretrain): train.nc, train.log, checkpoints/")
    p.add_argument("--model-out", metavar="FILE", help="final model file (default: OUT_DIR/model.msgpack)")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("evaluate", help="evaluate (and fine-tune) the model at one depth",
                       description="Evaluate the pretrained model at one depth V (fine-tuning first if the "
                                   "sweep's evaluate options ask for it); writes evaluation.nc.")
    _common(p)
    p.add_argument("--depth", required=True, metavar="V",
                   help="depth label in the config's units, e.g. 2.500 (E_M; meV with units: physical)")
    p.add_argument("--checkpoint", required=True, metavar="FILE",
                   help="the pretrained model (results/<sweep>/pretrain/model.msgpack)")
    p.add_argument("--out", required=True, metavar="FILE", help="output evaluation.nc")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("observables", help="observables of one depth from its evaluation",
                       description="Energies (with blocking errors), density and structure factor of one "
                                   "depth from its evaluation.nc; writes observables.nc.")
    _common(p)
    p.add_argument("--depth", metavar="V", help="depth label (checked against the sweep; optional)")
    p.add_argument("--evaluation", required=True, metavar="FILE", help="input evaluation.nc")
    p.add_argument("--out", required=True, metavar="FILE", help="output observables.nc")
    p.set_defaults(func=cmd_observables)

    p = sub.add_parser("aggregate", help="combine every depth's observables into the phase diagram",
                       description="Combine the observables.nc files of a sweep into phase_diagram.nc "
                                   "(one dataset over V, with the transition estimate).")
    _common(p)
    p.add_argument("--out", required=True, metavar="FILE", help="output phase_diagram.nc")
    p.add_argument("--hartree-fock", metavar="FILE",
                   help="the sweep's hartree_fock.nc (qernel hartree-fock), merged as hf_* (optional)")
    p.add_argument("observables", nargs="+", metavar="OBSERVABLES", help="input observables.nc files")
    p.set_defaults(func=cmd_aggregate)

    p = sub.add_parser("hartree-fock", help="the symmetry-broken Hartree-Fock reference at every depth",
                       description="Unrestricted Hartree-Fock (band, random and crystal-seeded starts, the "
                                   "lowest converged kept) at every depth of the sweep, with the sweep's "
                                   "hartree_fock options; writes one netCDF over V (qernel.reference). A "
                                   "depth that does not converge is NaN with its reason in the attr hf_status.")
    _common(p)
    p.add_argument("--out", required=True, metavar="FILE", help="output hartree_fock.nc")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="solve N depths at once, in N processes (default 1)")
    p.set_defaults(func=cmd_hartree_fock)

    p = sub.add_parser("plot", help="draw the figures of a sweep",
                       description="Draw the figures (PNG and PDF) of a sweep from its phase diagram and "
                                   "training log.")
    _common(p)
    p.add_argument("--phase-diagram", required=True, metavar="FILE", help="input phase_diagram.nc")
    p.add_argument("--train", metavar="FILE",
                   help="input train.nc (training curves; without it that figure is skipped)")
    p.add_argument("--out-dir", required=True, metavar="DIR", help="output folder of the figures")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("bands", help="print the exact non-interacting levels and N-electron energy",
                       description="Print, for each depth, the lowest single-particle levels at the "
                                   "supercell k-points (exact, plane waves) and the non-interacting "
                                   "N-electron energy, total and per electron, in E_M and meV.")
    _common(p)
    p.add_argument("--depth", action="append", metavar="V",
                   help="depth label (repeatable; default: every depth of the sweep)")
    p.add_argument("--levels", type=int, metavar="N",
                   help="how many of the lowest levels to list (default: electrons per spin + 2)")
    p.add_argument("--shells", type=float, metavar="X",
                   help="plane-wave cutoff |G| <= X·|b| (default: qernel.bands.DEFAULT_SHELLS)")
    p.set_defaults(func=cmd_bands)

    p = sub.add_parser("info", help="print the resolved sweep, the model summary and parameter count",
                       description="Print the resolved sweep (system, depths in E_M and config units, model, "
                                   "pretrain and evaluate options with defaults, resources, config hash) and, "
                                   "when the model is available, its summary and parameter count.")
    _common(p)
    p.add_argument("--no-model", action="store_true", help="do not build the model")
    p.add_argument("--list", action="store_true", help="list the sweeps of the config and exit")
    p.set_defaults(func=cmd_info)
    return parser


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if isinstance(error, (CLIError, ConfigError)) else f"{type(error).__name__}: {text}"


def main(argv=None) -> int:
    """Run one command; returns the exit status. Every stop is one line on stderr ("qernel CMD:
    error: ..."): status 2 for bad input (CLIError, ConfigError), 1 for any other error (the
    traceback too when the environment sets QERNEL_TRACEBACK=1)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    use_compilation_cache()  # before the command imports JAX (qernel.cache)
    # the project's messages at INFO; other libraries' only from WARNING up (matplotlib's PDF
    # backend has fontTools log ~600 INFO lines of font subsetting per `qernel plot`)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s", datefmt="%Y-%m-%d %H:%M:%S",
                        force=True)
    log.setLevel(logging.WARNING if args.quiet else logging.INFO)
    try:
        return int(args.func(args) or 0)
    except (CLIError, ConfigError) as e:
        print(f"qernel {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"qernel {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 (a runtime stop: one line, the traceback only on request)
        if os.environ.get(TRACEBACK_ENV) == "1":
            raise
        print(f"qernel {args.command}: error: {_one_line(e)} (set {TRACEBACK_ENV}=1 for the traceback)",
              file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
