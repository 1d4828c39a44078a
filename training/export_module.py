"""Export a PyTorch image classifier convscope never built into the contract of DESIGN.md.

torch.fx traces the module once; every Conv2d and max/average pooling stage becomes a
``features/<name>`` output named from the module's own attribute names (shown after its
BatchNorm and activation where it has them). When the head is global average pooling + a linear
layer the ``cam`` is the exact class-activation map; otherwise it is the gradient-free channel
mean of the last convolution's activations, and the metadata says which. The export is checked
in full and compared with PyTorch before the file is written.
"""

from __future__ import annotations

import datetime as dt
import importlib
import io
import operator
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import fx, nn

from .contract import (
    INPUT_NAME,
    OPSET,
    PARITY_TOLERANCE,
    ContractError,
    cam_entry,
    input_entry,
    save_model,
    set_metadata,
)
from .graph_names import stage_name

CONVS = (nn.Conv2d,)
POOL_MODULES = (nn.MaxPool2d, nn.AvgPool2d)
POOL_FUNCTIONS = (F.max_pool2d, F.avg_pool2d, torch.max_pool2d)
ACT_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.Tanh,
    nn.Sigmoid,
    nn.GELU,
    nn.LeakyReLU,
    nn.ELU,
    nn.SiLU,
    nn.Hardswish,
    nn.Hardtanh,
    nn.Mish,
)
ACT_FUNCTIONS = (
    F.relu,
    torch.relu,
    torch.tanh,
    torch.sigmoid,
    F.gelu,
    F.leaky_relu,
    F.silu,
    F.relu6,
    F.elu,
    F.hardtanh,
    F.mish,
    F.tanh,
    F.sigmoid,
)
ACT_METHODS = ("relu", "relu_", "tanh", "sigmoid")
FLATTENING = (torch.flatten, torch.squeeze, torch.reshape)
FLATTEN_METHODS = ("flatten", "view", "reshape", "squeeze")
ADDS = (operator.add, operator.iadd, torch.add)
EXACT_CAM = "class-activation map: the linear head's weights over the globally pooled stage"
APPROXIMATE_CAM = (
    "gradient-free: the mean over channels of the stage's activations, the same "
    "map for every class (the head is not global pooling + linear)"
)


class ExportError(ContractError):
    """What the export cannot do with this module, in one sentence."""


@dataclass
class Stage:
    name: str
    kind: str  # conv | pool
    kernel: int
    stride: int
    padding: int
    node: fx.Node  # what features/<name> shows


def load_factory(spec: str) -> nn.Module:
    """``package.module:factory`` -> the module the factory returns (a class is a factory too)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ExportError(f"--module {spec!r} is not package.module:factory")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ExportError(f"cannot load {spec} ({exc})") from exc
    net = factory()
    if not isinstance(net, nn.Module):
        raise ExportError(f"{spec}() returned {type(net).__name__}, not a torch.nn.Module")
    return net


def load_weights(net: nn.Module, path: Path) -> None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ExportError(f"cannot read weights {path} ({str(exc).splitlines()[0]})") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    try:
        net.load_state_dict(state)
    except (RuntimeError, TypeError) as exc:
        raise ExportError(f"{path} does not fit the module: {str(exc).splitlines()[0]}") from exc


def _pair(value: Any) -> int:
    return int(value[0] if isinstance(value, tuple | list) else value)


def _is(
    node: fx.Node,
    modules: dict[str, nn.Module],
    mods: tuple,
    funcs: tuple = (),
    methods: tuple = (),
) -> bool:
    if node.op == "call_module":
        return isinstance(modules[str(node.target)], mods)
    if node.op == "call_function":
        return node.target in funcs
    return node.op == "call_method" and node.target in methods


def _only_user(node: fx.Node) -> fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 and users[0].op != "output" else None


def find_stages(gm: fx.GraphModule) -> list[Stage]:
    modules = dict(gm.named_modules())
    stages: list[Stage] = []
    taken: set[str] = set()
    claimed: set[fx.Node] = set()
    for node in gm.graph.nodes:
        if _is(node, modules, CONVS):
            conv = modules[str(node.target)]
            assert isinstance(conv, nn.Conv2d)
            k, s = _pair(conv.kernel_size), _pair(conv.stride)
            p = (k - 1) // 2 if isinstance(conv.padding, str) else _pair(conv.padding)
            shown, nxt = node, _only_user(node)
            if nxt is not None and _is(nxt, modules, (nn.BatchNorm2d,), (F.batch_norm,)):
                shown, nxt = nxt, _only_user(nxt)
            if nxt is not None and nxt.op == "call_function" and nxt.target in ADDS:
                after = _only_user(nxt)  # a residual sum, then its activation
                if (
                    after is not None
                    and _is(after, modules, ACT_MODULES, ACT_FUNCTIONS, ACT_METHODS)
                    and after not in claimed
                ):
                    shown = after
                nxt = None
            if nxt is not None and _is(nxt, modules, ACT_MODULES, ACT_FUNCTIONS, ACT_METHODS):
                shown = nxt
            stages.append(
                Stage(stage_name(str(node.target), "conv", taken), "conv", k, s, p, shown)
            )
        elif _is(node, modules, POOL_MODULES):
            pool = modules[str(node.target)]
            k = _pair(pool.kernel_size)  # type: ignore[arg-type]
            s = _pair(pool.stride or k)  # type: ignore[arg-type]
            stages.append(
                Stage(
                    stage_name(str(node.target), "pool", taken),
                    "pool",
                    k,
                    s,
                    _pair(pool.padding),
                    node,
                )
            )  # type: ignore[arg-type]
        elif node.op == "call_function" and node.target in POOL_FUNCTIONS:
            args = list(node.args) + [None] * 4
            k = _pair(node.kwargs.get("kernel_size", args[1]))
            s = _pair(node.kwargs.get("stride", args[2]) or k)
            p = _pair(node.kwargs.get("padding", args[3]) or 0)
            stages.append(Stage(stage_name(node.name, "pool", taken), "pool", k, s, p, node))
        else:
            continue
        claimed.add(stages[-1].node)
    if not any(s.kind == "conv" for s in stages):
        raise ExportError("the module has no Conv2d: export serves convolutional networks")
    return stages


def _global_pool_source(node: fx.Node, modules: dict[str, nn.Module]) -> fx.Node | None:
    """X when node = global average pool of X (module, function or mean over H and W)."""
    while _is(node, modules, (nn.Flatten, nn.Dropout, nn.Identity), FLATTENING, FLATTEN_METHODS):
        node = node.args[0]  # type: ignore[assignment]
    if node.op == "call_module":
        m = modules[str(node.target)]
        if isinstance(m, nn.AdaptiveAvgPool2d) and m.output_size in (1, (1, 1)):
            return node.args[0]  # type: ignore[return-value]
    adaptive = node.op == "call_function" and node.target is F.adaptive_avg_pool2d
    if adaptive and node.args[1] in (1, (1, 1)):
        return node.args[0]  # type: ignore[return-value]
    if (node.op == "call_method" and node.target == "mean") or node.target is torch.mean:
        dims = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
        if dims is not None and sorted(int(d) % 4 for d in dims) == [2, 3]:  # type: ignore[union-attr]
            return node.args[0]  # type: ignore[return-value]
    return None


def exact_cam_head(gm: fx.GraphModule) -> tuple[fx.Node, nn.Linear] | None:
    """(X, linear) when the logits are linear(global average pool of X)."""
    modules = dict(gm.named_modules())
    out = next(n for n in gm.graph.nodes if n.op == "output").args[0]
    if not isinstance(out, fx.Node):
        return None
    while _is(out, modules, (nn.Flatten, nn.Dropout, nn.Identity), FLATTENING, FLATTEN_METHODS):
        out = out.args[0]  # type: ignore[assignment]
    if out.op != "call_module" or not isinstance(modules[str(out.target)], nn.Linear):
        return None
    x = _global_pool_source(out.args[0], modules)  # type: ignore[arg-type]
    return (x, modules[str(out.target)]) if x is not None else None  # type: ignore[return-value]


def simplify_global_pools(gm: fx.GraphModule) -> None:
    """AdaptiveAvgPool2d(1) as a plain mean over H and W: the same numbers, but torch.export
    otherwise spells it with Range/Gather index arithmetic that runs on every request."""
    modules = dict(gm.named_modules())
    for node in list(gm.graph.nodes):
        pooled = node.op == "call_module" and isinstance(modules[str(node.target)],
                                                           nn.AdaptiveAvgPool2d)  # fmt: skip
        if pooled and modules[str(node.target)].output_size in (1, (1, 1)):
            with gm.graph.inserting_after(node):
                mean = gm.graph.call_function(torch.mean, (node.args[0], (2, 3)), {"keepdim": True})
            node.replace_all_uses_with(mean)
            gm.graph.erase_node(node)
    gm.recompile()


class ServingModule(nn.Module):
    """uint8 [N,H,W,C] -> probabilities, logits, features/<name>..., cam."""

    def __init__(
        self,
        gm: fx.GraphModule,
        mean: list[float],
        std: list[float],
        features: int,
        cam: str | None,
        weight: torch.Tensor | None,
        classes: int,
    ) -> None:
        super().__init__()
        self.gm, self.features, self.cam, self.classes = gm, features, cam, classes
        m, sd = torch.tensor(mean, dtype=torch.float64), torch.tensor(std, dtype=torch.float64)
        # (x / 255 - mean) / std as one multiply and one add: two cheap ops on the hot path
        self.register_buffer("scale", (1 / (255 * sd)).float().view(1, -1, 1, 1))
        self.register_buffer("shift", (-m / sd).float().view(1, -1, 1, 1))
        self.register_buffer("weight", weight if weight is not None else torch.zeros(0))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        n, h, w, c = image.shape
        # one channel: NHWC -> NCHW is a reshape that moves no data
        x = image.reshape(n, 1, h, w) if c == 1 else image.permute(0, 3, 1, 2)
        outs = self.gm(x.to(torch.float32) * self.scale + self.shift)
        logits, features, source = outs[0], outs[1 : 1 + self.features], outs[-1]
        probabilities = torch.softmax(logits, dim=1)
        if self.cam is None:
            return (probabilities, logits, *features)
        if self.cam == "exact":
            cam = torch.einsum("kc,nchw->nkhw", self.weight, source)
        else:
            cam = source.mean(dim=1, keepdim=True).expand(-1, self.classes, -1, -1)
        return (probabilities, logits, *features, cam)


def export_module(
    net: nn.Module,
    out: Path,
    labels: list[str],
    size: tuple[int, int, int],
    mean: list[float] | None = None,
    std: list[float] | None = None,
    resize: str = "stretch",
    background: str | None = None,
    cam: bool = True,
    version: str = "1.0.0",
    source: str = "a torch.nn.Module",
    command: str = "",
) -> Path:
    """Trace, export, check and compare ``net`` (which returns logits); then write ``out``."""
    h, w, c = size
    mean = mean if mean is not None and len(mean) > 1 else (mean or [0.0]) * c
    std = std if std is not None and len(std) > 1 else (std or [1.0]) * c
    if len(mean) != c or len(std) != c or 0 in std:
        raise ExportError(f"--mean and --std need 1 or {c} values (std non-zero)")
    net = net.eval()
    try:
        gm = fx.symbolic_trace(net)
    except Exception as exc:
        raise ExportError(
            f"torch.fx cannot trace the module ({str(exc).splitlines()[0]}); "
            "its forward must not branch on tensor values"
        ) from exc
    stages = find_stages(gm)
    head = exact_cam_head(gm) if cam else None
    kind = None if not cam else "exact" if head is not None else "approximate"
    last_conv = [s for s in stages if s.kind == "conv"][-1]
    source_node = head[0] if head is not None else last_conv.node
    output = next(n for n in gm.graph.nodes if n.op == "output")
    output.args = ((output.args[0], *(s.node for s in stages), source_node),)
    simplify_global_pools(gm)
    weight = head[1].weight.detach().clone() if head is not None else None
    wrapper = ServingModule(gm, mean, std, len(stages), kind, weight, len(labels)).eval()

    pictures = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (4, h, w, c), np.uint8))
    with torch.no_grad():
        try:
            reference = [t.numpy() for t in wrapper(pictures)]
        except Exception as exc:
            raise ExportError(
                f"the module does not run on [N, {c}, {h}, {w}] pictures "
                f"({str(exc).splitlines()[0]})"
            ) from exc
    if reference[1].shape != (4, len(labels)):
        raise ExportError(
            f"the module gives scores of shape {list(reference[1].shape[1:])}, "
            f"not [{len(labels)}] for the {len(labels)} labels"
        )
    names = ["probabilities", "logits", *(f"features/{s.name}" for s in stages)]
    names += ["cam"] if kind else []
    layers = []
    for s, value in zip(stages, reference[2:]):
        if value.ndim != 4:
            raise ExportError(f"stage {s.name} gives a {value.ndim}-D tensor, not [N, C, h, w]")
        layers.append(
            {
                "output": f"features/{s.name}",
                "name": s.name,
                "kind": s.kind,
                "kernel": s.kernel,
                "stride": s.stride,
                "padding": s.padding,
                "channels": int(value.shape[1]),
                "height": int(value.shape[2]),
                "width": int(value.shape[3]),
            }
        )

    model = _to_onnx(wrapper, pictures[:2], names)
    got = _run(model, pictures.numpy(), names)
    diffs = {n: float(np.abs(g - r).max()) for n, g, r in zip(names, got, reference)}
    if diffs["probabilities"] > PARITY_TOLERANCE:
        raise ExportError(
            f"onnxruntime differs from PyTorch by {diffs['probabilities']:.1e} in "
            f"probability (more than {PARITY_TOLERANCE})"
        )
    cam_layer = next((s.name for s in stages if s.node is source_node), source_node.name)
    set_metadata(
        model,
        {
            "labels": labels,
            "input": input_entry(h, w, c, resize, background),
            "layers": layers,
            "temperature": 1.0,
            "metrics": {},
            "version": version,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "recipe": {
                "source": "python -m training export --module",
                "original": source,
                "command": command,
                "parameters": sum(p.numel() for p in net.parameters()),
                "normalization": {"mean": mean, "std": std},
                "parity": {
                    "reference": "PyTorch",
                    "pictures": len(pictures),
                    "max_abs_probabilities": diffs["probabilities"],
                    "max_abs_any_output": max(diffs.values()),
                },
            },
            "cam": cam_entry(kind, cam_layer, EXACT_CAM if kind == "exact" else APPROXIMATE_CAM)
            if kind
            else None,
        },
    )
    return save_model(model, out)


def _to_onnx(wrapper: nn.Module, example: torch.Tensor, names: list[str]) -> onnx.ModelProto:
    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's own deprecations; nothing to act on
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
    wrapper.eval()
    assert program is not None
    return program.model_proto


def _run(model: onnx.ModelProto, pictures: np.ndarray, names: list[str]) -> list[np.ndarray]:
    import onnxruntime as ort

    buffer = io.BytesIO()
    onnx.save_model(model, buffer)
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    return session.run(names, {INPUT_NAME: pictures})
