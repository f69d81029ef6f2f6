"""environment.yml mirrors pyproject.toml (the source of truth for dependencies)."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _split(spec: str):
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?\s*(.*)$", spec)
    return m.group(1).lower().replace("_", "-"), m.group(2).replace(" ", "")


def test_environment_yml_mirrors_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = dict(_split(d) for d in project["dependencies"] + project["optional-dependencies"]["test"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]
    conda, pip = {}, {}
    for item in env:
        if isinstance(item, dict):
            pip.update(_split(p) for p in item["pip"] if not p.startswith("-e"))
        elif not item.startswith(("python", "pip")) or item.startswith("pip "):
            name, ver = _split(item)
            conda[name] = ver
    got = {**conda, **pip}
    assert set(got) == set(wanted), f"missing {set(wanted) - set(got)}, extra {set(got) - set(wanted)}"
    for name, ver in wanted.items():
        # pip pins '==X' appear as conda '=X'
        assert got[name].lstrip("=") == ver.lstrip("="), f"{name}: environment.yml {got[name]!r} vs pyproject {ver!r}"
