"""Export a checkpoint to the self-describing ONNX model of DESIGN.md: export, full check, parity.

The graph takes the service's uint8 NHWC pixels and does scaling, normalisation, the layout
change and the temperature itself, so training and serving cannot disagree about them.
"""

from __future__ import annotations

import datetime as dt
import logging
import platform
import shlex
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .config import TrainConfig
from .contract import INPUT_NAME, OPSET, cam_entry, save_model, set_metadata
from .nets import ConvNet

log = logging.getLogger("training.export")
EXACT_CAM = "class-activation map: the linear head's weights over the last stage (GAP head)"


class ServingWrapper(nn.Module):
    """uint8 [N,H,W,C] -> probabilities, logits, features/<layer>..., cam."""

    def __init__(self, net: ConvNet, mean: list[float], std: list[float], temperature: float):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("temperature", torch.tensor(float(temperature)))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = image.permute(0, 3, 1, 2).to(torch.float32) / 255.0
        x = (x - self.mean) / self.std
        features = self.net.forward_features(x)
        last = list(features.values())[-1]
        logits = self.net.forward_head(last)
        probabilities = torch.softmax(logits / self.temperature, dim=1)
        cam = self.net.class_activation_maps(last)
        return (probabilities, logits, *features.values(), cam)


def output_names(net: ConvNet) -> list[str]:
    names = [name for name, _ in net.feature_stages()]
    return ["probabilities", "logits", *[f"features/{n}" for n in names], "cam"]


def layer_specs(net: ConvNet, height: int, width: int, channels: int) -> list[dict[str, Any]]:
    """Kernel, stride, padding and output shape for every features/* output."""
    with torch.no_grad():
        feats = net.eval().forward_features(torch.zeros(1, channels, height, width))
    specs = []
    for (name, stage), value in zip(net.feature_stages(), feats.values()):
        k = stage.kernel_size if hasattr(stage, "kernel_size") else stage.kernel
        specs.append(
            {
                "output": f"features/{name}",
                "name": name,
                "kind": stage.kind,
                "kernel": int(k if isinstance(k, int) else k[0]),
                "stride": int(stage.stride if isinstance(stage.stride, int) else stage.stride[0]),
                "padding": int(
                    stage.padding if isinstance(stage.padding, int) else stage.padding[0]
                ),
                "channels": int(value.shape[1]),
                "height": int(value.shape[2]),
                "width": int(value.shape[3]),
            }
        )
    return specs


RESIZE_POLICY = {"fashion-mnist": "pad", "mnist": "pad", "cifar10": "crop"}
# Data sets whose pictures are objects trimmed to their box, longest edge to the size, centred:
# the service frames photos the same way (service/framing.py).
FRAMING = {"fashion-mnist": "trim"}


def build_metadata(ckpt: dict[str, Any], net: ConvNet, version: str) -> dict[str, Any]:
    data = ckpt["data"]
    cfg = TrainConfig.from_dict(ckpt["config"])
    history = ckpt.get("history", [])
    calibration = ckpt.get("calibration", {"temperature": 1.0})
    return {
        "labels": data["labels"],
        "input": {
            "height": data["height"],
            "width": data["width"],
            "channels": data["channels"],
            "mode": data["mode"],
            "resize": RESIZE_POLICY.get(data["dataset"], "stretch"),
            "background": data.get("background"),
            "framing": FRAMING.get(data["dataset"]),
        },
        "layers": layer_specs(net, data["height"], data["width"], data["channels"]),
        "cam": cam_entry("exact", net.feature_stages()[-1][0], EXACT_CAM),
        "temperature": calibration["temperature"],
        "metrics": {"dataset": data["dataset"], "calibration": calibration},
        "version": version,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "recipe": {
            "architecture": ckpt["model_args"],
            "parameters": sum(p.numel() for p in net.parameters()),
            "normalization": {"mean": data["mean"], "std": data["std"]},
            "training": cfg.to_dict(),
            "command": training_command(cfg, ckpt.get("processes", 1)),
            "epochs_run": len(history),
            "best_epoch": ckpt.get("epoch"),
            "train_seconds": round(sum(h["seconds"] for h in history), 1),
            "machine": ckpt.get("machine", f"{platform.machine()}, torch {torch.__version__}"),
        },
    }


def training_command(cfg: TrainConfig, processes: int = 1) -> str:
    """The command line that reproduces cfg: `python -m training train`, or torchrun's for a run
    in several processes (the batch is split between them, and so is BatchNorm's)."""
    default = TrainConfig().to_dict()
    args = []
    for k, v in cfg.to_dict().items():
        if v != default[k] and k not in ("resume",):
            flag = "--" + k.replace("_", "-")
            value = f"{flag} {shlex.quote(str(v))}"
            args.append(flag if v is True else f"--no-{flag[2:]}" if v is False else value)
    launcher = (
        f"torchrun --standalone --nproc_per_node={processes} -m training"
        if processes > 1
        else "python -m training"
    )
    return " ".join([launcher, "train", *args])


def export_onnx(net: ConvNet, ckpt: dict[str, Any], out: Path, version: str = "1.0.0") -> Path:
    data = ckpt["data"]
    temperature = ckpt.get("calibration", {}).get("temperature", 1.0)
    wrapper = ServingWrapper(net, data["mean"], data["std"], temperature).eval()
    example = torch.zeros(2, data["height"], data["width"], data["channels"], dtype=torch.uint8)
    names = output_names(net)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings():
        # torch's exporter trips over its own deprecations (LeafSpec); nothing for users to act on
        warnings.simplefilter("ignore", FutureWarning)
        program = torch.onnx.export(
            wrapper,
            (example,),
            input_names=[INPUT_NAME],
            output_names=names,
            dynamic_shapes={"image": {0: batch}},
            opset_version=OPSET,
            dynamo=True,
            external_data=False,
            optimize=True,
            verbose=False,
        )
    wrapper.eval()  # export may leave submodules in training mode
    model = program.model_proto
    set_metadata(model, build_metadata(ckpt, net, version))
    return save_model(model, out)


def parity(wrapper: nn.Module, model_path: Path, images: np.ndarray) -> dict[str, float]:
    """Max abs difference between PyTorch and onnxruntime for every output."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    got = session.run(names, {INPUT_NAME: images})
    with torch.no_grad():
        want = wrapper.eval()(torch.from_numpy(images))
    return {n: float(np.abs(g - w.numpy()).max()) for n, g, w in zip(names, got, want)}
