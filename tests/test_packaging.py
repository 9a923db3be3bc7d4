"""Packaging facts that users rely on: dependencies, environment.yml, the command, the README."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _requirement_names(requirements):
    return {re.split(r"[<>=!~ \[;@]", item.strip(), maxsplit=1)[0].lower() for item in requirements}


def test_environment_matches_pyproject():
    """environment.yml's pip section lists exactly pyproject's dependencies and extras."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"])
    for extra in ("book", "test"):
        wanted |= set(project["optional-dependencies"][extra])

    environment = yaml.safe_load((REPO / "environment.yml").read_text())
    pip_section = next(item["pip"] for item in environment["dependencies"] if isinstance(item, dict))
    listed = {item for item in pip_section if not item.startswith("-e")}
    assert listed == wanted, f"only in environment.yml: {listed - wanted}; only in pyproject: {wanted - listed}"


def test_environment_python_version():
    """environment.yml pins Python 3.11, the version the project is tested on."""
    environment = yaml.safe_load((REPO / "environment.yml").read_text())
    assert "python=3.11" in environment["dependencies"]


def test_torch_requirement_has_no_upper_bound():
    """torch is required as >=2.4 with no upper bound, so Colab keeps its own torch."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    torch_requirements = [item for item in project["dependencies"] if item.startswith("torch>")]
    assert torch_requirements == ["torch>=2.4"]


def test_jupyter_book_stays_v1():
    """The book needs Jupyter Book 1.x (Sphinx); 2.x is a different tool."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "jupyter-book>=1.0.4,<2" in project["optional-dependencies"]["book"]


def test_command_help_runs():
    """`flexhinm run --help` works and explains every option."""
    result = subprocess.run(
        [sys.executable, "-m", "flexhinm.cli", "run", "--help"], capture_output=True, text=True, check=True
    )
    for option in ("--budget", "--method", "--sparsity", "--data-root", "--out", "--epochs"):
        assert option in result.stdout


def test_readme_commands_match_ci():
    """The README's install and test commands are the ones .ci/run executes."""
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    install = '.venv/bin/pip install -e ".[book,test]"'
    test = "FLEXHINM_DATA=../shared/data .venv/bin/python -m pytest -n 2"
    assert install in readme and install in ci
    assert test in readme and test in ci
    assert "FLEXHINM_DATA=../shared/data .venv/bin/flexhinm run" in ci
