"""The CNN: small named blocks (conv + BatchNorm + activation, max or average pooling, dropout)
and a GAP head.

The network is described by plain data (``model_args``; the stages come from a layer SPEC, see
training/layers.py), so a checkpoint can rebuild it and the exporter can name one ONNX output per
stage without hooks.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from .layers import FEATURE_KINDS, PRESETS, layer_names, parse_layers

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


class ConvBlock(nn.Sequential):
    """Convolution filters (kernel, stride, padding), then BatchNorm (optional) and activation."""

    def __init__(
        self,
        in_channels: int,
        channels: int,
        kernel: int,
        stride: int,
        padding: int,
        activation: str = "relu",
        batchnorm: bool = True,
    ):
        parts: OrderedDict[str, nn.Module] = OrderedDict(
            conv=nn.Conv2d(in_channels, channels, kernel, stride, padding, bias=not batchnorm)
        )
        if batchnorm:
            parts["bn"] = nn.BatchNorm2d(channels)
        act = ACTIVATIONS[activation]
        parts["act"] = act(inplace=True) if act is nn.ReLU else act()
        super().__init__(parts)
        self.kind, self.kernel, self.stride, self.padding = "conv", kernel, stride, padding
        self.channels = channels


class Pool(nn.MaxPool2d):
    def __init__(self, kernel: int, stride: int, padding: int = 0):
        super().__init__(kernel, stride, padding)
        self.kind = "pool"


class AvgPool(nn.AvgPool2d):
    def __init__(self, kernel: int, stride: int, padding: int = 0):
        # count_include_pad=False: a padded border is not averaged towards zero
        super().__init__(kernel, stride, padding, count_include_pad=False)
        self.kind = "pool"


class Dropout(nn.Dropout2d):
    """Drops whole channels in training; not a stage of its own in the exported model."""

    kind = "dropout"


def build_stage(spec: dict[str, Any], in_channels: int) -> nn.Module:
    kind = spec["kind"]
    if kind == "conv":
        return ConvBlock(in_channels, spec["channels"], spec["kernel"], spec.get("stride", 1),
                         spec.get("padding", 0), spec.get("activation", "relu"),
                         spec.get("batchnorm", True))  # fmt: skip
    if kind in ("pool", "avgpool"):
        cls = Pool if kind == "pool" else AvgPool
        return cls(spec["kernel"], spec.get("stride", spec["kernel"]), spec.get("padding", 0))
    if kind == "dropout":
        return Dropout(spec["rate"])
    raise ValueError(f"unknown layer kind {kind!r}")


class ConvNet(nn.Module):
    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        layers: list[dict[str, Any]] | None = None,
        dropout: float = 0.0,
    ):
        super().__init__()
        layers = layers if layers is not None else parse_layers(PRESETS["default"])
        if not any(spec["kind"] == "conv" for spec in layers):
            raise ValueError("the layers need at least one conv block")
        stages: OrderedDict[str, nn.Module] = OrderedDict()
        channels = in_channels
        for name, spec in zip(layer_names(layers), layers):
            stages[name] = build_stage(spec, channels)
            channels = spec.get("channels", channels) if spec["kind"] == "conv" else channels
        self.stages = nn.Sequential(stages)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels, num_classes)
        self.num_classes = num_classes
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def feature_stages(self) -> list[tuple[str, nn.Module]]:
        """The conv and pooling stages (dropout is not a stage anyone wants to look at)."""
        return [(n, s) for n, s in self.stages.named_children() if s.kind in FEATURE_KINDS]

    def forward_features(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        """Every conv/pool stage's activation, in network order (the last one feeds the head)."""
        out: OrderedDict[str, torch.Tensor] = OrderedDict()
        for name, stage in self.stages.named_children():
            x = stage(x)
            if stage.kind in FEATURE_KINDS:
                out[name] = x
        out[next(reversed(out))] = x  # a trailing dropout is part of the last stage
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
    """``preset`` is a preset's name or a layer SPEC (training/layers.py)."""
    return {
        "in_channels": in_channels,
        "num_classes": num_classes,
        "layers": parse_layers(preset),
        "dropout": dropout,
    }
