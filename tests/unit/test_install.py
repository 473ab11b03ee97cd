"""The install the README promises: a torch range in the package metadata, the exact CPU pin in a
constraints file that both Quick-start commands and CI use."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _torch_requirement() -> str:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(d for d in deps if re.match(r"torch\b", d))


def test_the_package_depends_on_a_torch_range_not_a_pin():
    requirement = _torch_requirement()
    assert ">=" in requirement and "==" not in requirement, requirement


def test_the_constraints_file_pins_torch_inside_that_range():
    pins = [line for line in (REPO / "constraints-cpu.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    assert pins == [pins[0]] and pins[0].startswith("torch==")
    pinned = tuple(int(x) for x in pins[0].split("==")[1].split(".")[:2])
    floor = tuple(int(x) for x in _torch_requirement().split(">=")[1].split(",")[0].split(".")[:2])
    assert pinned >= floor


def test_quick_start_and_ci_install_with_the_constraints():
    readme = (REPO / "README.md").read_text()
    quick = readme.split("## Quick start")[1].split("\n## ")[0]
    commands = re.findall(r"```bash\n(.*?)\n```", quick, re.S)
    assert len(commands) == 2, commands
    assert all("pip install -e" in c and "-c constraints-cpu.txt" in c for c in commands), commands
    assert commands[0].endswith("snakemake --cores all") and commands[1].endswith("pytest")
    assert "download.pytorch.org/whl/cpu" in readme            # how to get a CPU-only torch elsewhere
    ci = (REPO / ".ci" / "run").read_text()
    assert all("-c constraints-cpu.txt" in line for line in ci.splitlines() if "pip install" in line)
