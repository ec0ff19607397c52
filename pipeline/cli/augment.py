"""``augment preview``: augmented training samples drawn with their boxes."""

from __future__ import annotations

import argparse

from pipeline.config import load_config


def cmd_augment_preview(args: argparse.Namespace) -> int:
    from pipeline.training.augment_preview import preview  # here, not at the top: it imports torch

    config = load_config(args.config, args.overrides)
    result = preview(config, args.out, samples=args.samples, seed=args.seed)
    print(
        f"wrote {result.out}: {result.samples} augmented training samples, {result.boxes} boxes, "
        f"{result.transforms} albumentations transforms, symmetry p={config.augment.symmetry:g} "
        f"(preset {config.augment.preset})"
    )
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    augment = commands.add_parser("augment", help="augmentation tools").add_subparsers(
        dest="augment_command", required=True
    )
    p = augment.add_parser("preview", help="draw augmented training samples with their boxes")
    p.add_argument("config", help="experiment YAML")
    p.add_argument("overrides", nargs="*", help="section.key=value, e.g. augment.preset=surface")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_augment_preview)
