"""Static checks of every chapter notebook: Colab cell, parameters, exercises, no stored outputs."""

import ast
import json
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COLAB_TAGS = {"remove-cell", "skip-execution", "nbval-skip"}


def _toc_files(entries):
    for entry in entries:
        if "file" in entry:
            yield entry["file"]
        for key in ("chapters", "sections", "parts"):
            yield from _toc_files(entry.get(key, []))


def chapters():
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    files = [toc["root"], *_toc_files(toc.get("parts", []) + toc.get("chapters", []))]
    return sorted(REPO / f"{name}.ipynb" for name in files if (REPO / f"{name}.ipynb").exists())


def _tags(cell):
    return set(cell.get("metadata", {}).get("tags", []))


def _source(cell):
    source = cell["source"]
    return "".join(source) if isinstance(source, list) else source


CHAPTERS = chapters()


def test_toc_lists_existing_files():
    """Every file the table of contents names exists, as .md or .ipynb."""
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    for name in [toc["root"], *_toc_files(toc.get("parts", []))]:
        assert (REPO / f"{name}.ipynb").exists() or (REPO / f"{name}.md").exists(), name


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda path: path.stem)
def test_chapter_structure(path):
    """Badge, Colab-only install cell, one plain parameters cell, exercises, no outputs."""
    notebook = json.loads(path.read_text())
    cells = notebook["cells"]
    code = [cell for cell in cells if cell["cell_type"] == "code"]

    badge = f"colab.research.google.com/github/flexhinm/flexhinm/blob/main/book/{path.name}"
    assert badge in _source(cells[0]), "first cell needs the Open in Colab badge for this file"

    colab = code[0]
    assert COLAB_TAGS <= _tags(colab), f"first code cell needs tags {COLAB_TAGS}"
    assert 'if "google.colab" in sys.modules' in _source(colab)

    parameters = [cell for cell in code if "parameters" in _tags(cell)]
    assert len(parameters) == 1, "exactly one cell must be tagged 'parameters'"
    tree = ast.parse(_source(parameters[0]))
    assert all(isinstance(node, (ast.Assign, ast.AnnAssign)) for node in tree.body), (
        "the parameters cell may hold plain assignments only (papermill overrides them)"
    )

    markdown = "\n".join(_source(cell) for cell in cells if cell["cell_type"] == "markdown")
    assert "## Exercises" in markdown
    assert markdown.count("### Exercise") >= 4, "a chapter needs at least 4 exercises"
    solutions = [cell for cell in code if "solution" in _tags(cell)]
    assert solutions, "checkable exercises need solution cells tagged 'solution'"
    for cell in solutions:
        assert "self_check" in _source(cell), "a solution cell must run its exercise's self-check"

    for cell in code:
        assert cell.get("outputs", []) == [], "commit notebooks without outputs"
        assert cell.get("execution_count") is None, "commit notebooks without execution counts"
    assert notebook["metadata"]["kernelspec"]["name"] == "python3"
