"""Four image classifiers that are not convscope's presets, built from code at test time.

- ``LeNet5``: 5x5 filters, tanh, average pooling with stride 2, Flatten + three linear layers
  (PyTorch; served through ``python -m training export --module``; approximate CAM);
- ``ResNetLite``: residual blocks, strided convolutions, no pooling, GAP + linear head (PyTorch,
  RGB; exported; exact CAM);
- ``plain_torch_onnx``: a float NCHW net with the input named ``pixels``, Flatten + Gemm head,
  written by plain ``torch.onnx.export`` without metadata, then adopted (approximate CAM);
- ``keras_like_onnx``: an NHWC float graph built with onnx.helper the way tf2onnx lays out a
  Keras CNN (Transpose, Conv, Relu, MaxPool, Transpose, ReduceMean, MatMul + Add, Softmax),
  then adopted (exact CAM).

Weights are random but fixed (seeded); ``train_briefly`` gives a few steps on generated stripes
so the maps are not noise.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LABELS10 = [f"class {i}" for i in range(10)]
LABELS4 = ["horizontal", "vertical", "diagonal", "dots"]


class LeNet5(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.pool1 = nn.AvgPool2d(2, stride=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.act2 = nn.Tanh()
        self.pool2 = nn.AvgPool2d(2, stride=2)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(torch.tanh(self.conv1(x)))
        x = self.pool2(self.act2(self.conv2(x)))
        x = torch.flatten(x, 1)
        return self.fc3(torch.tanh(self.fc2(torch.tanh(self.fc1(x)))))


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.down(x))


class ResNetLite(nn.Module):
    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.layer1 = Block(8, 16, 2)
        self.layer2 = Block(16, 32, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.stem(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.pool(x), 1))


class PlainNet(nn.Module):
    """What someone exports with torch.onnx.export: float NCHW, Flatten + Linear (Gemm) head."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Linear(16 * 7 * 7, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def lenet5() -> nn.Module:
    return LeNet5()


def resnet_lite() -> nn.Module:
    return ResNetLite()


def stripes(n: int, size: int, channels: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Generated pictures of four kinds (horizontal, vertical, diagonal stripes, dots), uint8."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    yy, xx = np.mgrid[:size, :size]
    period = rng.integers(3, 7, n)[:, None, None]
    phase = rng.integers(0, 6, n)[:, None, None]
    patterns = np.stack(
        [
            ((yy[None] + phase) % period) < period / 2,
            ((xx[None] + phase) % period) < period / 2,
            ((xx[None] + yy[None] + phase) % period) < period / 2,
            (((xx[None] + phase) % period) < 2) & (((yy[None] + phase) % period) < 2),
        ]
    )
    x = patterns[y, np.arange(n)].astype(np.float32) * 200 + rng.normal(0, 20, (n, size, size))
    x = np.clip(x, 0, 255).astype(np.uint8)[..., None].repeat(channels, -1)
    return x, y


def train_briefly(net: nn.Module, size: int, channels: int, steps: int = 30) -> nn.Module:
    """A few Adam steps on generated stripes (labels modulo the net's classes)."""
    torch.manual_seed(0)
    x, y = stripes(64 * steps, size, channels)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    net.train()
    for i in range(steps):
        xb = torch.from_numpy(x[i * 64 : (i + 1) * 64]).permute(0, 3, 1, 2).float() / 255
        loss = F.cross_entropy(net(xb), torch.from_numpy(y[i * 64 : (i + 1) * 64]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def plain_torch_onnx(path: Path, dynamic_batch: bool = True) -> Path:
    """PlainNet written by plain torch.onnx.export (TorchScript exporter): no metadata at all."""
    torch.manual_seed(1)
    net = train_briefly(PlainNet(), 28, 1)
    example = torch.zeros(1, 1, 28, 28)
    axes = {"pixels": {0: "batch"}, "scores": {0: "batch"}} if dynamic_batch else None
    torch.onnx.export(
        net,
        (example,),
        str(path),
        input_names=["pixels"],
        output_names=["scores"],
        dynamic_axes=axes,
        dynamo=False,
    )
    return path


def keras_like_onnx(path: Path, opset: int = 15) -> Path:
    """A Keras CNN as tf2onnx writes it: NHWC float input, Transposes around NCHW convolutions,
    GlobalAveragePooling2D as ReduceMean over H and W, Dense as MatMul + Add, then Softmax."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(2)

    def init(name: str, shape: tuple[int, ...], scale: float) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.normal(0, scale, shape)).astype(np.float32), name)

    inits = [
        init("sequential/conv2d/Conv2D/ReadVariableOp:0", (8, 3, 3, 3), 0.3),
        init("sequential/conv2d/BiasAdd/ReadVariableOp:0", (8,), 0.05),
        init("sequential/conv2d_1/Conv2D/ReadVariableOp:0", (16, 8, 3, 3), 0.15),
        init("sequential/conv2d_1/BiasAdd/ReadVariableOp:0", (16,), 0.05),
        init("sequential/dense/MatMul/ReadVariableOp:0", (16, 5), 0.8),
        init("sequential/dense/BiasAdd/ReadVariableOp:0", (5,), 0.1),
    ]
    n = helper.make_node
    nodes = [
        n(
            "Transpose",
            ["input_1"],
            ["input_1_nchw"],
            perm=[0, 3, 1, 2],
            name="sequential/conv2d/Conv2D__6",
        ),
        n(
            "Conv",
            ["input_1_nchw", inits[0].name, inits[1].name],
            ["conv2d_out"],
            kernel_shape=[3, 3],
            strides=[1, 1],
            pads=[1, 1, 1, 1],
            name="sequential/conv2d/Conv2D",
        ),
        n("Relu", ["conv2d_out"], ["conv2d_relu"], name="sequential/conv2d/Relu"),
        n(
            "MaxPool",
            ["conv2d_relu"],
            ["pool_out"],
            kernel_shape=[2, 2],
            strides=[2, 2],
            name="sequential/max_pooling2d/MaxPool",
        ),
        n(
            "Conv",
            ["pool_out", inits[2].name, inits[3].name],
            ["conv2d_1_out"],
            kernel_shape=[3, 3],
            strides=[2, 2],
            pads=[1, 1, 1, 1],
            name="sequential/conv2d_1/Conv2D",
        ),
        n("Relu", ["conv2d_1_out"], ["conv2d_1_relu"], name="sequential/conv2d_1/Relu"),
        n(
            "Transpose",
            ["conv2d_1_relu"],
            ["conv2d_1_nhwc"],
            perm=[0, 2, 3, 1],
            name="sequential/conv2d_1/Relu__12",
        ),
        n(
            "ReduceMean",
            ["conv2d_1_nhwc"],
            ["gap"],
            axes=[1, 2],
            keepdims=0,
            name="sequential/global_average_pooling2d/Mean",
        ),
        n("MatMul", ["gap", inits[4].name], ["dense_mm"], name="sequential/dense/MatMul"),
        n("Add", ["dense_mm", inits[5].name], ["dense_logits"], name="sequential/dense/BiasAdd"),
        n("Softmax", ["dense_logits"], ["dense"], axis=1, name="sequential/dense/Softmax"),
    ]
    graph = helper.make_graph(
        nodes,
        "sequential",
        [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, ["unk__18", 32, 32, 3])],
        [helper.make_tensor_value_info("dense", TensorProto.FLOAT, ["unk__19", 5])],
        inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset)],
        producer_name="tf2onnx",
        producer_version="1.16.1",
    )
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


KERAS_LABELS = ["cat", "dog", "bird", "fish", "frog"]


@dataclass
class OwnModels:
    """A model folder with the default model beside the four networks (and one without a cam),
    the original files adopted from, and the PyTorch nets exported."""

    models: Path  # CONVSCOPE_MODEL_DIR
    originals: dict[str, Path]  # adopted name -> the ONNX file it was adopted from
    nets: dict[str, nn.Module]  # exported name -> the PyTorch module
    normalisation: dict[str, tuple[float, float]]  # name -> (mean, std) on [0, 1] pixels
    layouts: dict[str, str]  # adopted name -> the original's layout


def build_folder(root: Path, default_model: Path) -> OwnModels:
    from training.adopt import AdoptOptions, adopt_model
    from training.export_module import export_module

    models, originals_dir = root / "models", root / "originals"
    originals_dir.mkdir(parents=True)
    (models / "fashion-mnist").mkdir(parents=True)
    shutil.copy(default_model, models / "fashion-mnist" / "model.onnx")
    torch.manual_seed(0)
    lenet = train_briefly(lenet5(), 28, 1)
    export_module(
        lenet,
        models / "lenet5" / "model.onnx",
        LABELS10,
        (28, 28, 1),
        source="tests.own_models:lenet5",
    )
    resnet = train_briefly(resnet_lite(), 32, 3)
    export_module(
        resnet,
        models / "resnet-lite" / "model.onnx",
        LABELS4,
        (32, 32, 3),
        mean=[0.5],
        std=[0.25],
        source="tests.own_models:resnet_lite",
    )
    plain = plain_torch_onnx(originals_dir / "plain-torch.onnx")
    adopt_model(
        plain,
        models / "plain-torch" / "model.onnx",
        AdoptOptions(labels=LABELS10, mean=[0.5], std=[0.25]),
    )
    keras = keras_like_onnx(originals_dir / "keras-like.onnx")
    adopt_model(keras, models / "keras-like" / "model.onnx", AdoptOptions(labels=KERAS_LABELS))
    adopt_model(
        keras, models / "keras-no-cam" / "model.onnx", AdoptOptions(labels=KERAS_LABELS, cam=False)
    )
    return OwnModels(
        models=models,
        originals={"plain-torch": plain, "keras-like": keras, "keras-no-cam": keras},
        nets={"lenet5": lenet, "resnet-lite": resnet},
        normalisation={
            "lenet5": (0.0, 1.0),
            "resnet-lite": (0.5, 0.25),
            "plain-torch": (0.5, 0.25),
            "keras-like": (0.0, 1.0),
            "keras-no-cam": (0.0, 1.0),
        },
        layouts={"plain-torch": "NCHW", "keras-like": "NHWC", "keras-no-cam": "NHWC"},
    )


def original_input(name: str, folder: OwnModels, pixels: np.ndarray) -> np.ndarray:
    """The float tensor the original model takes for these uint8 NHWC pixels."""
    mean, std = folder.normalisation[name]
    x = (pixels.astype(np.float32) / 255.0 - np.float32(mean)) / np.float32(std)
    layout = folder.layouts.get(name, "NCHW")
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2) if layout == "NCHW" else x)
