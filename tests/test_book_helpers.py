"""Notebook helpers: exercise self-checks and student copies without solutions."""

import json

from flexhinm.book import self_check, strip_solutions
from flexhinm.cli import main


def test_self_check_reports_each_outcome(capsys):
    """Correct, wrong and unanswered exercises each print one line and never raise."""

    def unanswered():
        raise NotImplementedError

    def wrong():
        raise AssertionError("expected 3")

    assert self_check("Ex 1", lambda: None)
    assert not self_check("Ex 2", wrong)
    assert not self_check("Ex 3", unanswered)
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "Ex 1: correct.",
        "Ex 2: not yet right. expected 3",
        "Ex 3: not answered yet. Write your answer above, then run this cell.",
    ]


def _notebook(tmp_path):
    cells = [
        {"cell_type": "markdown", "metadata": {}, "source": "# Title"},
        {"cell_type": "code", "metadata": {"tags": ["solution"]}, "source": "x = 1",
         "outputs": [], "execution_count": 3},
        {"cell_type": "code", "metadata": {}, "source": "y = 2",
         "outputs": [{"output_type": "stream", "name": "stdout", "text": "hi"}], "execution_count": 4},
    ]
    path = tmp_path / "chapter.ipynb"
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    return path


def test_strip_solutions_removes_tagged_cells(tmp_path):
    """Solution cells and all outputs are gone from the student copy."""
    source = _notebook(tmp_path)
    removed = strip_solutions(source, tmp_path / "student.ipynb")
    cells = json.loads((tmp_path / "student.ipynb").read_text())["cells"]
    assert removed == 1
    assert [cell["source"] for cell in cells] == ["# Title", "y = 2"]
    assert cells[1]["outputs"] == []


def test_strip_solutions_command(tmp_path, capsys):
    """`flexhinm strip-solutions` writes the copy and says how many cells it removed."""
    source = _notebook(tmp_path)
    assert main(["strip-solutions", str(source), str(tmp_path / "out.ipynb")]) == 0
    assert "without 1 solution cell(s) and discussion(s)" in capsys.readouterr().out


def test_strip_solutions_removes_discussions(tmp_path):
    """A Discussion dropdown in a markdown cell is replaced by a note; other text stays."""
    question = "### Exercise 6\n\nWhy?\n\n```{dropdown} Discussion\n- because\n```\n\nMore text."
    cells = [{"cell_type": "markdown", "metadata": {}, "source": question}]
    source = tmp_path / "chapter.ipynb"
    source.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))

    assert strip_solutions(source, tmp_path / "student.ipynb") == 1
    text = json.loads((tmp_path / "student.ipynb").read_text())["cells"][0]["source"]
    assert "because" not in text
    assert text.startswith("### Exercise 6\n\nWhy?\n\n*(The discussion")
    assert text.endswith("\n\nMore text.")
