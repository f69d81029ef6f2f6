"""The benchmark scripts stay runnable: their documented command lines parse, their helpers are right.

(The benchmarks themselves run on demand — `make bench`, benchmarks/README.md — never here.)
"""

import importlib.util
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _script_args(text: str, script: str) -> list[list[str]]:
    """The arguments of every call of benchmarks/<script> in a shell text (continuations joined)."""
    text = text.replace("\\\n", " ")
    calls = []
    for line in text.splitlines():
        if f"benchmarks/{script}" in line and not line.lstrip().startswith("#"):
            while re.search(r"\([^()]*\)", line):  # drop $(...) / make's $$(...), innermost first
                line = re.sub(r"\([^()]*\)", "", line)
            words = shlex.split(line, posix=True)
            calls.append(words[words.index(next(w for w in words if w.endswith(script))) + 1:])
    return calls


@pytest.mark.parametrize("source", ["benchmarks/gpu_check.sh", "Makefile", "benchmarks/README.md"])
def test_documented_engine_command_lines_parse(source):
    parser = _load("bench_engine").build_parser()
    calls = _script_args((ROOT / source).read_text(), "bench_engine.py")
    assert calls, f"{source} names no bench_engine.py call"
    for args in calls:
        args = [re.sub(r"\$.*", "x", a) for a in args]  # shell substitutions in --out
        parser.parse_args(args)  # exits (SystemExit) on an unknown or malformed option


@pytest.mark.parametrize("source", ["benchmarks/gpu_check.sh", "benchmarks/README.md"])
def test_documented_paper_command_lines_parse(source):
    parser = _load("bench_paper").build_parser()
    calls = _script_args((ROOT / source).read_text(), "bench_paper.py")
    assert calls, f"{source} names no bench_paper.py call"
    for args in calls:
        parser.parse_args([re.sub(r"\$.*", "x", a) for a in args])


def test_conditioning_helpers():
    bench = _load("bench_conditioning")
    series = np.concatenate([np.linspace(0.0, -1.0, 50), np.full(50, -1.0)])
    # step t (1-based) is series[t - 1] = -(t - 1)/49 up to step 50: the mean over the 10 steps
    # ending at step t is -(2t - 11)/98, first <= -0.51 at t = 31 (-0.520; t = 30 gives -0.500)
    first = bench.steps_to_reach(series, -0.51, 10)
    assert first == 31
    first = int(first)
    assert np.mean(series[first - 10:first]) <= -0.51 < np.mean(series[first - 11:first - 1])
    assert np.isnan(bench.steps_to_reach(series, -2.0, 10))
    mean, err = bench.final_energy(np.r_[np.zeros(100), -1.0 + 0.1 * np.random.default_rng(0).normal(size=300)])
    assert mean == pytest.approx(-1.0, abs=0.03) and 0.0 < err < 0.03  # the last quarter only
    assert bench.build_parser().parse_args(["--out", "x"]).depths == 8


@pytest.mark.parametrize("source", ["benchmarks/README.md"])
def test_documented_workflow_command_lines_parse(source):
    parser = _load("bench_workflow").build_parser()
    calls = _script_args((ROOT / source).read_text(), "bench_workflow.py")
    assert calls, f"{source} names no bench_workflow.py call"
    for args in calls:
        parser.parse_args(args)


def test_documented_hartree_fock_command_lines_parse():
    parser = _load("bench_hartree_fock").build_parser()
    calls = _script_args((ROOT / "benchmarks/README.md").read_text(), "bench_hartree_fock.py")
    assert calls, "benchmarks/README.md names no bench_hartree_fock.py call"
    for args in calls:
        parser.parse_args(args)
