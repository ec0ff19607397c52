"""What every command shares: options generated from an options model, the scores' format, the one-line errors."""

from __future__ import annotations

import argparse
import logging
import math
import sys
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pipeline.destinations import command_context
from pipeline.inference.options import RunOptions
from pipeline.messages import UserError, first_line
from pipeline.quiet import set_verbose
from pipeline.training.errors import NonFiniteGradients

# The `train` extra's top-level modules: a command that needs one on a line PC's install says how to add them.
TRAINING_STACK = {"torch", "torchvision", "ultralytics", "mlflow", "albumentations", "onnx", "nncf", "pycocotools"}
TRACKING_HELP = RunOptions.model_fields["tracking_uri"].description  # every command's --tracking-uri


def add_options(
    parser: argparse.ArgumentParser,
    options: type[RunOptions],
    names: Iterable[str] = (),
    *,
    own: Mapping[str, Callable[[argparse.ArgumentParser], object]] | None = None,
    metavars: Mapping[str, str] | None = None,
) -> None:
    """One option per field of ``options`` (``names``: those only), with its type, default and description (a
    switch that is on by default is turned off by ``--no-NAME``); ``own``: the fields that add their own option."""
    for name in names or options.model_fields:
        field = options.model_fields[name]
        flag, kind = f"--{name.replace('_', '-')}", field.annotation
        default = field.get_default(call_default_factory=True)
        if own and name in own:
            own[name](parser)
        elif kind == bool | None:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=field.description)
        elif kind is bool:
            off = default is True
            flag, help_text = (f"--no-{flag[2:]}", f"no {field.description}") if off else (flag, field.description)
            parser.add_argument(flag, dest=name, action="store_false" if off else "store_true", help=help_text)
        elif choices := options.choices(name):  # a Literal's values; the runtime's, from the backends' registry
            parser.add_argument(flag, choices=choices, default=default, help=field.description)
        else:
            metavar = (metavars or {}).get(name)
            parser.add_argument(flag, type=_given(kind), default=default, metavar=metavar, help=field.description)


def _given(kind: object) -> object:
    """What a value on the command line is read as: ``int`` for ``int | None`` (None: the option not given)."""
    members = [k for k in typing.get_args(kind) if k is not type(None)]
    return members[0] if type(None) in typing.get_args(kind) and len(members) == 1 else kind


def options_from(
    args: argparse.Namespace, options: type[RunOptions], names: Iterable[str] = (), **values: Any
) -> RunOptions:
    """The options `add_options` added, read back from the parsed ``args`` and checked; ``values``: fields read
    otherwise (those of an own option)."""
    given = {name: getattr(args, name) for name in names or options.model_fields if name not in values}
    return options.checked(**given, **values)


def score(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.4f}"


def command_name(args: argparse.Namespace) -> str:
    """The command as a user typed it (``predict``, ``data synth``): what another process refused is told."""
    sub = getattr(args, "data_command", None) or getattr(args, "augment_command", None)
    return f"{args.command} {sub}" if sub else args.command


def run(args: argparse.Namespace) -> int:
    """Run the parsed command with the package's log lines shown; any error is one line on stderr, its exit code
    2 (what the user gave) or 1 (what went wrong), its traceback behind ``-v``."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("pipeline")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    logger.propagate = False
    set_verbose(args.verbose)
    try:
        with command_context(command_name(args), getattr(args, "wait", False)):
            return args.func(args)
    except (UserError, FileNotFoundError) as exc:  # the message is already the one line a user needs
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] in TRAINING_STACK:  # a line PC's install, asked for more than screening
            print(
                f"error: {command_name(args)} needs {exc.name}, which a line PC's install leaves out: "
                "pip install 'yolo-pipeline[train]'",
                file=sys.stderr,
            )
            return 2
        return _unforeseen(exc, args.verbose)
    except NonFiniteGradients as exc:  # the training stopped itself; its checkpoint is kept
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - nothing foreseen: still one line for the user, the traceback behind -v
        return _unforeseen(exc, args.verbose)
    finally:  # main() called again in one process (a script, the tests) writes each line once, to its own stderr
        logger.removeHandler(handler)


def _unforeseen(exc: Exception, verbose: bool) -> int:
    """One line for an error nothing foresaw, exit 1; under -v its traceback instead."""
    if verbose:
        raise exc
    reason = first_line(exc, 300) if str(exc).strip() else ""  # credentials in it redacted
    print(f"error: {type(exc).__name__}: {reason} (run with -v for the traceback)", file=sys.stderr)
    return 1
