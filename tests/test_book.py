"""The whole book builds with Jupyter Book 1.x, executing every chapter offline on the CPU.

This is the slowest test (about 10 minutes on 2 cores). Run the rest with ``-m "not book"``.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.book
@pytest.mark.slow
def test_book_builds_without_warnings(tmp_path):
    """`jupyter-book build . -W` succeeds: every cell runs and Sphinx raises no warning."""
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    if not jupyter_book.exists():
        pytest.skip("jupyter-book is not installed; install the 'book' extra")
    env = dict(os.environ)
    env.setdefault("FLEXHINM_CACHE", str(REPO / "_build" / "cache"))
    env.pop("MPLBACKEND", None)  # the kernels must use the inline backend to record figures

    result = subprocess.run(
        [str(jupyter_book), "build", str(REPO), "-W", "--path-output", str(tmp_path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=45 * 60,
    )
    log = result.stdout + result.stderr
    # nbclient names the failing cell and its error; show that part rather than Sphinx's traceback.
    marker = log.find("An error occurred while executing the following cell")
    excerpt = log[marker:marker + 6000] if marker >= 0 else log[-6000:]
    assert result.returncode == 0, f"book build failed:\n{excerpt}"

    html = tmp_path / "_build" / "html"
    assert (html / "book" / "intro.html").is_file()
