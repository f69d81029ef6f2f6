"""The workflow through a real SLURM scheduler (issue 9), not only dry runs.

Stands up a one-node SLURM cluster on this machine (tests/slurm/cluster.sh:
Debian's slurm-wlm + munge, installed with apt-get when missing) and runs the
tiny sweep with ``snakemake --profile slurm`` -- the bare profile name, from
the root of a copy of the workflow -- plus the CI override layered over it
(tests/slurm/profile, merged by tests/slurm/layer_profile.py):

1. reference: the same sweep run locally (``--cores 2``; in the background
   while SLURM run 1 goes on, to save wall time);
2. SLURM run 1, from scratch, with one job (``observables`` at one depth) made
   to fail on purpose (tests/slurm/inject/sitecustomize.py) and --keep-going:
   every other job goes through sbatch (the plugin's ``sbatch call:`` lines are
   captured), none asks for a GPU, they complete; Snakemake reports the failed
   job with its SLURM log path, and that log exists;
3. SLURM run 2, fixed: exactly what is missing runs (the failed job and the
   per-sweep jobs downstream of it), finished outputs are not touched; the
   final files are the same set as the local run's and a dry run has nothing
   left to do.

It needs root (slurmd, apt-get). When it cannot run here it is skipped with the
reason printed and issued as a warning; ``QERNEL_SLURM_TEST=1`` turns such a
skip into a failure (for CI, where it must run), ``QERNEL_SLURM_TEST=0``
disables it. ``QERNEL_SLURM_WORKFLOW=toy|project`` picks the workflow (default:
the project's once it is complete, else the toy stand-in tests/slurm/toy).
``QERNEL_SLURM_REPORT=FILE`` also writes the sbatch lines and wall times there.
"""

from __future__ import annotations

import collections
import importlib.util
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CLUSTER = HERE / "cluster.sh"
LAYER = HERE / "layer_profile.py"
OVERRIDE = HERE / "profile"
INJECT = HERE / "inject"
VENV_BIN = Path(sys.executable).parent
PARTITION = "debug"  # the test cluster's partition, handed to the profile via the env
RUN_TIMEOUT = 540  # seconds per snakemake invocation

pytestmark = pytest.mark.slow


# --------------------------------------------------------------------------- #
# what to run
# --------------------------------------------------------------------------- #
@dataclass
class Target:
    name: str
    src: Path  # directory holding the workflow (the repo root for the project)
    copy: list[str]  # entries of src copied into each run directory
    config: Path  # the tiny sweep, passed with --configfile
    prog: str  # what the rules run: `python -m PROG` or a script PROG
    sweep: str
    depths: list[str]  # depth labels
    fail_rule: str
    fail_depth: str
    fail_pattern: str  # substring of the failing job's command line
    outputs: tuple[str, ...]  # folders compared with the local run
    extra_path: list[str] = field(default_factory=list)  # run-dir folders put on PATH

    def wc(self, depth=None) -> str:
        """Wildcards of a job as the plugin writes them (--comment, log dir)."""
        return self.sweep if depth is None else f"{self.sweep}_{depth}"


def toy_target() -> Target:
    return Target(
        name="toy (tests/slurm/toy)",
        src=HERE / "toy",
        copy=["Snakefile", "profiles", "bin"],
        config=HERE / "toy" / "config.yaml",
        prog="toyjob",
        sweep="toy",
        depths=["1.000", "2.500"],
        fail_rule="observables",
        fail_depth="1.000",
        fail_pattern="V=1.000",
        outputs=("results", "logs", "benchmarks"),
        extra_path=["bin"],
    )


PROJECT_MODULES = ("qernel.cli", "qernel.train", "qernel.evaluate", "qernel.observables",
                   "qernel.aggregate", "qernel.plots")


def project_missing() -> list[str]:
    """What the project's workflow still lacks for this test (empty: ready)."""
    missing = [p for p in ("workflow/Snakefile", "environment.yml") if not (REPO / p).exists()]
    if not (REPO / "slurm").exists():
        missing.append("./slurm (the bare --profile slurm entry)")
    missing += [m for m in PROJECT_MODULES if importlib.util.find_spec(m) is None]
    return missing


def project_target() -> Target:
    return Target(
        name="project (workflow/, profiles/slurm)",
        src=REPO,
        copy=["workflow", "profiles", "config", "slurm", "environment.yml"],
        config=Path(os.environ.get("QERNEL_SLURM_CONFIG", HERE / "tiny.yaml")),
        prog="qernel",
        sweep="tiny",
        depths=["1.000", "2.500"],
        fail_rule="observables",
        fail_depth="1.000",
        fail_pattern="--depth 1.000",
        outputs=("results",),
    )


def pick_target() -> Target:
    choice = os.environ.get("QERNEL_SLURM_WORKFLOW", "auto")
    if choice == "toy":
        return toy_target()
    missing = project_missing()
    if not missing:
        return project_target()
    if choice == "project":
        pytest.fail(f"QERNEL_SLURM_WORKFLOW=project, but the project lacks {missing}")
    print(f"slurm test: the project's workflow lacks {missing}; using the toy stand-in")
    return toy_target()


# --------------------------------------------------------------------------- #
# the cluster
# --------------------------------------------------------------------------- #
def skip_or_fail(reason: str):
    reason = f"SLURM workflow test not run: {reason}"
    print(reason, file=sys.stderr)
    if os.environ.get("QERNEL_SLURM_TEST") == "1":
        pytest.fail(reason + "\n(QERNEL_SLURM_TEST=1 requires it to run)", pytrace=False)
    warnings.warn(reason, stacklevel=2)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A running one-node cluster; yields the environment its clients need."""
    if os.environ.get("QERNEL_SLURM_TEST") == "0":
        pytest.skip("SLURM workflow test disabled by QERNEL_SLURM_TEST=0")
    if not sys.platform.startswith("linux"):
        skip_or_fail(f"needs Linux (this is {sys.platform})")
    if os.geteuid() != 0:
        skip_or_fail("needs root to install and run slurmd (it runs as root in CI)")
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        skip_or_fail("slurm-wlm is not installed and there is no apt-get to install it")

    env = {k: v for k, v in os.environ.items()
           # the user's own cluster settings must not leak into the test
           if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_", "QERNEL_SLURM_"))}
    env.update(
        QERNEL_SLURM_DIR=str(tmp_path_factory.mktemp("slurm") / "cluster"),
        QERNEL_SLURM_CTLD_PORT=str(free_port()),
        QERNEL_SLURM_NODE_PORT=str(free_port()),
        QERNEL_SLURM_PARTITION=PARTITION,  # cluster.sh's partition, and the profile's -p
    )
    t0 = time.monotonic()
    try:
        up = subprocess.run(["bash", str(CLUSTER), "up"], env=env, capture_output=True, text=True,
                            timeout=600)
    except subprocess.TimeoutExpired:
        subprocess.run(["bash", str(CLUSTER), "down"], env=env, capture_output=True, timeout=120)
        skip_or_fail("cluster.sh up timed out (apt-get or the daemons hang)")
    print(up.stderr, file=sys.stderr)
    if up.returncode != 0:
        subprocess.run(["bash", str(CLUSTER), "down"], env=env, capture_output=True, timeout=120)
        why = {2: "not root", 3: "slurm-wlm/munge missing and apt-get unavailable or failing",
               4: "the SLURM daemons did not start", 5: "a cluster already runs there"}
        tail = "\n".join(up.stderr.strip().splitlines()[-15:])
        skip_or_fail(f"{why.get(up.returncode, 'cluster.sh up failed')} "
                     f"(exit {up.returncode}):\n{tail}")
    for line in up.stdout.splitlines():  # export SLURM_CONF=... / export PATH=...:$PATH
        m = re.fullmatch(r"export (\w+)=(.*)", line.strip())
        if m:
            env[m[1]] = m[2].replace("$PATH", env["PATH"])
    env["QERNEL_SLURM_UP_SECONDS"] = f"{time.monotonic() - t0:.1f}"
    try:
        yield env
    finally:
        down = subprocess.run(["bash", str(CLUSTER), "down"], env=env, capture_output=True,
                              text=True, timeout=120)
        print(down.stderr, file=sys.stderr)


# --------------------------------------------------------------------------- #
# running snakemake and reading its output
# --------------------------------------------------------------------------- #
SBATCH_RE = re.compile(r"^sbatch call: (sbatch .*)$", re.M)
SUBMITTED_RE = re.compile(
    r"^Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (\S+)\)\.$", re.M)
FINISHED_RE = re.compile(r"^Finished jobid: \d+ \(Rule: (\w+)\)", re.M)
LOCALRULE_RE = re.compile(r"^localrule (\w+):$", re.M)
# --show-failed-logs (profiles/default) prints failed jobs' logs -- including the inner
# snakemake's output from the SLURM log -- between lines of 80 "="; not ours to parse.
SHOWN_LOG_RE = re.compile(r"^Logfile [^\n]*:\n={80}\n.*?^={80}$", re.M | re.S)


@dataclass
class Run:
    rc: int
    out: str  # snakemake's whole output
    seconds: float

    @property
    def main(self) -> str:
        """The output without the failed jobs' logs that snakemake prints."""
        return SHOWN_LOG_RE.sub("", self.out)

    @property
    def sbatch(self) -> list[str]:
        return SBATCH_RE.findall(self.main)

    def submitted(self) -> list[tuple[str, str]]:
        """(rule, wildcards) of every sbatch call, from its --comment."""
        jobs = []
        for call in self.sbatch:
            m = re.search(r"--comment '?rule_(\w+?)(?:_wildcards_(\S*?))?'?(?: |$)", call)
            assert m, call
            jobs.append((m[1], m[2] or ""))
        return sorted(jobs)

    @property
    def slurm_logs(self) -> dict[str, str]:
        """SLURM job id -> its log file."""
        return {m[2]: m[3] for m in SUBMITTED_RE.finditer(self.main)}

    def slurm_jobid(self, rule: str, wc: str) -> str:
        """The SLURM job id of a job, from its log path (the plugin writes
        .snakemake/slurm_logs/rule_<rule>/<wildcards>/<jobid>.log)."""
        ids = [j for j, log in self.slurm_logs.items() if f"/rule_{rule}/{wc}/{j}.log" in log]
        assert len(ids) == 1, (rule, wc, self.slurm_logs)
        return ids[0]

    def finished_remote(self) -> list[str]:
        """Rules of the jobs that finished and were not local rules."""
        local = collections.Counter(LOCALRULE_RE.findall(self.main))
        done = collections.Counter(FINISHED_RE.findall(self.main))
        return sorted((done - local).elements())

    def tail(self, n=80) -> str:
        return "\n".join(self.out.splitlines()[-n:])


class Snakemake:
    """`snakemake ARGS` started in the background; .wait() gives its Run."""

    def __init__(self, args: list[str], cwd: Path, env: dict, log: Path):
        self.log, self.t0, self.t1 = log, time.monotonic(), None
        self._f = open(log, "w")
        self.proc = subprocess.Popen([str(VENV_BIN / "snakemake"), *args], cwd=cwd, env=env,
                                     stdout=self._f, stderr=subprocess.STDOUT)
        self._watch = threading.Thread(target=self._end, daemon=True)
        self._watch.start()

    def _end(self):
        self.proc.wait()
        self.t1 = time.monotonic()

    def wait(self, timeout=RUN_TIMEOUT) -> Run:
        self._watch.join(max(1.0, timeout - (time.monotonic() - self.t0)))
        if self.proc.poll() is None:
            self.proc.kill()  # its SLURM jobs are cancelled by cluster.sh down
            self._watch.join()
            rc = -1
        else:
            rc = self.proc.returncode
        self._f.close()
        return Run(rc, self.log.read_text(), (self.t1 or time.monotonic()) - self.t0)


def snakemake(args: list[str], cwd: Path, env: dict, log: Path) -> Run:
    return Snakemake(args, cwd, env, log).wait()


def make_run_dir(target: Target, dest: Path) -> Path:
    dest.mkdir(parents=True)
    for entry in target.copy:
        src = target.src / entry
        if src.is_symlink():
            os.symlink(os.readlink(src), dest / entry)
        elif src.is_dir():
            shutil.copytree(src, dest / entry, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / entry)
    if not (dest / "slurm").exists():  # the toy: mimic the project's ./slurm entry
        os.symlink("profiles/slurm", dest / "slurm")
    shutil.copy2(target.config, dest / "tiny.yaml")
    return dest


def tree(root: Path, tops) -> set[str]:
    files = set()
    for top in tops:
        if (root / top).exists():
            files |= {str(p.relative_to(root)) for p in (root / top).rglob("*") if p.is_file()}
    return files


def bench_cpu(root: Path) -> float:
    """CPU seconds of the jobs of a run, from their benchmark files (column cpu_time)."""
    total = 0.0
    for f in root.rglob("*.tsv"):
        rows = [line.split("\t") for line in f.read_text().splitlines()]
        if len(rows) > 1 and "cpu_time" in rows[0]:
            total += float(rows[-1][rows[0].index("cpu_time")])
    return total


def short_call(call: str, run_dir: Path) -> str:
    """An sbatch call without the --wrap'ed snakemake command line."""
    return call.split(' --wrap="')[0].replace(str(run_dir), "<run>").replace("  ", " ")


def _write_report(lines):
    text = "\n".join(lines) + "\n"
    print(text)
    if os.environ.get("QERNEL_SLURM_REPORT"):
        Path(os.environ["QERNEL_SLURM_REPORT"]).write_text(text)


# --------------------------------------------------------------------------- #
# the override (fast, no cluster)
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("which", ["toy", "project"])
def test_layered_profile_is_cpu_only(which, tmp_path):
    """The CI override keeps the real profile and removes every GPU request,
    also those the real profile adds from the environment (GPU model/partition)."""
    import yaml

    if which == "project" and not (REPO / "slurm").exists():
        pytest.skip("the project has no ./slurm profile yet")
    cwd = HERE / "toy" if which == "toy" else REPO
    profile = "profiles/slurm" if which == "toy" else "slurm"
    env = dict(os.environ, QERNEL_SLURM_GPU_MODEL="a100", QERNEL_SLURM_ACCOUNT="acct")
    p = subprocess.run([sys.executable, str(LAYER), profile, str(OVERRIDE), "-o", str(tmp_path)],
                       cwd=cwd, env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    merged = yaml.safe_load((tmp_path / "profile.yaml").read_text())
    assert merged["executor"] == "slurm"
    assert merged["slurm-status-command"] == "squeue" and merged["retries"] == 0
    for rule in ("pretrain", "evaluate"):
        res = merged["set-resources"][rule]
        assert res["gpu"] == 0 and res["cpus_per_task"] == 1, res
        assert not {"gpu_model", "gres", "cpus_per_gpu", "tasks_per_gpu"} & set(res), res
    if which == "project":  # what the real profile sets besides GPUs survives
        # (the real profile writes it quoted, as a Python string snakemake evaluates)
        account = str(merged["default-resources"].get("slurm_account"))
        assert account.strip("'\"") == "acct", merged


# --------------------------------------------------------------------------- #
# the workflow on the cluster
# --------------------------------------------------------------------------- #
def test_workflow_through_slurm(cluster, tmp_path, request):
    target = pick_target()
    sweep, d, fail_rule = target.sweep, target.fail_depth, target.fail_rule
    failing = (fail_rule, target.wc(d))
    report = [f"workflow: {target.name}; cluster up in {cluster['QERNEL_SLURM_UP_SECONDS']} s; "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start"]

    def env_for(run_dir: Path, fail: bool = False) -> dict:
        e = dict(cluster)
        e["PATH"] = os.pathsep.join([str(run_dir / p) for p in target.extra_path]
                                    + [str(VENV_BIN), cluster["PATH"]])
        e["PYTHONPATH"] = os.pathsep.join(filter(None, [str(INJECT), e.get("PYTHONPATH")]))
        e.setdefault("JAX_PLATFORMS", "cpu")
        if fail:
            e["QERNEL_CI_FAIL"] = f"{target.prog}:{fail_rule}:{target.fail_pattern}"
        return e

    # --- reference: a local run, in the background while SLURM run 1 goes on ----------
    local_dir = make_run_dir(target, tmp_path / "local")
    local_bg = Snakemake(["--cores", "2", "--configfile", "tiny.yaml"],
                         local_dir, env_for(local_dir), tmp_path / "local.log")
    request.addfinalizer(lambda: local_bg.proc.poll() is None and local_bg.proc.kill())

    # --- the layered profile --------------------------------------------------------
    run_dir = make_run_dir(target, tmp_path / "slurm")
    layered = tmp_path / "ci-profile"
    lp = subprocess.run([sys.executable, str(LAYER), "slurm", str(OVERRIDE), "-o", str(layered)],
                        cwd=run_dir, env=env_for(run_dir), capture_output=True, text=True)
    assert lp.returncode == 0, lp.stderr
    report.append(lp.stderr.strip().replace(str(run_dir), "<run>"))
    base = ["--profile", "slurm", "--profile", str(layered), "--configfile", "tiny.yaml",
            "--verbose"]

    # --- SLURM run 1: from scratch, one job failing on purpose --------------------------
    run1 = snakemake([*base, "--keep-going"], run_dir, env_for(run_dir, fail=True),
                     tmp_path / "slurm1.log")
    local = local_bg.wait()
    report.append(f"local run (--cores 2, alongside run 1): {local.seconds:.1f} s, exit {local.rc}")
    report.append(f"SLURM run 1 (from scratch, {fail_rule} V={d} failing on purpose, "
                  f"--keep-going): {run1.seconds:.1f} s, exit {run1.rc}, "
                  f"{len(run1.sbatch)} sbatch calls:")
    report += [f"  {short_call(c, run_dir)}" for c in run1.sbatch]
    _write_report(report)
    assert local.rc == 0, f"local run failed:\n{local.tail()}"
    assert not local.sbatch
    assert run1.rc not in (0, -1), f"run 1 should fail (one job):\n{run1.tail()}"
    assert re.search(r"^Using profiles slurm and .*ci-profile", run1.main, re.M), \
        "the bare profile name 'slurm' was not used"
    sub1 = run1.submitted()
    assert len(sub1) == len(run1.slurm_logs), "an sbatch call without a SLURM job id"
    assert failing in sub1 and ("pretrain", sweep) in sub1, sub1
    for depth in target.depths:
        assert ("evaluate", target.wc(depth)) in sub1, sub1
        if depth != d:
            assert (fail_rule, target.wc(depth)) in sub1, sub1
    ncpu = os.cpu_count() or 1
    for call in run1.sbatch:  # CPU-only, fits the node, the profile's partition
        assert "--gpus" not in call and "--gres" not in call, f"GPU request left: {call}"
        assert int(re.search(r"--cpus-per-task=(\d+)", call)[1]) <= ncpu, call
        assert f"-p {PARTITION}" in call, call
    # exactly the failing job failed, reported with its SLURM log
    assert len(re.findall(r"^Error in rule ", run1.main, re.M)) == 1, run1.tail()
    jobid = run1.slurm_jobid(*failing)
    slurm_log = run1.slurm_logs[jobid]
    err = re.search(rf"^Error in rule {fail_rule}:\n(?:    .*\n)+", run1.main, re.M)
    assert err, run1.tail()
    assert f"SLURM-job '{jobid}' failed" in err[0], err[0]
    assert slurm_log in err[0], f"SLURM log {slurm_log} not in the report:\n{err[0]}"
    assert f"Error in rule {fail_rule}" in Path(slurm_log).read_text()
    # ... and it failed for our reason (the hook's message is in the job's logs)
    rule_log = re.search(r"^    log: (\S+?),? ", err[0], re.M)[1]
    job_logs = Path(slurm_log).read_text() + (run_dir / rule_log).read_text()
    assert "QERNEL_CI_FAIL: deliberate failure" in job_logs, job_logs[-3000:]
    report.append("  reported:\n" + err[0].rstrip().replace(str(run_dir), "<run>"))
    # everything else ran under SLURM to completion
    assert sorted(r for r, w in sub1 if (r, w) != failing) == run1.finished_remote(), (
        sub1, run1.finished_remote())
    for j, log in run1.slurm_logs.items():
        assert Path(log).is_file(), f"SLURM log of job {j} missing: {log}"
    done1 = {p: (run_dir / p).stat().st_mtime_ns for p in tree(run_dir, ["results"])
             if not re.search(r"(^|/)(logs|benchmarks)/", p)}

    # --- SLURM run 2: fixed; only what is missing runs -----------------------------------
    run2 = snakemake(base, run_dir, env_for(run_dir), tmp_path / "slurm2.log")
    report.append(f"SLURM run 2 (after the fix): {run2.seconds:.1f} s, exit {run2.rc}, "
                  f"{len(run2.sbatch)} sbatch calls:")
    report += [f"  {short_call(c, run_dir)}" for c in run2.sbatch]
    _write_report(report)
    assert run2.rc == 0, run2.tail()
    sub2 = run2.submitted()
    assert failing in sub2, sub2
    assert not set(sub2) & (set(sub1) - {failing}), f"run 2 re-ran finished jobs: {sub2}"
    assert all(w == sweep for r, w in sub2 if (r, w) != failing), \
        f"run 2 ran per-depth jobs other than the failed one: {sub2}"
    assert sorted(r for r, _ in sub2) == run2.finished_remote(), (sub2, run2.finished_remote())
    for p, t in done1.items():
        assert (run_dir / p).stat().st_mtime_ns == t, f"{p} was rebuilt by run 2"
    for call in run2.sbatch:
        assert "--gpus" not in call and "--gres" not in call, f"GPU request left: {call}"

    # --- the result ---------------------------------------------------------------------
    # every job of the local run except local rules ran through sbatch (the failed one twice)
    local_rules = set(LOCALRULE_RE.findall(run1.main + run2.main))
    want_remote = sorted(r for r in FINISHED_RE.findall(local.main) if r not in local_rules)
    assert sorted(r for r, _ in sub1 + sub2) == sorted(want_remote + [fail_rule]), (
        sub1, sub2, want_remote)
    got, want = tree(run_dir, target.outputs), tree(local_dir, target.outputs)
    assert got == want, f"files differ from the local run's: {sorted(got ^ want)}"
    dry = snakemake([*base, "--dry-run"], run_dir, env_for(run_dir), tmp_path / "dry.log")
    assert dry.rc == 0 and "Nothing to be done" in dry.out, dry.tail()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    report.append(
        f"CPU time: jobs {bench_cpu(local_dir):.0f} s locally, {bench_cpu(run_dir):.0f} s under "
        f"SLURM (benchmark files); all processes the test started (the local run with its "
        f"jobs, the SLURM runs' snakemake) {children.ru_utime + children.ru_stime:.0f} s")
    report.append(f"same {len(got)} files as the local run; SLURM wall time "
                  f"{run1.seconds + run2.seconds:.1f} s (run 1 + run 2); "
                  f"load average {os.getloadavg()[0]:.1f} at the end")
    _write_report(report)
