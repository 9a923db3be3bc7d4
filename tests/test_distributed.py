"""Distributed helpers in one process, DDP checkpoints, and fit under torchrun with 2 processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

from flexhinm import apply_masks, nm_mask
from flexhinm.train import distributed, load_checkpoint, read_checkpoint, save_checkpoint

REPO_ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("ddp_worker.py")


@pytest.fixture
def no_torchrun_env(monkeypatch):
    """Remove torchrun's variables, so the code under test runs as a plain single process."""
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def single_process_group(tmp_path):
    """A gloo process group of one process over a file store (no network)."""
    store = f"file://{tmp_path / 'store'}"
    dist.init_process_group("gloo", init_method=store, rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_single_process_defaults(no_torchrun_env):
    """Without torchrun everything reports one process of rank 0."""
    assert distributed.init_distributed() is False
    assert distributed.is_distributed() is False
    assert distributed.rank() == 0
    assert distributed.world_size() == 1
    assert distributed.local_rank() == 0
    assert distributed.is_main_process() is True
    expected = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    assert distributed.default_device() == expected


def test_single_process_reductions(no_torchrun_env):
    """Reductions return a copy of the input and gathering wraps the value in a list."""
    value = torch.tensor([1.0, 2.0])
    total = distributed.all_reduce_sum(value)
    assert torch.equal(total, value)
    assert total is not value
    assert distributed.all_gather_objects({"a": 1}) == [{"a": 1}]
    distributed.barrier()


def test_wrap_ddp_single_process_unchanged(no_torchrun_env):
    """wrap_ddp leaves the model alone when not running distributed."""
    model = nn.Linear(2, 2)
    assert distributed.wrap_ddp(model, "cpu") is model


def test_init_distributed_incomplete_env(no_torchrun_env, monkeypatch):
    """Only some torchrun variables set is an error naming the missing ones."""
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match=r"\['LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT'\] missing"):
        distributed.init_distributed()


def set_torchrun_env(monkeypatch, world_size: int) -> None:
    """Set the variables torchrun would set for rank 0 (nothing listens on the port)."""
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", str(world_size))
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "1")


def test_init_distributed_unknown_backend(no_torchrun_env, monkeypatch):
    """An unknown backend name is rejected before any connection is attempted."""
    set_torchrun_env(monkeypatch, world_size=2)
    with pytest.raises(ValueError, match="backend='mpi' is unknown; use 'gloo'"):
        distributed.init_distributed("mpi")


def test_init_distributed_world_of_one(no_torchrun_env, monkeypatch):
    """torchrun with one process creates no process group."""
    set_torchrun_env(monkeypatch, world_size=1)
    assert distributed.init_distributed() is False
    assert distributed.is_distributed() is False


def test_checkpoint_unwraps_ddp(tmp_path, single_process_group):
    """A DDP-wrapped masked model is saved without 'module.' prefixes and loads into a plain one."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    apply_masks(model, {"0.weight": nm_mask(model[0].weight.detach().abs())})
    wrapped = nn.parallel.DistributedDataParallel(model)
    assert distributed.unwrap_model(wrapped) is model

    path = save_checkpoint(tmp_path / "ddp.pt", wrapped)
    raw = torch.load(path, weights_only=True)
    fresh = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    load_checkpoint(path, fresh)

    assert not any(key.startswith("module.") for key in raw["model"])
    assert list(raw["masks"]) == ["0.weight"]
    assert torch.equal(fresh[0].weight, model[0].weight)


@pytest.mark.slow
def test_fit_under_torchrun_two_gloo_processes(tmp_path):
    """Two gloo processes finish with identical parameters; rank 0 alone writes the checkpoint."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "GLOO_SOCKET_IFNAME": "lo",  # keep gloo's connections on the loopback interface
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(WORKER),
        str(tmp_path),
    ]
    result = subprocess.run(
        command, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=180
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"torchrun exit code {result.returncode}:\n{output[-4000:]}"

    states = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]
    assert list(states[0]["state"]) == list(states[1]["state"])
    for key, value in states[0]["state"].items():
        assert torch.equal(value, states[1]["state"][key]), f"{key} differs between ranks"
    assert torch.equal(states[0]["masks"]["4.weight"], states[1]["masks"]["4.weight"])

    histories = [json.loads((tmp_path / f"history{rank}.json").read_text()) for rank in (0, 1)]
    assert [r["test_top1"] for r in histories[0]] == [r["test_top1"] for r in histories[1]]
    assert [r["train_loss"] for r in histories[0]] == [r["train_loss"] for r in histories[1]]

    saves = [line for line in output.splitlines() if "saved checkpoint" in line]
    assert len(saves) == 2, f"expected one save per epoch, got:\n{saves}"
    assert all(line.startswith("rank0 ") for line in saves), saves
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "checkpoint.pt", "history0.json", "history1.json", "rank0.pt", "rank1.pt"
    ]

    checkpoint = read_checkpoint(tmp_path / "checkpoint.pt")
    assert checkpoint["epoch"] == 2
    assert checkpoint["extra"]["settings"]["world_size"] == 2
    assert len(checkpoint["rng_states"]) == 2
    assert not any(key.startswith("module.") for key in checkpoint["model"])
    for key, value in states[0]["state"].items():
        assert torch.equal(checkpoint["model"][key], value), key
