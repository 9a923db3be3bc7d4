"""The ``flexhinm`` command. ``flexhinm run`` is the main job; ``flexhinm info`` shows the set-up."""

from __future__ import annotations

import argparse
import contextlib
import logging
import shlex
import sys
from collections.abc import Iterator, Sequence

__all__ = ["build_parser", "main"]

DEFAULT_METHODS = (
    "dense", "unstructured", "nm", "ovw", "hinm", "hinm-gp", "flexhinm", "flexhinm-gp",
)
DEFAULT_SPARSITIES = (0.75, 0.875)


def _sparsity(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"sparsity {text!r} is not a number; write 0.75 for 75 %")
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(
            f"sparsity {value} is outside [0, 1); it is the fraction of zeros, so 75 % is 0.75"
        )
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _device(text: str) -> str:
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"device {text!r} is invalid: torch cannot parse it. Write "
                                         "cpu, cuda or cuda:0, or leave --device out")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(
            f"device {text!r} needs a CUDA GPU, and torch finds none (torch.cuda.is_available() is "
            "False); use --device cpu, or leave --device out to use the GPU only when there is one"
        )
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(
            f"device {text!r} not found: torch finds {torch.cuda.device_count()} CUDA GPU(s), "
            f"numbered from 0"
        )
    return text


class _CliFormatter(logging.Formatter):
    """Progress messages as plain lines; warnings and errors with their level in front."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        return message if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {message}"


# Loggers whose INFO messages tell a command-line user what the main job is doing.
_PROGRESS_LOGGERS = (
    "flexhinm.experiments", "flexhinm.train.fit", "flexhinm.gradual.stage", "flexhinm.data",
)


@contextlib.contextmanager
def _progress_messages() -> Iterator[None]:
    """Print the main job's INFO messages to stderr, then restore the loggers as they were."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_CliFormatter())
    loggers = [logging.getLogger(name) for name in _PROGRESS_LOGGERS]
    saved = [(logger.level, logger.handlers, logger.propagate) for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.INFO)
        logger.handlers = [handler]
        logger.propagate = False
    try:
        yield
    finally:
        for logger, (level, handlers, propagate) in zip(loggers, saved):
            logger.setLevel(level)
            logger.handlers = handlers
            logger.propagate = propagate


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``flexhinm`` command."""
    from .experiments import BUDGETS, METHODS

    parser = argparse.ArgumentParser(
        prog="flexhinm",
        description="Hierarchical N:M sparsity for PyTorch: the main job and set-up checks.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="train a dense model, prune copies with each method, fine-tune and compare",
        description=(
            "Train a dense model (or load it from the cache), prune a copy with each method at "
            "each sparsity, fine-tune every copy with the same epochs, then print a table "
            "(method, sparsity of the pruned layers, weights kept, top-1) and write "
            "results.json and results.png to --out."
        ),
    )
    budget_help = "; ".join(f"{name}: {spec.description}" for name, spec in BUDGETS.items())
    run.add_argument("--budget", choices=sorted(BUDGETS), default="quick",
                     help=f"training budget (default quick). {budget_help}")
    run.add_argument("--method", dest="methods", nargs="+", choices=sorted(METHODS),
                     default=list(DEFAULT_METHODS), metavar="METHOD",
                     help=f"methods to compare, from {sorted(METHODS)}; 'nm' is 2:4 (always 50 %%), "
                     f"and when both 'nm' and 'unstructured' are chosen, unstructured also runs "
                     f"at 50 %% next to it; default: {' '.join(DEFAULT_METHODS)}")
    run.add_argument("--sparsity", dest="sparsities", nargs="+", type=_sparsity,
                     default=list(DEFAULT_SPARSITIES), metavar="FRACTION",
                     help="target sparsities, each the fraction of zeros in every pruned layer "
                     f"(0.75 = 75 %%); default: {' '.join(map(str, DEFAULT_SPARSITIES))}")
    run.add_argument("--tile-rows", type=_positive_int, default=16, metavar="ROWS",
                     help="output rows per tile of the hierarchical methods (default 16: ResNet-20 "
                     "layers have 16 to 64 output rows, so 64-row tiles would leave one tile per "
                     "layer and nothing for Gyro-Permutation to move)")
    run.add_argument("--score", default="magnitude",
                     choices=["magnitude", "taylor", "fisher", "fisher-block"],
                     help="importance score (default magnitude, |w|)")
    run.add_argument("--model", default="resnet20", help="model name from the registry (default resnet20)")
    run.add_argument("--dataset", default="cifar10", choices=["cifar10", "imagenette"],
                     help="data set (default cifar10)")
    run.add_argument("--data-root", default=None, metavar="DIR",
                     help="folder with cifar10/ or imagenet-subset/; default $FLEXHINM_DATA, "
                     "then ~/.cache/flexhinm/data")
    run.add_argument("--download", action="store_true",
                     help="download full CIFAR-10 (about 170 MB) with torchvision if it is missing")
    run.add_argument("--epochs", type=_positive_int, default=None,
                     help="dense training epochs (default: from --budget)")
    run.add_argument("--finetune-epochs", type=_positive_int, default=None,
                     help="fine-tuning epochs per method (default: from --budget)")
    run.add_argument("--batch-size", type=_positive_int, default=None,
                     help="training images per step (default: from --budget)")
    run.add_argument("--train-limit", type=_positive_int, default=None, metavar="IMAGES",
                     help="use only the first IMAGES training images (default: from --budget)")
    run.add_argument("--seed", type=int, default=0, help="random seed, an integer (default 0)")
    run.add_argument("--device", default=None, type=_device,
                     help="torch device, e.g. cpu or cuda:0 (default: cuda if available)")
    run.add_argument("--out", default="runs/latest", metavar="DIR",
                     help="folder for results.json and results.png (default runs/latest)")
    run.add_argument("--no-cache", action="store_true",
                     help="train the dense model again even if a cached copy exists")
    run.add_argument("--no-progress", action="store_true",
                     help="hide progress bars (one line per epoch and per method still shows)")

    commands.add_parser("info", help="show versions, data found and Sparse Tensor Core support")

    strip = commands.add_parser(
        "strip-solutions",
        help="write a copy of a chapter without its solutions (for coursework)",
        description="Copy a book chapter without the cells tagged 'solution', the discussions of "
                    "its open questions and its outputs. Run the copy from the book/ folder of a "
                    "clone, where the chapter finds ../benchmarks/results.",
    )
    strip.add_argument("source", help="chapter notebook (.ipynb)")
    strip.add_argument("target", help="where to write the student copy (.ipynb)")
    return parser


def _run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from .experiments import get_budget, run_comparison
    from .train.distributed import is_main_process

    budget = get_budget(args.budget).with_overrides(
        dense_epochs=args.epochs,
        finetune_epochs=args.finetune_epochs,
        batch_size=args.batch_size,
        train_limit=args.train_limit,
    )
    comparison = run_comparison(
        model_name=args.model,
        dataset=args.dataset,
        budget=budget,
        methods=args.methods,
        sparsities=args.sparsities,
        seed=args.seed,
        root=args.data_root,
        download=args.download,
        device=args.device,
        use_cache=not args.no_cache,
        progress=not args.no_progress,
        tile_rows=args.tile_rows,
        score=args.score,
        out_dir=args.out,
        command="flexhinm " + shlex.join(argv),
    )
    if is_main_process():
        meta = comparison.meta
        sys.stdout.write(
            f"\n{args.model} on {args.dataset}: {meta['train_images']:,} training and "
            f"{meta['eval_images']:,} test images ({meta['data_source']}), budget {budget.name}, "
            f"{meta['seconds']:.0f} s\n\n{comparison.table()}\n\n"
            f"results: {args.out}/results.json and {args.out}/results.png\n"
        )
    return 0


def _info() -> int:
    import torch

    from . import __version__
    from .data import data_roots

    lines = [f"flexhinm {__version__}, torch {torch.__version__}, Python {sys.version.split()[0]}"]
    for root in data_roots():
        found = [name for name in ("cifar10", "imagenet-subset") if (root.path / name).is_dir()]
        lines.append(f"data root {root.path} ({root.origin}): {', '.join(found) or 'no data'}")
    try:
        from .inference import detect_capability

        lines.append(detect_capability().summary())
    except ImportError:
        pass
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``flexhinm`` command with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    try:
        if args.command == "run":
            with _progress_messages():
                return _run(args, argv)
        if args.command == "strip-solutions":
            from .book import strip_solutions

            removed = strip_solutions(args.source, args.target)
            sys.stdout.write(f"wrote {args.target} without {removed} solution cell(s) and "
                             f"discussion(s)\n")
            return 0
        return _info()
    except (FileNotFoundError, ValueError) as error:
        sys.stderr.write(f"flexhinm {args.command}: error: {error}\n")
        if args.command == "run" and isinstance(error, FileNotFoundError):
            sys.stderr.write("On the command line, pass --data-root DIR (the folder that contains "
                             "cifar10/ or imagenet-subset/), set FLEXHINM_DATA=DIR, or add "
                             "--download for full CIFAR-10.\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
