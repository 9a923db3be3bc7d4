"""Helpers for the book's notebooks: set-up, exercise self-checks, and student copies.

Every chapter calls :func:`setup_notebook` once. Exercises follow one pattern: the student writes an
answer in a cell that starts as a stub raising ``NotImplementedError``, then runs a self-check cell
that calls :func:`self_check`. A solution cell, tagged ``solution``, shows one answer and runs the
same check, so the book build proves that every check accepts a correct answer.
:func:`strip_solutions` writes a copy of a chapter without the solution cells, for coursework.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Callable
from os import PathLike
from pathlib import Path

import torch

__all__ = ["CheckResult", "in_colab", "self_check", "setup_notebook", "strip_solutions"]

SOLUTION_TAG = "solution"

# A MyST dropdown titled "Discussion", from its opening fence to the closing fence on its own line.
_DISCUSSION = re.compile(r"```\{dropdown\} Discussion.*?\n```[ \t]*(?=\n|$)", re.DOTALL)
_DISCUSSION_REMOVED = "*(The discussion of this question is left out of the student copy.)*"


def in_colab() -> bool:
    """Return ``True`` inside Google Colab."""
    return "google.colab" in sys.modules


def setup_notebook(seed: int = 0, *, threads: int | None = None) -> dict:
    """Prepare a chapter: seeds, CPU threads, quiet logging and readable plots.

    Args:
        seed: seeds Python, NumPy and torch.
        threads: torch CPU threads; default ``$FLEXHINM_THREADS`` or torch's own choice.

    Returns:
        Facts to print at the top of a chapter: ``device`` (``"cuda"`` or ``"cpu"``), ``torch``,
        ``threads``, ``colab`` and ``download`` (``True`` on Colab, where the full CIFAR-10 is
        fetched because no local copy exists).
    """
    from .train import seed_everything

    threads = threads or int(os.environ.get("FLEXHINM_THREADS", "0")) or None
    if threads:
        torch.set_num_threads(threads)
    seed_everything(seed)
    logging.getLogger("flexhinm").setLevel(logging.WARNING)

    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 100, "axes.grid": True, "grid.alpha": 0.3})
    return {
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "colab": in_colab(),
        "download": in_colab(),
    }


class CheckResult:
    """Outcome of :func:`self_check`: true when the answer holds.

    A notebook shows nothing for it (the check already printed its line), so a self-check cell's
    output is just that line; ``assert self_check(...)`` still works in solution cells.
    """

    def __init__(self, passed: bool) -> None:
        self.passed = passed

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        return f"CheckResult(passed={self.passed})"

    def _ipython_display_(self) -> None:
        """Display nothing in Jupyter; the line printed by the check is the whole output."""


def self_check(label: str, check: Callable[[], None]) -> CheckResult:
    """Run an exercise's ``check`` and say in one line whether the answer holds.

    ``check`` raises ``AssertionError`` (with a hint as its message) for a wrong answer and lets
    the student's ``NotImplementedError`` through for an exercise not yet attempted.

    Writes one line to standard output: the student-facing feedback is this function's purpose.

    Returns:
        A :class:`CheckResult`, true when the check passes. A wrong or missing answer gives a false
        result and does not raise, so a chapter still runs to the end with exercises left open.

    Example:
        >>> def check():
        ...     assert 2 + 2 == 4, "arithmetic is broken"
        >>> bool(self_check("Exercise 0", check))
        Exercise 0: correct.
        True
    """
    try:
        check()
    except NotImplementedError:
        sys.stdout.write(f"{label}: not answered yet. Write your answer above, then run this cell.\n")
        return CheckResult(False)
    except AssertionError as error:
        sys.stdout.write(f"{label}: not yet right. {error}\n")
        return CheckResult(False)
    sys.stdout.write(f"{label}: correct.\n")
    return CheckResult(True)


def strip_solutions(source: str | PathLike, target: str | PathLike) -> int:
    """Write a copy of the notebook ``source`` without its solutions, discussions and outputs.

    Removes the ``solution``-tagged cells and, from markdown cells, the ``{dropdown} Discussion``
    blocks that answer the open questions. The copy reads ``../benchmarks`` and the data like
    the chapter, so run it from the ``book/`` folder of a clone.

    Args:
        source: a chapter ``.ipynb``.
        target: where to write the student copy.

    Returns:
        The number of solution cells and discussion blocks removed.
    """
    notebook = json.loads(Path(source).read_text())
    cells = notebook["cells"]
    kept = [cell for cell in cells if SOLUTION_TAG not in cell.get("metadata", {}).get("tags", [])]
    discussions = 0
    for cell in kept:
        if cell["cell_type"] == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
        elif cell["cell_type"] == "markdown":
            text = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            text, found = _DISCUSSION.subn(_DISCUSSION_REMOVED, text)
            discussions += found
            cell["source"] = text
    notebook["cells"] = kept
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    Path(target).write_text(json.dumps(notebook, indent=1) + "\n")
    return len(cells) - len(kept) + discussions
