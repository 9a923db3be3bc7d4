"""Worker for tests/test_distributed.py: run ``fit`` under torchrun on a tiny synthetic problem.

Usage: ``python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_worker.py OUT``.
Each rank builds the model from a different seed, so DDP must copy rank 0's weights. It trains 2
epochs on the gloo backend with a masked layer and writes ``OUT/rank<r>.pt`` (its final state) and
``OUT/history<r>.json``. Rank 0 also writes the checkpoint ``OUT/checkpoint.pt``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path


def main(out: Path) -> None:
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

    from flexhinm import apply_masks, nm_mask
    from flexhinm.train import distributed, fit
    from flexhinm.train.model_state import model_state

    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    logging.basicConfig(
        level=logging.INFO, format=f"rank{rank} %(name)s: %(message)s", stream=sys.stderr
    )

    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(128, 3, 4, 4, generator=generator)
    targets = (inputs.flatten(1) @ torch.randn(48, 4, generator=generator)).argmax(dim=1)
    dataset = TensorDataset(inputs, targets)

    distributed.init_distributed()
    train_loader = DataLoader(dataset, batch_size=16, sampler=DistributedSampler(dataset, seed=0))
    test_sampler = DistributedSampler(dataset, shuffle=False)
    test_loader = DataLoader(dataset, batch_size=32, sampler=test_sampler)

    torch.manual_seed(100 + rank)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(128, 4)
    )
    apply_masks(model, {"4.weight": nm_mask(model[4].weight.detach().abs())})

    history = fit(
        model,
        train_loader,
        test_loader,
        epochs=2,
        lr=0.1,
        seed=0,
        progress=False,
        checkpoint_path=out / "checkpoint.pt",
    )

    state, masks = model_state(model)
    torch.save({"state": state, "masks": masks}, out / f"rank{rank}.pt")
    (out / f"history{rank}.json").write_text(json.dumps(history))
    distributed.cleanup_distributed()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
