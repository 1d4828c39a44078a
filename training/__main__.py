"""`python -m training train|export|evaluate ...` (also under torchrun for train)."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import fields

from .config import DRY_RUN, TrainConfig
from .data import DataError


def _train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a CNN and keep the best calibrated checkpoint")
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        value = getattr(defaults, f.name)
        if isinstance(value, bool) or f.name == "flip":
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=value)
        else:
            kind = {"int": int, "float": float}.get(str(f.type).replace(" | None", ""), str)
            p.add_argument(flag, type=kind, default=value, help=f"default: {value}")
    p.add_argument("--dry-run", action="store_true", help=f"tiny run: {DRY_RUN}")


def _export_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a checkpoint to a self-describing ONNX model")
    p.add_argument("checkpoint", help="best.pt written by train")
    p.add_argument("--out", default="models/fashion-mnist/model.onnx")
    p.add_argument("--name", default=None, help="model name (default: the output folder's name)")
    p.add_argument("--version", default="1.0.0")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--int8", action="store_true", help="also write model-int8.onnx (static QDQ)")
    p.add_argument("--no-evaluate", action="store_true", help="skip the test-set evaluation")


def _evaluate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate an ONNX model on the test set; write the card")
    p.add_argument("model", help="model.onnx")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--limit", type=int, default=None, help="evaluate on the first N test images")
    p.add_argument("--no-card", action="store_true", help="print only; leave the card alone")
    p.add_argument(
        "--photos",
        type=int,
        default=0,
        metavar="N",
        help="also measure the first N test pictures and their photo-like renditions through "
        "the real service (training/photo_eval.py)",
    )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="python -m training")
    sub = parser.add_subparsers(dest="verb", required=True)
    _train_parser(sub)
    _export_parser(sub)
    _evaluate_parser(sub)
    args = parser.parse_args(argv)
    try:
        if args.verb == "train":
            from .train import train

            values = {f.name: getattr(args, f.name) for f in fields(TrainConfig)}
            if args.dry_run:
                values.update(DRY_RUN)
            best = train(TrainConfig(**values))
            print(f"best checkpoint: {best}")
        elif args.verb == "export":
            from .export import export_command

            export_command(args)
        elif args.verb == "evaluate":
            from .evaluate import evaluate_command

            evaluate_command(args)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
