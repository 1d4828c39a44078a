"""`python -m training train|export|adopt|evaluate ...` (also under torchrun for train).

This module runs the pipeline (export -> parity -> evaluation -> INT8 -> card); the modules it
calls do one step each and do not import one another's steps.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import shutil
import sys
from dataclasses import fields
from pathlib import Path

from .config import DRY_RUN, TrainConfig
from .contract import ContractError
from .data import DataError
from .layers import LayerError

log = logging.getLogger("training")


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.replace(",", " ").split()]


def _size(text: str) -> tuple[int, int, int]:
    try:
        h, w, c = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not HxWxC, e.g. 28x28x1") from None
    return h, w, c


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
    p.add_argument(
        "--plan",
        action="store_true",
        help="check the layers, print the shape table and parameter count; no training",
    )


def _output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--labels", required=True, help="class names: one a line, or a JSON list")
    p.add_argument("--out", required=True, help="models/NAME/model.onnx")
    p.add_argument("--mean", type=_floats, default=None, help="per channel, on [0, 1] pixels")
    p.add_argument("--std", type=_floats, default=None)
    p.add_argument("--background", choices=["dark", "light"], default=None)
    p.add_argument("--resize", choices=["pad", "crop", "stretch"], default="stretch")
    p.add_argument("--no-cam", action="store_true", help="serve no class-activation map")
    p.add_argument("--version", default="1.0.0")


def _export_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a checkpoint (or any PyTorch classifier) to ONNX")
    p.add_argument("checkpoint", nargs="?", help="best.pt written by train")
    p.add_argument("--out", default="models/fashion-mnist/model.onnx")
    p.add_argument("--name", default=None, help="model name (default: the output folder's name)")
    p.add_argument("--version", default="1.0.0")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--int8", action="store_true", help="also write model-int8.onnx (static QDQ)")
    p.add_argument("--no-evaluate", action="store_true", help="skip the test-set evaluation")
    g = p.add_argument_group("a PyTorch classifier convscope did not train")
    g.add_argument("--module", help="package.module:factory returning the nn.Module (logits)")
    g.add_argument("--weights", help="its state_dict (.pt)")
    g.add_argument("--labels", help="class names: one a line, or a JSON list")
    g.add_argument("--input", type=_size, help="HxWxC, e.g. 28x28x1")
    g.add_argument("--mean", type=_floats, default=None, help="per channel, on [0, 1] pixels")
    g.add_argument("--std", type=_floats, default=None)
    g.add_argument("--background", choices=["dark", "light"], default=None)
    g.add_argument("--resize", choices=["pad", "crop", "stretch"], default="stretch")
    g.add_argument("--no-cam", action="store_true", help="serve no class-activation map")


def _adopt_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("adopt", help="rewrite another tool's ONNX classifier into the contract")
    p.add_argument("model", help="the ONNX file (torch.onnx, tf2onnx, hand-built)")
    _output_options(p)
    p.add_argument("--layout", choices=["NCHW", "NHWC"], default=None)
    p.add_argument("--size", type=_size, default=None, help="HxWxC where the input's is dynamic")
    p.add_argument("--input-name", default=None)
    p.add_argument("--output-name", default=None)
    given = p.add_mutually_exclusive_group()
    given.add_argument("--logits", dest="given", action="store_const", const="logits")
    given.add_argument("--probabilities", dest="given", action="store_const",
                       const="probabilities")  # fmt: skip


def _evaluate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate an ONNX model on the test set; write the card")
    p.add_argument("model", help="model.onnx")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--dataset", default=None, help="default: the one the model was trained on")
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


def train_command(args: argparse.Namespace) -> None:
    from .data import load_dataset
    from .layers import plan, table
    from .nets import model_args_for

    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig)}
    if args.dry_run:
        values.update(DRY_RUN)
    cfg = TrainConfig(**values)
    if args.plan:
        ds = load_dataset(cfg.dataset, cfg.data_dir, cfg.image_size, cfg.allow_download)
        h, w, c = ds.shape
        layers = model_args_for(cfg.layers or cfg.preset, c, len(ds.labels))["layers"]
        print(table(plan(layers, c, h, w, len(ds.labels)), c, h, w))
        return
    from .train import train

    print(f"best checkpoint: {train(cfg)}")


def export_checkpoint(args: argparse.Namespace) -> None:
    """export -> parity on 256 test images -> evaluation -> INT8 -> card."""
    from .card import write_card
    from .contract import PARITY_TOLERANCE, update_metadata
    from .data import load_dataset
    from .evaluate import evaluate_model
    from .export import ServingWrapper, export_onnx, parity
    from .train import load_checkpoint

    net, ckpt = load_checkpoint(args.checkpoint)
    out = Path(args.out)
    export_onnx(net, ckpt, out, args.version)
    ds = load_dataset(ckpt["data"]["dataset"], args.data_dir or ckpt["config"].get("data_dir"),
                      ckpt["config"].get("image_size", 28))  # fmt: skip
    data = ckpt["data"]
    temperature = ckpt.get("calibration", {}).get("temperature", 1.0)
    wrapper = ServingWrapper(net, data["mean"], data["std"], temperature)
    diffs = parity(wrapper, out, ds.test_x[:256])
    worst = diffs["probabilities"]
    log.info("parity on 256 test images: max |dp| = %.2e (all outputs: %s)", worst,
             {k: f"{v:.1e}" for k, v in diffs.items()})  # fmt: skip
    if worst > PARITY_TOLERANCE:
        out.unlink()
        raise SystemExit(f"parity check failed: max |dp| {worst:.2e} > {PARITY_TOLERANCE}")
    curves = Path(args.checkpoint).parent / "curves.png"
    if curves.exists():
        shutil.copy(curves, out.parent / "curves.png")
    result = None
    if not args.no_evaluate:
        from .contract import read_metadata

        result = evaluate_model(out, ds.test_x, ds.test_y, out.parent)
        update_metadata(out, metrics={**read_metadata(out)["metrics"], **result.summary()})
    if args.int8:
        from .quantize import quantize_int8

        quantize_int8(out, ds.train_x[:512], ds.test_x, ds.test_y)
    if result is not None:
        write_card(out, result)
    print(f"exported {out} ({out.stat().st_size / 1e6:.2f} MB)")


def export_foreign(args: argparse.Namespace, argv: list[str]) -> None:
    """A module convscope never saw: trace, export, check, parity; its card."""
    from .card import write_card
    from .contract import read_labels
    from .export_module import ExportError, export_module, load_factory, load_weights

    missing = [f"--{n}" for n in ("weights", "labels", "input") if getattr(args, n) is None]
    if missing:
        raise ExportError(f"--module needs {', '.join(missing)} too")
    net = load_factory(args.module)
    load_weights(net, Path(args.weights))
    out = Path(args.out)
    export_module(net, out, read_labels(args.labels), args.input, args.mean, args.std,
                  args.resize, args.background, not args.no_cam, args.version, args.module,
                  _command(argv))  # fmt: skip
    write_card(out, None)
    print(f"exported {out} ({out.stat().st_size / 1e6:.2f} MB)")


def adopt_command(args: argparse.Namespace, argv: list[str]) -> None:
    from .adopt import AdoptOptions, adopt_model
    from .card import write_card
    from .contract import read_labels

    options = AdoptOptions(
        labels=read_labels(args.labels), layout=args.layout, mean=args.mean or [0.0],
        std=args.std or [1.0], size=args.size, input_name=args.input_name,
        output_name=args.output_name, outputs=args.given, resize=args.resize,
        background=args.background, cam=not args.no_cam, version=args.version,
        command=_command(argv),
    )  # fmt: skip
    out = adopt_model(Path(args.model), Path(args.out), options)
    write_card(out, None)
    print(f"adopted {args.model} as {out} ({out.stat().st_size / 1e6:.2f} MB)")


def evaluate_command(args: argparse.Namespace) -> None:
    from .card import write_card
    from .contract import read_metadata
    from .data import load_dataset
    from .evaluate import evaluate_model

    path = Path(args.model)
    meta = read_metadata(path)
    dataset = args.dataset or meta.get("metrics", {}).get("dataset", "fashion-mnist")
    ds = load_dataset(dataset, args.data_dir, int(meta["input"]["height"]))
    x, y = ds.test_x, ds.test_y
    if args.limit:
        x, y = x[: args.limit], y[: args.limit]
    result = evaluate_model(path, x, y, None if args.no_card else path.parent)
    print(json.dumps(result.summary()))
    for row in result.per_class():
        print(f"{row['label']:>12}  precision {100 * row['precision']:5.1f} %  "
              f"recall {100 * row['recall']:5.1f} %")  # fmt: skip
    photos = None
    if args.photos:
        from .photo_eval import evaluate_photos

        n = min(args.photos, len(ds.test_x))
        examples = None if args.no_card else path.parent / "photos.png"
        photos = evaluate_photos(path, ds.test_x[:n], ds.test_y[:n], examples=examples)
        print(json.dumps({"photos": photos.accuracy, "framed": photos.framed}))
    if not args.no_card:
        card = write_card(path, result)
        if photos is not None:
            from .photo_eval import card_section

            command = f"python -m training evaluate {path} --photos {args.photos}"
            card.write_text(
                f"{card.read_text()}\n" + "\n".join(card_section(photos, command)) + "\n"
            )
        print(f"card: {card}")


def _command(argv: list[str]) -> str:
    return shlex.join(["python", "-m", "training", *argv])


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m training")
    sub = parser.add_subparsers(dest="verb", required=True)
    _train_parser(sub)
    _export_parser(sub)
    _adopt_parser(sub)
    _evaluate_parser(sub)
    args = parser.parse_args(argv)
    try:
        if args.verb == "train":
            train_command(args)
        elif args.verb == "export" and args.module:
            export_foreign(args, argv)
        elif args.verb == "export":
            if not args.checkpoint:
                parser.error("export needs a checkpoint, or --module for your own network")
            export_checkpoint(args)
        elif args.verb == "adopt":
            adopt_command(args, argv)
        elif args.verb == "evaluate":
            evaluate_command(args)
    except (DataError, LayerError, ContractError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
