"""The main job's pieces: budgets, the cached baseline, method runs, the command line."""

import json

import pytest
import torch

from flexhinm.cli import main
from flexhinm.experiments import (
    BUDGETS,
    Budget,
    format_table,
    get_budget,
    pretrained_baseline,
    run_comparison,
)

TINY = Budget("tiny", dense_epochs=1, finetune_epochs=1, batch_size=64, train_limit=256, eval_limit=200)


def test_budgets_known_and_unknown():
    """Every budget named in the help exists; an unknown name lists the choices."""
    assert set(BUDGETS) == {"smoke", "quick", "book", "full"}
    with pytest.raises(ValueError, match=r"unknown budget 'fast'; choose one of"):
        get_budget("fast")


def test_budget_overrides_ignore_none():
    """with_overrides replaces given values and keeps the rest."""
    budget = get_budget("quick").with_overrides(dense_epochs=3, batch_size=None)
    assert budget.dense_epochs == 3
    assert budget.batch_size == get_budget("quick").batch_size


def test_baseline_is_cached(data_root, tmp_path, monkeypatch):
    """A second call with the same settings loads the same weights from the cache."""
    monkeypatch.setenv("FLEXHINM_CACHE", str(tmp_path))
    first = pretrained_baseline("resnet20", "cifar10", TINY, progress=False)
    second = pretrained_baseline("resnet20", "cifar10", TINY, progress=False)
    assert not first.record["cached"]
    assert second.record["cached"]
    for (name, a), (_, b) in zip(first.model.state_dict().items(), second.model.state_dict().items()):
        assert torch.equal(a, b), name
    assert second.test_top1 == first.test_top1


def test_run_comparison_rows(data_root, tmp_path, monkeypatch):
    """Each method gets a row with the sparsity it reached; files are written."""
    monkeypatch.setenv("FLEXHINM_CACHE", str(tmp_path / "cache"))
    comparison = run_comparison(
        budget=TINY, methods=["dense", "nm", "unstructured"], sparsities=[0.5], progress=False,
        out_dir=tmp_path / "out",
    )
    rows = {row["method"]: row for row in comparison.rows}
    assert rows["nm"]["sparsity"] == pytest.approx(0.5)
    assert rows["unstructured"]["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert rows["dense"]["sparsity"] == 0.0
    assert rows["nm"]["kept_weights"] * 2 == rows["nm"]["pruned_layer_weights"]
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [row["method"] for row in saved["rows"]] == ["dense", "nm", "unstructured"]
    assert saved["meta"]["train_images"] == 256
    assert (tmp_path / "out" / "results.png").stat().st_size > 0
    assert "2:4" in format_table(comparison.rows)


def test_cli_missing_data_names_paths(tmp_path, monkeypatch, capsys):
    """A missing data set exits with code 2, names the paths tried and the command-line fix."""
    monkeypatch.setenv("FLEXHINM_DATA", str(tmp_path / "nowhere"))
    monkeypatch.setenv("HOME", str(tmp_path))
    code = main(["run", "--budget", "smoke", "--out", str(tmp_path / "out"), "--no-progress"])
    error = capsys.readouterr().err
    assert code == 2
    assert str(tmp_path / "nowhere") in error
    assert "--data-root DIR" in error
    assert "--download" in error


def test_cli_rejects_bad_sparsity(capsys):
    """A sparsity outside [0, 1) is rejected by the parser with the value named."""
    with pytest.raises(SystemExit):
        main(["run", "--sparsity", "75"])
    assert "sparsity 75.0 is outside [0, 1)" in capsys.readouterr().err


def test_cli_rejects_unknown_method(capsys):
    """An unknown method name lists the valid ones."""
    with pytest.raises(SystemExit):
        main(["run", "--method", "magic"])
    assert "invalid choice: 'magic'" in capsys.readouterr().err


@pytest.mark.parametrize("device, message", [
    ("gpu", "device 'gpu' is invalid: torch cannot parse it"),
    ("cuda:x", "device 'cuda:x' is invalid: torch cannot parse it"),
])
def test_cli_rejects_bad_device(device, message, capsys):
    """A device string that torch cannot parse stops the parser with the value and the fix."""
    with pytest.raises(SystemExit):
        main(["run", "--device", device])
    error = capsys.readouterr().err
    assert message in error
    assert "Write cpu, cuda or cuda:0" in error


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cli_rejects_cuda_without_gpu(capsys):
    """Asking for CUDA on a machine without it fails before any work, naming the fix."""
    with pytest.raises(SystemExit):
        main(["run", "--device", "cuda"])
    error = capsys.readouterr().err
    assert "needs a CUDA GPU, and torch finds none" in error
    assert "--device cpu" in error


def test_cli_progress_lines_restore_logging(data_root, tmp_path, monkeypatch, capsys):
    """The main job prints a line per epoch and per method, and leaves the loggers as they were."""
    import logging

    monkeypatch.setenv("FLEXHINM_CACHE", str(tmp_path / "cache"))
    logger = logging.getLogger("flexhinm.experiments")
    before = (logger.level, list(logger.handlers), logger.propagate)
    code = main(["run", "--budget", "smoke", "--train-limit", "256", "--epochs", "1",
                 "--method", "dense", "nm", "--out", str(tmp_path / "out"), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0
    assert "training the dense resnet20 on 256 images for 1 epoch\n" in captured.err
    assert "[2/2] 2:4 at 50.0 %: pruning and fine-tuning" in captured.err
    assert "epoch 1/1: train loss" in captured.err
    assert (logger.level, list(logger.handlers), logger.propagate) == before
