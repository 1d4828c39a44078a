"""The CNN: small named blocks (conv + BatchNorm + ReLU, max pooling) and a GAP head.

The network is described by plain data (``model_args``), so a checkpoint can rebuild it and the
exporter can name one ONNX output per stage without hooks.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn

# Each preset is a list of layer specs; "conv" layers are conv + BN + ReLU blocks.
# small:   fast preset for tests and quick experiments (~25k parameters).
# default: VGG-style, 3 stages; the committed Fashion-MNIST model.
PRESETS: dict[str, list[dict[str, Any]]] = {
    "small": [
        {"kind": "conv", "channels": 16, "kernel": 3, "stride": 1, "padding": 1},
        {"kind": "pool", "kernel": 2, "stride": 2},
        {"kind": "conv", "channels": 32, "kernel": 3, "stride": 1, "padding": 1},
        {"kind": "pool", "kernel": 2, "stride": 2},
        {"kind": "conv", "channels": 64, "kernel": 3, "stride": 1, "padding": 1},
    ],
    "default": [
        {"kind": "conv", "channels": 32, "kernel": 3, "stride": 1, "padding": 1},
        {"kind": "conv", "channels": 32, "kernel": 3, "stride": 1, "padding": 1},
        {"kind": "pool", "kernel": 2, "stride": 2},
        {"kind": "conv", "channels": 64, "kernel": 3, "stride": 1, "padding": 1},
        {"kind": "conv", "channels": 64, "kernel": 3, "stride": 1, "padding": 1},
        {"kind": "pool", "kernel": 2, "stride": 2},
        {"kind": "conv", "channels": 128, "kernel": 3, "stride": 1, "padding": 1},
        {"kind": "conv", "channels": 128, "kernel": 3, "stride": 1, "padding": 1},
    ],
}


class ConvBlock(nn.Sequential):
    """Convolution filters (kernel, stride, padding) followed by BatchNorm and ReLU."""

    def __init__(self, in_channels: int, channels: int, kernel: int, stride: int, padding: int):
        super().__init__(
            OrderedDict(
                conv=nn.Conv2d(in_channels, channels, kernel, stride, padding, bias=False),
                bn=nn.BatchNorm2d(channels),
                act=nn.ReLU(inplace=True),
            )
        )
        self.kind, self.kernel, self.stride, self.padding = "conv", kernel, stride, padding
        self.channels = channels


class Pool(nn.MaxPool2d):
    def __init__(self, kernel: int, stride: int, padding: int = 0):
        super().__init__(kernel, stride, padding)
        self.kind = "pool"


def layer_names(layers: list[dict[str, Any]]) -> list[str]:
    """conv1, conv2, pool1, conv3, ...: numbered per kind, in network order."""
    counts: dict[str, int] = {}
    names = []
    for spec in layers:
        counts[spec["kind"]] = counts.get(spec["kind"], 0) + 1
        names.append(f"{spec['kind']}{counts[spec['kind']]}")
    return names


class ConvNet(nn.Module):
    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        layers: list[dict[str, Any]] | None = None,
        dropout: float = 0.0,
    ):
        super().__init__()
        layers = layers if layers is not None else PRESETS["default"]
        if not layers or layers[-1]["kind"] != "conv":
            raise ValueError("the last layer must be a conv block (the CAM is taken from it)")
        stages: OrderedDict[str, nn.Module] = OrderedDict()
        channels = in_channels
        for name, spec in zip(layer_names(layers), layers):
            if spec["kind"] == "conv":
                stages[name] = ConvBlock(
                    channels, spec["channels"], spec["kernel"], spec["stride"], spec["padding"]
                )
                channels = spec["channels"]
            elif spec["kind"] == "pool":
                stages[name] = Pool(spec["kernel"], spec["stride"], spec.get("padding", 0))
            else:
                raise ValueError(f"unknown layer kind {spec['kind']!r}")
        self.stages = nn.Sequential(stages)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels, num_classes)
        self.num_classes = num_classes
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        """Every stage's activation, in network order (the last one feeds the head)."""
        out: OrderedDict[str, torch.Tensor] = OrderedDict()
        for name, stage in self.stages.named_children():
            x = stage(x)
            out[name] = x
        return out

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(features.mean(dim=(2, 3))))

    def class_activation_maps(self, features: torch.Tensor) -> torch.Tensor:
        """[N, K, h, w]: each class's head weights applied at every position of the last stage.

        With a global-average-pooling head, the mean of a class map plus the bias is its logit.
        """
        return torch.einsum("kc,nchw->nkhw", self.fc.weight, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return self.forward_head(x)


def build_net(model_args: dict[str, Any]) -> ConvNet:
    return ConvNet(**model_args)


def model_args_for(preset: str, in_channels: int, num_classes: int, dropout: float = 0.0) -> dict:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    return {
        "in_channels": in_channels,
        "num_classes": num_classes,
        "layers": [dict(s) for s in PRESETS[preset]],
        "dropout": dropout,
    }
