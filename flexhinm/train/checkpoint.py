"""Checkpoint files that load with ``torch.load(path, weights_only=True)`` and keep masks.

A checkpoint is a dict of tensors, dicts, lists, tuples, strings, numbers, booleans and ``None``:

* ``format`` (``"flexhinm-checkpoint"``), ``format_version``, ``flexhinm_version``,
  ``torch_version``;
* ``model``: the state dict under plain names, with dense weights (see
  :mod:`flexhinm.train.model_state`), and ``masks``: parameter name to bool mask;
* ``optimizers`` / ``optimizer_parameter_names`` / ``schedulers``: one entry per optimizer or
  scheduler, in the order given;
* ``epoch``: completed epochs (or ``None``); ``rng_states``: one :func:`get_rng_state` dict per
  process (index = rank); ``extra``: anything else of the allowed types, such as a training history.

Files are written atomically (a temporary file in the same folder, then ``os.replace``), so a run
killed while saving leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import warnings
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any, Union

import torch
from torch import nn

from .distributed import rank, world_size
from .loops import as_list
from .model_state import (
    load_model_state,
    load_optimizer_state,
    model_state,
    optimizer_parameter_names,
)
from .seed import get_rng_state, set_rng_state

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_FORMAT_VERSION",
    "apply_checkpoint",
    "load_checkpoint",
    "read_checkpoint",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = "flexhinm-checkpoint"
CHECKPOINT_FORMAT_VERSION = 1

Optimizers = Union[torch.optim.Optimizer, Sequence[torch.optim.Optimizer], None]
Schedulers = Union[torch.optim.lr_scheduler.LRScheduler, Sequence[Any], None]

_PLAIN_TYPES = (str, int, float, bool, type(None))


def _check_weights_only_types(value: Any, where: str) -> None:
    """Raise ``TypeError`` at the first value that ``torch.load(weights_only=True)`` rejects."""
    # Exact type checks: NumPy scalars subclass float and int but are pickled as NumPy objects.
    kind = type(value)
    if kind in _PLAIN_TYPES:
        return
    if kind in (torch.Tensor, nn.Parameter):
        return
    if kind in (dict, OrderedDict):
        for key, item in value.items():
            if type(key) not in (str, int):
                raise TypeError(f"{where} has a key {key!r} of type {type(key).__name__}; use str")
            _check_weights_only_types(item, f"{where}[{key!r}]")
        return
    if kind in (list, tuple):
        for index, item in enumerate(value):
            _check_weights_only_types(item, f"{where}[{index}]")
        return
    raise TypeError(
        f"{where} is a {kind.__module__}.{kind.__qualname__}, which torch.load(weights_only=True) "
        f"cannot read; convert it to a tensor, a list or a plain number (for NumPy: .tolist())"
    )


def save_checkpoint(
    path: str | PathLike,
    model: nn.Module,
    *,
    optimizer: Optimizers = None,
    scheduler: Schedulers = None,
    epoch: int | None = None,
    extra: Mapping[str, Any] | None = None,
    rng_states: Sequence[Mapping[str, Any]] | None = None,
) -> Path:
    """Write model, masks, optimizer, scheduler and random state to ``path`` atomically.

    Under DDP, call this on rank 0 only (:func:`flexhinm.train.fit` does); the DDP wrapper is
    removed first, so no key starts with ``module.``. Parent folders are created.

    Args:
        path: file to write (conventionally ``*.pt``).
        model: the model; masked weights are stored dense, their masks under ``"masks"``.
        optimizer: an optimizer, a sequence of them (for example SGD for weights and Adam for
            gates) or ``None``.
        scheduler: a learning-rate scheduler, a sequence of them or ``None``.
        epoch: completed epochs.
        extra: more values of the types ``weights_only`` accepts (tensors, dicts, lists, tuples,
            str, int, float, bool, None).
        rng_states: one :func:`get_rng_state` dict per process; default: this process's state.

    Returns:
        The path written.

    Raises:
        TypeError: if ``extra`` (or a state) contains a value that ``weights_only`` cannot load.
            The message names where it is.
    """
    path = Path(path)
    state, masks = model_state(model)
    optimizers = as_list(optimizer)
    schedulers = as_list(scheduler)
    if rng_states is None:
        rng_states = [get_rng_state()]

    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "flexhinm_version": _flexhinm_version(),
        "torch_version": str(torch.__version__),
        "model": state,
        "masks": masks,
        "optimizers": [item.state_dict() for item in optimizers],
        "optimizer_parameter_names": [
            optimizer_parameter_names(item, model) for item in optimizers
        ],
        "schedulers": [item.state_dict() for item in schedulers],
        "epoch": epoch,
        "rng_states": [dict(item) for item in rng_states],
        "extra": dict(extra or {}),
    }
    _check_weights_only_types(payload, "checkpoint")

    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(descriptor, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def _flexhinm_version() -> str:
    from .. import __version__

    return str(__version__)


def read_checkpoint(path: str | PathLike, *, map_location: Any = "cpu") -> dict[str, Any]:
    """Read and validate a checkpoint with ``torch.load(..., weights_only=True)``.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file is not a flexhinm checkpoint, or its format version is unknown.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {str(path)!r} not found (absolute path {path.resolve()}); "
            f"check the path or train first with checkpoint_path set"
        )

    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, KeyError, ValueError) as error:
        message = str(error).strip()
        reason = message.splitlines()[0][:200] if message else type(error).__name__
        raise ValueError(
            f"{str(path)!r} is not a flexhinm checkpoint: torch.load(weights_only=True) failed "
            f"({reason}); pass a file written by flexhinm.train.save_checkpoint"
        ) from error

    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        if isinstance(checkpoint, dict):
            found = sorted(map(str, checkpoint))[:8]
        else:
            found = type(checkpoint).__name__
        raise ValueError(
            f"{str(path)!r} is not a flexhinm checkpoint (no format={CHECKPOINT_FORMAT!r} entry; "
            f"found {found}); for a plain state dict use model.load_state_dict(torch.load(path))"
        )
    version = checkpoint.get("format_version")
    if type(version) is not int or not 1 <= version <= CHECKPOINT_FORMAT_VERSION:
        raise ValueError(
            f"{str(path)!r} has checkpoint format_version={version!r}, but this flexhinm "
            f"({_flexhinm_version()}) reads versions 1 to {CHECKPOINT_FORMAT_VERSION}; "
            f"upgrade flexhinm to read it"
        )
    return checkpoint


def apply_checkpoint(
    checkpoint: Mapping[str, Any],
    model: nn.Module | None = None,
    optimizer: Optimizers = None,
    scheduler: Schedulers = None,
    *,
    restore_rng: bool = False,
) -> None:
    """Load the parts of an already read checkpoint into the objects given (all optional).

    Applying a mask keeps the weight's ``Parameter`` object, so an optimizer may be built before
    or after the model is loaded. A DDP wrapper must be created after loading, because loading
    may add masks to the model.

    Raises:
        ValueError: if the number of optimizers or schedulers differs from the checkpoint's, or
            the model or an optimizer does not match (the message says what differs).
    """
    if model is not None:
        load_model_state(model, checkpoint["model"], checkpoint["masks"])

    optimizers = as_list(optimizer)
    if optimizers:
        saved = checkpoint["optimizers"]
        names = checkpoint.get("optimizer_parameter_names") or [None] * len(saved)
        if len(saved) != len(optimizers):
            raise ValueError(
                f"the checkpoint contains {len(saved)} optimizer state(s) but {len(optimizers)} "
                f"optimizer(s) were passed; pass them in the order used when saving"
            )
        for item, saved_state, saved_names in zip(optimizers, saved, names):
            load_optimizer_state(item, saved_state, saved_names, model)

    schedulers = as_list(scheduler)
    if schedulers:
        saved = checkpoint["schedulers"]
        if len(saved) != len(schedulers):
            raise ValueError(
                f"the checkpoint contains {len(saved)} scheduler state(s) but {len(schedulers)} "
                f"scheduler(s) were passed; pass them in the order used when saving"
            )
        for item, saved_state in zip(schedulers, saved):
            item.load_state_dict(saved_state)

    if restore_rng:
        states = checkpoint["rng_states"]
        if len(states) != world_size():
            warnings.warn(
                f"the checkpoint contains random states of {len(states)} process(es) but "
                f"{world_size()} are running; process {rank()} uses "
                f"{'its own' if rank() < len(states) else 'no'} saved state, so the run will "
                f"not repeat the original exactly",
                UserWarning,
                stacklevel=2,
            )
        if rank() < len(states):
            set_rng_state(states[rank()])


def load_checkpoint(
    path: str | PathLike,
    model: nn.Module | None = None,
    optimizer: Optimizers = None,
    scheduler: Schedulers = None,
    *,
    map_location: Any = "cpu",
    restore_rng: bool = False,
) -> dict[str, Any]:
    """Read ``path`` (see :func:`read_checkpoint`) and load it into the objects given.

    Args:
        path: a file written by :func:`save_checkpoint`.
        model: model to load into; masks in the checkpoint are applied if the model lacks them.
        optimizer: optimizer(s) in the order they were saved; build them like the saved ones.
        scheduler: scheduler(s) in the order they were saved.
        map_location: passed to ``torch.load``; tensors are then copied to the model's device.
        restore_rng: also restore this process's random state (rank ``r`` gets entry ``r``).

    Returns:
        The checkpoint dict (``epoch``, ``extra``, ``masks`` ... as in the module docstring).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file is not a flexhinm checkpoint, has an unknown format version, or
            does not match the objects given.

    Example:
        >>> import tempfile, flexhinm
        >>> model = nn.Linear(8, 2)
        >>> _ = flexhinm.apply_masks(model, {"weight": flexhinm.nm_mask(model.weight.abs())})
        >>> path = Path(tempfile.mkdtemp()) / "model.pt"
        >>> _ = save_checkpoint(path, model, epoch=3)
        >>> sorted(torch.load(path, weights_only=True)["masks"])
        ['weight']
        >>> fresh = nn.Linear(8, 2)
        >>> load_checkpoint(path, fresh)["epoch"]
        3
        >>> torch.equal(fresh.weight, model.weight)
        True
    """
    checkpoint = read_checkpoint(path, map_location=map_location)
    apply_checkpoint(checkpoint, model, optimizer, scheduler, restore_rng=restore_rng)
    return checkpoint
