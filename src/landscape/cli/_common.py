"""What the subcommands share: options, loading a model and data with one-line errors, outputs.

Every subcommand that reads a network takes the same model options (a checkpoint file, a
registered or timm model name, its options, a seed) and data options (a registered data set
or a tensor file), parsed by :func:`add_model_arguments` / :func:`add_data_arguments` and
turned into a model and batches by :func:`load_model` / :func:`load_data`. Bad input raises
:class:`UsageError`, which :func:`landscape.cli.main` prints as one line with exit code 2.
Heavy modules (torch, timm, the library) are imported inside the functions, so ``--help``
and argument errors answer at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from torch import Tensor, nn

    from landscape.data.files import TensorData

__all__ = [
    "UsageError",
    "Parser",
    "LOSSES",
    "DTYPES",
    "ModelInput",
    "DataInput",
    "add_model_arguments",
    "add_data_arguments",
    "add_run_arguments",
    "add_output_arguments",
    "json_object",
    "positive_int",
    "positive_float",
    "check_common",
    "check_choice",
    "load_data",
    "load_model",
    "check_targets",
    "loss_function",
    "batches_of",
    "resolve_device",
    "check_bn_mode",
    "progress",
    "counting_loss",
    "Timer",
    "write_result",
    "write_figure",
]

LOSSES: tuple[str, ...] = ("cross_entropy", "mse")
"""Batch-mean losses: cross-entropy of logits against class labels (or class probabilities), mean squared error."""

DTYPES: tuple[str, ...] = ("float32", "float64")


class UsageError(Exception):
    """Bad input from the user: printed as one line on stderr, exit code 2."""


class Parser(argparse.ArgumentParser):
    """``argparse`` with one-line errors: ``<prog>: error: <message> (see <prog> --help)``, exit 2."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def json_object(text: str) -> dict[str, Any]:
    """argparse type: a JSON object (``'{"width": 8}'``)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc.msg}): {text!r}; expected an object such as '{{\"width\": 8}}'") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"width\": 8}}', got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an int >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite float > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


# ----------------------------------------------------------------------------- options


def add_model_arguments(parser: argparse.ArgumentParser, *, checkpoint: bool = True) -> None:
    """``--checkpoint``, ``--model``, ``--model-kwargs``, ``--pretrained``."""
    group = parser.add_argument_group("model")
    if checkpoint:
        group.add_argument("--checkpoint", type=Path, metavar="FILE",
                           help="weights: a model.pt as the train stage writes it (runs/<exp>/<cfg>/seed<k>/model.pt, "
                                "architecture recorded) or a plain state_dict (then --model names the architecture)")
    group.add_argument("--model", metavar="NAME",
                       help="architecture: a registered name (mlp, cnn_small, resnet_small, ...) or any timm model name; "
                            "without --checkpoint it is randomly initialised from --seed")
    group.add_argument("--model-kwargs", type=json_object, default={}, metavar="JSON",
                       help="architecture options as a JSON object, e.g. '{\"width\": 64, \"depth\": 2}' "
                            "(num_classes and input sizes default to the data's)")
    group.add_argument("--pretrained", action="store_true",
                       help="timm's pretrained weights, read from the local Hugging Face cache only (never downloaded)")


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """``--data``, ``--split``, ``--data-root``, ``--data-options``, ``--num-examples``, ``--batch-size``, ``--loss``."""
    group = parser.add_argument_group("data")
    group.add_argument("--data", required=True, metavar="NAME|FILE",
                       help="a registered data set (digits and mnist5k ship offline; mnist, cifar10, ... under --data-root) "
                            "or a torch.save file holding {'inputs': X, 'targets': Y}, a pair (X, Y), or splits of them")
    group.add_argument("--split", help="the split to read from a file of splits (e.g. probe in data/prepared/<set>/splits.pt)")
    group.add_argument("--data-root", type=Path, default=Path("data/raw"), metavar="DIR",
                       help="directory of downloaded data sets (default: data/raw)")
    group.add_argument("--data-options", type=json_object, default={}, metavar="JSON",
                       help="options of the registered data set, e.g. '{\"image_size\": 14}' for mnist5k")
    group.add_argument("--num-examples", type=positive_int, default=512, metavar="N",
                       help="examples used: a seeded subset (--seed) of N, in data order (default 512; all if fewer)")
    group.add_argument("--batch-size", type=positive_int, default=128, metavar="B", help="examples per batch (default 128)")
    group.add_argument("--loss", default="cross_entropy", metavar="LOSS",
                       help=f"batch-mean loss: {' or '.join(LOSSES)} (default cross_entropy)")


def add_run_arguments(parser: argparse.ArgumentParser, *, bn_modes: Sequence[str], bn_help: str) -> None:
    """``--bn-mode``, ``--seed``, ``--dtype``, ``--device``, ``--threads``, ``--quiet``."""
    group = parser.add_argument_group("run")
    group.add_argument("--bn-mode", default="eval", metavar="MODE", help=f"BatchNorm policy: {bn_help} (default eval)")
    group.add_argument("--seed", type=int, default=0, help="seed of the initialisation, the data subset and every estimator (default 0)")
    group.add_argument("--dtype", default="float32", metavar="DTYPE", help=f"{' or '.join(DTYPES)} (default float32)")
    group.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda when available, else cpu)")
    group.add_argument("--threads", type=positive_int, metavar="N", help="CPU threads of torch (default: torch's own choice)")
    group.add_argument("--quiet", action="store_true", help="no progress bars on stderr")
    parser.set_defaults(bn_modes=tuple(bn_modes))


def add_output_arguments(parser: argparse.ArgumentParser, *, plot_help: str) -> None:
    """``--out`` (JSON) and ``--plot`` (PNG)."""
    group = parser.add_argument_group("output")
    group.add_argument("--out", type=Path, metavar="FILE", help="write the result as JSON (atomically); default: print it")
    group.add_argument("--plot", type=Path, metavar="FILE", help=plot_help)


# ----------------------------------------------------------------------------- checks


def check_bn_mode(mode: str, allowed: Sequence[str]) -> str:
    """The BN policy, or a :class:`UsageError` naming the accepted ones."""
    if mode not in allowed:
        raise UsageError(f"unknown --bn-mode {mode!r}; accepted: {', '.join(allowed)}")
    return mode


def check_choice(flag: str, value: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise UsageError(f"unknown {flag} {value!r}; accepted: {', '.join(allowed)}")
    return value


def check_common(args: argparse.Namespace) -> None:
    """Checks of the shared options that need no heavy import (run before loading anything)."""
    check_bn_mode(args.bn_mode, args.bn_modes)
    check_choice("--dtype", args.dtype, DTYPES)
    check_choice("--loss", args.loss, LOSSES)
    if args.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {args.seed}")


def resolve_device(name: str) -> Any:
    """``--device`` as a ``torch.device`` ("auto": cuda when available, else cpu)."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown --device {name!r}; accepted: auto, cpu, cuda, cuda:<index>") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name} asked for, but torch sees no CUDA device; use --device cpu")
    return device


# ----------------------------------------------------------------------------- data


@dataclasses.dataclass(frozen=True)
class DataInput:
    """The data a subcommand works on: tensors, their class count and where they came from."""

    data: TensorData
    num_classes: int | None  # class labels: max label + 1 of the whole source (or the registry's count)
    record: dict[str, Any]


def load_data(args: argparse.Namespace) -> DataInput:
    """``--data`` as a registered set or a tensor file, subset to ``--num-examples`` with ``--seed``."""
    from landscape.data import DATASETS, TensorData, load_dataset, load_tensor_file, subset

    source = str(args.data)
    is_file = Path(source).is_file() or source.endswith((".pt", ".pth"))
    try:
        if is_file:
            if args.data_options:
                raise UsageError(f"--data-options apply to registered data sets, not to the file {source}")
            data = load_tensor_file(source, split=args.split)
            classes = int(data.targets.max()) + 1 if not data.targets.is_floating_point() and data.targets.ndim == 1 else None
        else:
            if source not in DATASETS:
                raise UsageError(f"unknown data set {source!r} (and no such file); registered data sets: {', '.join(sorted(DATASETS))}; "
                                 "or give a torch.save file of (inputs, targets)")
            if args.split is not None:
                raise UsageError(f"--split applies to a file of splits, not to the registered data set {source!r}")
            ds = load_dataset(source, args.data_root, **args.data_options)
            data, classes = TensorData(ds.x, ds.y, source), ds.num_classes
        data = subset(data, args.num_examples, args.seed)
    except (ValueError, FileNotFoundError) as exc:
        raise UsageError(str(exc)) from None
    record = data.to_dict() | {"num_classes": classes, "seed": args.seed}
    return DataInput(data, classes, record)


def check_targets(outputs: Tensor, data: TensorData, loss: str) -> None:
    """Targets fit the loss and the model's outputs on one example (``outputs`` (1, ...))."""
    y, out = data.targets, tuple(outputs.shape[1:])
    if loss == "cross_entropy":
        if len(out) != 1:
            raise UsageError(f"cross_entropy needs logits (N, C) from the model, got outputs of shape (N, {', '.join(map(str, out))})")
        if y.is_floating_point():
            if tuple(y.shape[1:]) != out:
                raise UsageError(f"{data.source}: targets of shape {tuple(y.shape)} are neither class labels (N,) nor class "
                                 f"probabilities (N, {out[0]}) for the model's {out[0]} logits")
        elif y.ndim != 1 or int(y.min()) < 0 or int(y.max()) >= out[0]:
            raise UsageError(f"{data.source}: class labels must be (N,) in [0, {out[0]}) for the model's {out[0]} logits, got "
                             f"shape {tuple(y.shape)} with values in [{int(y.min())}, {int(y.max())}]")
    elif not y.is_floating_point() or tuple(y.shape[1:]) != out:
        raise UsageError(f"{data.source}: mse needs float targets of the outputs' shape (N, {', '.join(map(str, out))}), got "
                         f"{str(y.dtype).removeprefix('torch.')} targets of shape {tuple(y.shape)}")


def loss_function(name: str) -> Callable[[Tensor, Tensor], Tensor]:
    """The batch-mean loss named by ``--loss``."""
    import torch.nn.functional as F

    return F.cross_entropy if name == "cross_entropy" else F.mse_loss


def batches_of(data: TensorData, batch_size: int, device: Any, dtype: Any) -> list[tuple[Tensor, Tensor]]:
    """Consecutive batches on ``device``; inputs (and float targets) cast to ``dtype``."""
    x = data.inputs.to(device=device, dtype=dtype)
    y = data.targets.to(device=device, dtype=dtype) if data.targets.is_floating_point() else data.targets.to(device)
    return [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)]


# ----------------------------------------------------------------------------- model


@dataclasses.dataclass(frozen=True)
class ModelInput:
    """A network ready for the library: on its device and dtype, with a record of its origin."""

    model: nn.Module
    record: dict[str, Any]


def _size_kwargs(name: str, shape: tuple[int, ...], num_classes: int | None) -> dict[str, Any]:
    """Sizes of a new network from the data, as the train stage sizes them (timm's take no img_size)."""
    from landscape.models import model_origin

    ours = model_origin(name) == "registered"  # ValueError for an unknown name, listing the registered ones
    kwargs: dict[str, Any] = {} if num_classes is None else {"num_classes": num_classes}
    if len(shape) == 3:
        kwargs["in_chans"] = shape[0]
        if ours:
            kwargs["img_size"] = shape[1]
    elif ours:
        kwargs["in_features"] = math.prod(shape)
    else:
        raise UsageError(f"timm model {name!r} takes images (N, C, H, W), but the data has examples of shape {shape}")
    return kwargs


def load_model(args: argparse.Namespace, data: DataInput, checkpoint: Path | None = None, *, role: str = "checkpoint") -> ModelInput:
    """The network of ``checkpoint`` (or ``--checkpoint``), or ``--model`` initialised from ``--seed``.

    A train-stage ``model.pt`` carries its architecture (``--model`` may repeat it); a plain
    state_dict needs ``--model`` and is loaded into ``create_model(--model, sizes from the
    data | --model-kwargs)``. The inputs and targets are checked against the network
    with one forward pass on one example.
    """
    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    from landscape.models import check_inputs, create_model, describe, input_shape, load_weights, read_checkpoint

    path = checkpoint if checkpoint is not None else getattr(args, "checkpoint", None)
    shape = tuple(data.data.inputs.shape[1:])
    try:
        if path is not None:
            if args.pretrained:
                raise UsageError(f"--pretrained and a {role} both give weights; use one")
            ck = read_checkpoint(path)
            if ck.name is not None:
                if args.model is not None and args.model != ck.name:
                    raise UsageError(f"{role} {path} records model {ck.name!r} but --model says {args.model!r}")
                name, kwargs, origin = ck.name, dict(ck.kwargs) | args.model_kwargs, "train-stage checkpoint"
            else:
                if args.model is None:
                    raise UsageError(f"{role} {path} is a plain state_dict; name its architecture with --model "
                                     "(and its options with --model-kwargs)")
                name, origin = args.model, "state_dict"
                kwargs = _size_kwargs(args.model, shape, data.num_classes) | args.model_kwargs
            # cast before loading, so a float64 checkpoint keeps every digit under --dtype float64
            model = create_model(name, seed=args.seed, **kwargs).to(dtype=getattr(torch, args.dtype))
            model = load_weights(model, ck.state_dict, source=f"{role} {path}")
            source = {"origin": origin, "path": str(path)}
        else:
            if args.model is None:
                raise UsageError("no network given: pass --checkpoint FILE or --model NAME (random initialisation from --seed)")
            name = args.model
            kwargs = _size_kwargs(name, shape, data.num_classes) | args.model_kwargs
            model = create_model(name, seed=args.seed, pretrained=args.pretrained, **kwargs)
            source = {"origin": "timm pretrained (local cache)" if args.pretrained else "random initialisation", "seed": args.seed}
        outputs = check_inputs(model, data.data.inputs, expected=input_shape(name, kwargs), what=data.data.source)
    except (ValueError, FileNotFoundError) as exc:
        raise UsageError(str(exc)) from None
    check_targets(outputs, data.data, args.loss)
    device, dtype = resolve_device(args.device), getattr(torch, args.dtype)
    model = model.to(device=device, dtype=dtype)
    record = {"name": name, "kwargs": kwargs, **source, "description": describe(model).to_dict(),
              "dtype": args.dtype, "device": str(device)}
    return ModelInput(model, record)


# ----------------------------------------------------------------------------- progress, outputs


@contextmanager
def progress(desc: str, total: int | None, quiet: bool, unit: str = "mv") -> Iterator[Any]:
    """A tqdm bar on stderr (a no-op bar with ``quiet``); ``update(n)`` advances it by n ``unit``
    (``mv``: operator-vector products; ``batch``: loss evaluations of one batch; ``layer``)."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit=unit, disable=quiet, file=sys.stderr, dynamic_ncols=True, leave=True)
    try:
        yield bar
    finally:
        bar.close()


def counting_loss(loss_fn: Callable[[Tensor, Tensor], Tensor], bar: Any) -> Callable[[Tensor, Tensor], Tensor]:
    """``loss_fn`` that advances ``bar`` by one per batch it evaluates (probe progress)."""

    def counted(outputs: Tensor, targets: Tensor) -> Tensor:
        bar.update(1)
        return loss_fn(outputs, targets)

    return counted


class Timer:
    """Wall-clock seconds of named phases."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def tick(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = now - self._last
        self._last = now


def write_result(result: dict[str, Any], out: Path | None) -> None:
    """Write ``result`` as JSON to ``out`` atomically (landscape.io), or print it to stdout."""
    from landscape.io import to_jsonable, write_json

    if out is None:
        print(json.dumps(to_jsonable(result), indent=2, sort_keys=True))
    else:
        write_json(out, result)


def write_figure(fig: Any, path: Path) -> None:
    """Save a Matplotlib figure as PNG atomically."""
    from landscape.io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
