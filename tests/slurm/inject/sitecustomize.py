"""Deliberate-failure hook for tests/slurm/test_slurm_workflow.py.

With this directory on PYTHONPATH, every Python process imports this module at
start-up. It does nothing unless the environment has

    QERNEL_CI_FAIL="PROG:SUBCOMMAND:SUBSTRING"

and the process is `python -m PROG ...` (or a script named PROG) with
SUBCOMMAND among its arguments and SUBSTRING in its command line, e.g.
"qernel:observables:--depth 1.000". Such a process exits with status 42 before
doing anything. SLURM jobs inherit the variable (sbatch --export=ALL), so this
makes exactly one chosen job of the workflow fail on the cluster; unsetting it
"fixes" the job. (The workflow's rules call `python -m qernel` through a shell
function, so a PATH shim could not intercept them.)
"""

import os

_spec = os.environ.get("QERNEL_CI_FAIL")
if _spec:
    try:
        with open("/proc/self/cmdline", "rb") as _f:
            _argv = [a.decode(errors="replace") for a in _f.read().split(b"\0") if a]
    except OSError:  # not Linux: never fail
        _argv = []
    _prog, _sub, _pat = (_spec.split(":", 2) + ["", ""])[:3]
    _args = _argv[1:]
    _is_prog = (_args[:2] == ["-m", _prog]) or (
        bool(_args) and os.path.basename(_args[0]) == _prog
    )
    if _is_prog and _sub in _args and _pat in " ".join(_args):
        import sys

        print(
            f"QERNEL_CI_FAIL: deliberate failure of {' '.join(_args)!r} "
            f"(QERNEL_CI_FAIL={_spec})",
            file=sys.stderr,
            flush=True,
        )
        os._exit(42)
