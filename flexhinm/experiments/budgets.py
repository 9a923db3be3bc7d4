"""Named training budgets for the main job and the book: how many epochs, images and batches.

The budgets trade accuracy for time. ``smoke`` checks that everything runs; ``quick`` and ``book``
fit a 2-core CPU; ``full`` is the usual CIFAR recipe and needs a GPU.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

__all__ = ["BUDGETS", "Budget", "get_budget"]


@dataclass(frozen=True)
class Budget:
    """Epochs and data sizes of one run.

    Attributes:
        name: the budget's name.
        dense_epochs: epochs of dense training from scratch.
        finetune_epochs: epochs of fine-tuning after pruning, the same for every method.
        batch_size: training images per step.
        lr: peak SGD learning rate of dense training (cosine decay to 0).
        finetune_lr: peak SGD learning rate of fine-tuning (cosine decay to 0).
        weight_decay: L2 coefficient on weights (not on biases or BatchNorm parameters).
        train_limit: use only the first ``train_limit`` training images (``None``: all found).
        eval_limit: evaluate on only the first ``eval_limit`` test images (``None``: all found).
        description: one line for ``--help``.
    """

    name: str
    dense_epochs: int
    finetune_epochs: int
    batch_size: int = 128
    lr: float = 0.1
    finetune_lr: float = 0.01
    weight_decay: float = 5e-4
    train_limit: int | None = None
    eval_limit: int | None = None
    description: str = ""

    def with_overrides(self, **changes) -> Budget:
        """Return a copy with the fields in ``changes`` replaced (``None`` values are ignored)."""
        return replace(self, **{key: value for key, value in changes.items() if value is not None})

    def to_dict(self) -> dict:
        """Return the fields as a JSON-ready dict."""
        return asdict(self)


BUDGETS: dict[str, Budget] = {
    "smoke": Budget(
        "smoke",
        dense_epochs=2,
        finetune_epochs=1,
        train_limit=2000,
        eval_limit=1000,
        description="2 dense epochs on 2,000 images, 1 fine-tune epoch: checks that everything "
        "runs (under 2 minutes on 2 CPU cores)",
    ),
    "quick": Budget(
        "quick",
        dense_epochs=15,
        finetune_epochs=1,
        description="15 dense epochs, 1 fine-tune epoch per method: about 10 minutes on 2 CPU "
        "cores with the 10,000-image CIFAR-10 subset",
    ),
    "book": Budget(
        "book",
        dense_epochs=10,
        finetune_epochs=1,
        description="10 dense epochs, 1 fine-tune epoch: the chapters' default on a CPU build",
    ),
    "full": Budget(
        "full",
        dense_epochs=200,
        finetune_epochs=40,
        description="200 dense epochs, 40 fine-tune epochs: the usual CIFAR recipe, for a GPU",
    ),
}


def get_budget(name: str) -> Budget:
    """Return the budget called ``name``.

    Example:
        >>> get_budget("quick").dense_epochs
        15
    """
    if name not in BUDGETS:
        raise ValueError(f"unknown budget {name!r}; choose one of {sorted(BUDGETS)}")
    return BUDGETS[name]
