"""Training, evaluation, checkpoints and data-parallel runs for flexhinm models.

* :func:`fit`: SGD with momentum and a per-iteration cosine learning rate, evaluation after every
  epoch, checkpoints and exact resume; runs unchanged under ``torchrun`` (DDP).
* :func:`train_one_epoch` and :func:`evaluate`: the two loops, for custom drivers.
* :func:`make_optimizer` and :func:`make_scheduler`: the optimizer (no weight decay on biases and
  normalisation parameters) and the cosine schedule that :func:`fit` uses.
* :func:`save_checkpoint` / :func:`load_checkpoint`: files that load with
  ``torch.load(..., weights_only=True)`` and keep masks, optimizer, scheduler and random states.
* :mod:`flexhinm.train.distributed`: process-group helpers (``rank()``, ``world_size()`` ...).

Accuracy is top-1 in percent (0 to 100) throughout.
"""

from . import distributed
from .checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_FORMAT_VERSION,
    apply_checkpoint,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from .distributed import is_main_process, rank, unwrap_model, world_size
from .fit import fit
from .loops import EpochMetrics, evaluate, train_one_epoch
from .model_state import load_model_state, model_state, plain_parameter_name
from .optim import CosineSchedule, cosine_lr_factor, make_optimizer, make_scheduler
from .seed import get_rng_state, seed_everything, set_rng_state

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_FORMAT_VERSION",
    "CosineSchedule",
    "EpochMetrics",
    "apply_checkpoint",
    "cosine_lr_factor",
    "distributed",
    "evaluate",
    "fit",
    "get_rng_state",
    "is_main_process",
    "load_checkpoint",
    "load_model_state",
    "make_optimizer",
    "make_scheduler",
    "model_state",
    "plain_parameter_name",
    "rank",
    "read_checkpoint",
    "save_checkpoint",
    "seed_everything",
    "set_rng_state",
    "train_one_epoch",
    "unwrap_model",
    "world_size",
]
