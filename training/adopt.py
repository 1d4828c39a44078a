"""Adopt an ONNX classifier made by another tool (torch.onnx, tf2onnx, by hand) into the contract.

The graph is rewritten with onnx's own API: a uint8 NHWC ``image`` input whose scaling,
normalisation and layout change run inside the graph; ``probabilities`` (softmax added when the
model gives logits) and ``logits``; ``features/<name>`` for every Conv and pooling output (after
its BatchNormalization and activation where it has them); ``cam``, exact when the head is global
average pooling + a linear layer, else the gradient-free channel mean of the last convolution;
and the metadata. Anything it cannot do is an ``AdoptError`` sentence, and no file is written.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, version_converter

from .contract import (
    INPUT_NAME,
    PARITY_TOLERANCE,
    ContractError,
    cam_entry,
    input_entry,
    save_model,
    set_metadata,
)
from .graph_names import stage_name

POOLS = ("MaxPool", "AveragePool")
ACTIVATIONS = (
    "Relu",
    "LeakyRelu",
    "PRelu",
    "Tanh",
    "Sigmoid",
    "Elu",
    "Selu",
    "Clip",
    "Gelu",
    "HardSigmoid",
    "HardSwish",
    "Softplus",
    "Mish",
    "Celu",
    "ThresholdedRelu",
)
PASS_THROUGH = ("Flatten", "Reshape", "Squeeze", "Identity", "Dropout")
FLOATS = {
    TensorProto.FLOAT: np.float32,
    TensorProto.DOUBLE: np.float64,
    TensorProto.FLOAT16: np.float16,
}
MIN_OPSET = 17  # DESIGN.md: opset >= 17
P = "convscope/"  # prefix of every tensor and node this rewrite adds


class AdoptError(ContractError):
    """What adopt cannot do with this file, in one sentence."""


@dataclass
class AdoptOptions:
    labels: list[str]
    layout: str | None = None  # "NCHW" | "NHWC"; None: from the input's shape
    mean: list[float] = field(default_factory=lambda: [0.0])
    std: list[float] = field(default_factory=lambda: [1.0])
    size: tuple[int, int, int] | None = None  # H, W, C where the model's own are dynamic
    input_name: str | None = None
    output_name: str | None = None
    outputs: str | None = None  # "logits" | "probabilities"; None: Softmax at the end or not
    resize: str = "stretch"
    background: str | None = None
    cam: bool = True
    version: str = "1.0.0"
    command: str = ""


@dataclass
class Stage:
    name: str
    kind: str  # conv | pool
    node: onnx.NodeProto  # the Conv or pooling node
    tensor: str  # what features/<name> shows


def _dims(value: onnx.ValueInfoProto) -> list[int | str | None]:
    shape = value.type.tensor_type.shape
    if not value.type.tensor_type.HasField("shape"):
        return []
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in shape.dim]


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _session(model: onnx.ModelProto) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[-1] if lines else type(exc).__name__)[:300]


class Graph:
    """Producers and consumers of every tensor, and the constant initializers."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model, self.g = model, model.graph
        self.init = {t.name: t for t in self.g.initializer}
        self.producer = {o: n for n in self.g.node for o in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in self.g.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.outputs = {o.name for o in self.g.output}

    def only_consumer(self, tensor: str) -> onnx.NodeProto | None:
        users = self.consumers.get(tensor, [])
        return users[0] if len(users) == 1 and tensor not in self.outputs else None

    def const(self, name: str) -> np.ndarray | None:
        if name in self.init:
            return numpy_helper.to_array(self.init[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            return numpy_helper.to_array(node.attribute[0].t)
        return None

    def attr(self, node: onnx.NodeProto, name: str, default: Any = None) -> Any:
        for a in node.attribute:
            if a.name == name:
                return helper.get_attribute_value(a)
        return default


def _image_input(model: onnx.ModelProto, options: AdoptOptions) -> onnx.ValueInfoProto:
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if options.input_name is not None:
        inputs = [i for i in inputs if i.name == options.input_name]
        if not inputs:
            raise AdoptError(f"the model has no input named {options.input_name!r}")
    if len(inputs) != 1:
        names = [i.name for i in inputs]
        raise AdoptError(
            f"the model has {len(inputs)} inputs {names}; name the image one with "
            "--input-name (adopt feeds exactly one)"
        )
    inp = inputs[0]
    if not inp.type.HasField("tensor_type"):
        raise AdoptError(f"input {inp.name!r} is not a tensor")
    dims = _dims(inp)
    if len(dims) != 4:
        raise AdoptError(
            f"input {inp.name!r} has shape {dims}; adopt needs a 4-D image input "
            "([N, C, H, W] or [N, H, W, C])"
        )
    elem = inp.type.tensor_type.elem_type
    if elem not in FLOATS and elem != TensorProto.UINT8:
        raise AdoptError(
            f"input {inp.name!r} is {TensorProto.DataType.Name(elem)}; adopt feeds "
            "float or uint8 pixels"
        )
    return inp


def _layout_and_size(
    dims: list[int | str | None], options: AdoptOptions, name: str
) -> tuple[str, int, int, int]:
    a, b, c = dims[1:]
    layout = options.layout
    if layout is None:
        if a in (1, 3) and c not in (1, 3):
            layout = "NCHW"
        elif c in (1, 3) and a not in (1, 3):
            layout = "NHWC"
        else:
            raise AdoptError(
                f"input {name!r} has shape {dims}: say its layout with --layout "
                "NCHW or --layout NHWC"
            )
    layout = layout.upper()
    if layout not in ("NCHW", "NHWC"):
        raise AdoptError(f"layout {layout!r} is not NCHW or NHWC")
    ch, h, w = (a, b, c) if layout == "NCHW" else (c, a, b)
    if options.size is not None:
        want = options.size
        for got, given, what in zip((h, w, ch), want, ("height", "width", "channels")):
            if isinstance(got, int) and got != given:
                raise AdoptError(f"--size gives {what} {given} but input {name!r} has {got}")
        h, w, ch = want
    if not all(isinstance(d, int) and d > 0 for d in (h, w, ch)):
        raise AdoptError(
            f"input {name!r} has a dynamic spatial size {dims}; give the size the "
            "network was made for with --size HxWxC"
        )
    assert isinstance(h, int) and isinstance(w, int) and isinstance(ch, int)
    if ch not in (1, 3):
        raise AdoptError(f"input {name!r} has {ch} channels; convscope serves 1 (L) or 3 (RGB)")
    return layout, h, w, ch


def _class_output(model: onnx.ModelProto, options: AdoptOptions) -> onnx.ValueInfoProto:
    outputs = list(model.graph.output)
    if options.output_name is not None:
        outputs = [o for o in outputs if o.name == options.output_name]
        if not outputs:
            raise AdoptError(f"the model has no output named {options.output_name!r}")
    two_d = [o for o in outputs if len(_dims(o)) == 2] or outputs
    if len(two_d) != 1:
        names = [o.name for o in outputs]
        raise AdoptError(f"the model has outputs {names}; name the class scores with --output-name")
    out = two_d[0]
    dims = _dims(out)
    if dims and len(dims) != 2:
        raise AdoptError(f"output {out.name!r} has shape {dims}; adopt needs [N, classes]")
    if dims and isinstance(dims[1], int) and dims[1] != len(options.labels):
        raise AdoptError(
            f"output {out.name!r} has {dims[1]} classes but the labels file lists "
            f"{len(options.labels)}"
        )
    return out


def _stages(graph: Graph) -> list[Stage]:
    """Every Conv and pooling node, shown after its BatchNormalization and activation."""
    stages: list[Stage] = []
    taken: set[str] = set()
    claimed: set[str] = set()
    for node in graph.g.node:
        if node.op_type != "Conv" and node.op_type not in POOLS:
            continue
        kind = "conv" if node.op_type == "Conv" else "pool"
        tensor = node.output[0]
        if kind == "conv":
            nxt = graph.only_consumer(tensor)
            if nxt is not None and nxt.op_type == "BatchNormalization":
                tensor, nxt = nxt.output[0], graph.only_consumer(nxt.output[0])
            if nxt is not None and nxt.op_type == "Add":  # a residual sum, then its activation
                after = graph.only_consumer(nxt.output[0])
                if after is not None and after.op_type in ACTIVATIONS:
                    if after.output[0] not in claimed:
                        tensor = after.output[0]
                    nxt = None
            if nxt is not None and nxt.op_type in ACTIVATIONS:
                tensor = nxt.output[0]
        claimed.add(tensor)
        name = stage_name(node.name, kind, taken, (node.op_type, "Conv2D", "MaxPool", "AvgPool"))
        stages.append(Stage(name, kind, node, tensor))
    if not any(s.kind == "conv" for s in stages):
        raise AdoptError("the model has no Conv node: adopt serves convolutional networks")
    return stages


def _kernel(graph: Graph, node: onnx.NodeProto) -> tuple[int, int, int]:
    kernel = graph.attr(node, "kernel_shape")
    if kernel is None and node.op_type == "Conv":
        weight = graph.const(node.input[1])
        kernel = list(weight.shape[2:]) if weight is not None else [1]
    k = int(kernel[0]) if kernel else 1
    stride = int((graph.attr(node, "strides") or [1])[0])
    auto_pad = graph.attr(node, "auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
    pad = (k - 1) // 2 if auto_pad.startswith("SAME") else int((graph.attr(node, "pads") or [0])[0])
    return k, stride, pad


def _exact_cam_source(graph: Graph, logits: str) -> tuple[str, np.ndarray] | None:
    """(X, W[K, C]) when logits = linear(global average pool of X), else None."""
    node = graph.producer.get(logits)
    weight: np.ndarray | None = None
    if node is not None and node.op_type == "Add":  # MatMul + bias
        node = next((graph.producer.get(i) for i in node.input if graph.const(i) is None), None)
    if node is None:
        return None
    if node.op_type == "Gemm":
        weight = graph.const(node.input[1])
        if weight is None or graph.attr(node, "transA", 0):
            return None
        weight = weight if graph.attr(node, "transB", 0) else weight.T
    elif node.op_type == "MatMul":
        weight = graph.const(node.input[1])
        weight = None if weight is None else weight.T
    if weight is None or weight.ndim != 2:
        return None
    source = graph.producer.get(node.input[0])
    while source is not None and source.op_type in PASS_THROUGH:
        source = graph.producer.get(source.input[0])
    if source is None:
        return None
    if source.op_type == "GlobalAveragePool":
        return source.input[0], weight
    if source.op_type == "ReduceMean":
        axes = graph.attr(source, "axes")
        if axes is None and len(source.input) > 1:
            found = graph.const(source.input[1])
            axes = None if found is None else found.tolist()
        axes = sorted(int(a) % 4 for a in axes or [])
        if axes == [2, 3]:
            return source.input[0], weight
        before = graph.producer.get(source.input[0])
        nhwc = before is not None and before.op_type == "Transpose"
        if axes == [1, 2] and nhwc and list(graph.attr(before, "perm", [])) == [0, 2, 3, 1]:
            return before.input[0], weight  # the mean over H, W of an NHWC view of NCHW X
    return None


def _preprocessing(
    elem: int, layout: str, size: tuple[int, int, int], mean: np.ndarray, std: np.ndarray
) -> list[onnx.NodeProto]:
    """uint8 NHWC pixels -> what the original input takes: the layout change first (on bytes),
    then (x / 255 - mean) / std as one multiply and one add, per channel only when it must be
    (broadcasting a vector along a short innermost axis is slow in onnxruntime)."""
    h, w, c = size
    nodes, last = [], INPUT_NAME
    if layout == "NCHW" and c == 1:  # [N, H, W, 1] -> [N, 1, H, W] moves no data
        nodes += [_const("nchw/shape", np.array([-1, 1, h, w], np.int64)),
                  helper.make_node("Reshape", [last, P + "nchw/shape"], [P + "nchw"])]  # fmt: skip
        last = P + "nchw"
    elif layout == "NCHW":
        nodes.append(helper.make_node("Transpose", [last], [P + "nchw"], perm=[0, 3, 1, 2]))
        last = P + "nchw"
    if elem == TensorProto.UINT8:
        return nodes
    scale, shift = 1.0 / (255.0 * std.astype(np.float64)), -mean / std.astype(np.float64)
    if np.all(scale == scale[0]) and np.all(shift == shift[0]):
        scale, shift = scale[:1].reshape(()), shift[:1].reshape(())
    else:
        shape = (1, c, 1, 1) if layout == "NCHW" else (1, 1, 1, c)
        scale, shift = scale.reshape(shape), shift.reshape(shape)
    nodes += [
        helper.make_node("Cast", [last], [P + "pixels"], to=TensorProto.FLOAT),
        _const("scale", scale.astype(np.float32)),
        helper.make_node("Mul", [P + "pixels", P + "scale"], [P + "scaled"]),
        _const("shift", shift.astype(np.float32)),
        helper.make_node("Add", [P + "scaled", P + "shift"], [P + "normalised"]),
    ]
    if elem != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", [P + "normalised"], [P + "typed"], to=elem))
    return nodes


def _const(name: str, value: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [P + name], value=numpy_helper.from_array(value))


def _reduce_mean(x: str, out: str, axes: list[int], opset: int) -> list[onnx.NodeProto]:
    if opset >= 18:
        return [
            _const(out + "/axes", np.array(axes, np.int64)),
            helper.make_node("ReduceMean", [x, P + out + "/axes"], [out], keepdims=1),
        ]
    return [helper.make_node("ReduceMean", [x], [out], axes=axes, keepdims=1)]


def adopt_model(source: Path, out: Path, options: AdoptOptions) -> Path:
    """Rewrite ``source`` into the contract and write it to ``out`` (all or nothing)."""
    try:
        model = onnx.load(str(source))
    except Exception as exc:
        raise AdoptError(f"{source} is not a readable ONNX file ({_first_line(exc)})") from exc
    opset = _opset(model)
    try:
        original_session = _session(model)
    except Exception as exc:
        import onnxruntime as ort

        raise AdoptError(
            f"onnxruntime {ort.__version__} cannot run {source.name} (opset "
            f"{opset}): {_first_line(exc)}"
        ) from exc
    if opset < MIN_OPSET:  # the contract's floor: onnx's converter lifts older graphs
        try:
            model = version_converter.convert_version(model, MIN_OPSET)
        except Exception as exc:
            raise AdoptError(f"{source.name} uses opset {opset}, and onnx cannot convert it to "
                             f"{MIN_OPSET} ({_first_line(exc)})") from exc  # fmt: skip
        opset = MIN_OPSET
    inp = _image_input(model, options)
    layout, h, w, c = _layout_and_size(_dims(inp), options, inp.name)
    cls_out = _class_output(model, options)
    graph = Graph(model)
    stages = _stages(graph)
    k = len(options.labels)

    adopted = onnx.ModelProto()
    adopted.CopyFrom(model)
    g = adopted.graph
    del g.value_info[:]  # shapes inferred for a fixed batch would pin it again
    original_input = inp.name
    fed = original_input
    if original_input == INPUT_NAME:  # our input takes the name: the old one moves aside
        fed = P + "original-input"
        for node in g.node:
            node.input[:] = [fed if i == INPUT_NAME else i for i in node.input]
    keep = [i for i in g.input if i.name != original_input]
    del g.input[:]
    g.input.extend(
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, ["N", h, w, c]), *keep]
    )

    mean = np.asarray(options.mean if len(options.mean) > 1 else options.mean * c, np.float32)
    std = np.asarray(options.std if len(options.std) > 1 else options.std * c, np.float32)
    if mean.size != c or std.size != c or (std == 0).any():
        raise AdoptError(f"--mean and --std need 1 or {c} values (std non-zero)")
    elem = inp.type.tensor_type.elem_type
    pre = _preprocessing(elem, layout, (h, w, c), mean, std)
    if pre:
        pre[-1].output[0] = fed  # the last step feeds the original graph
    else:  # a uint8 NHWC model: nothing to do but to take the name
        pre = [helper.make_node("Identity", [INPUT_NAME], [fed])]

    # Class scores: probabilities and logits, whichever the model gives.
    scores = cls_out.name
    producer = graph.producer.get(scores)
    given = options.outputs or (
        "probabilities" if producer is not None and producer.op_type == "Softmax" else "logits"
    )
    post: list[onnx.NodeProto] = []
    if given == "logits":
        logits = scores
        post.append(helper.make_node("Softmax", [scores], [P + "softmax"], axis=1))
        probs = P + "softmax"
    elif producer is not None and producer.op_type == "Softmax":
        logits, probs = producer.input[0], scores
    else:
        post.append(helper.make_node("Log", [scores], [P + "log"]))
        logits, probs = P + "log", scores
    # The contract's outputs are the original tensors renamed (an extra node, even an Identity,
    # would run on every request: onnxruntime runs the whole graph whatever is asked for).
    shown = {probs: "probabilities", logits: "logits"}
    shown.update({stage.tensor: f"features/{stage.name}" for stage in stages})
    if elem not in (TensorProto.FLOAT, TensorProto.UINT8):  # float16/64 models: cast them
        post += [helper.make_node("Cast", [t], [P + n], to=TensorProto.FLOAT)
                 for t, n in shown.items()]  # fmt: skip
        shown = {P + n: n for n in shown.values()}

    exact = _exact_cam_source(graph, logits) if options.cam else None
    cam_meta: dict[str, Any] | None = None
    if options.cam and exact is not None:
        x, weight = exact
        post += [
            _const("cam/flat", np.array([0, weight.shape[1], -1], np.int64)),
            helper.make_node("Reshape", [x, P + "cam/flat"], [P + "cam/x"]),
            _const("cam/weight", weight.astype(np.float32)),
            helper.make_node("Cast", [P + "cam/x"], [P + "cam/xf"], to=TensorProto.FLOAT),
            helper.make_node("MatMul", [P + "cam/weight", P + "cam/xf"], [P + "cam/maps"]),
        ]
        name = next((s.name for s in stages if s.tensor == x), shown.get(x, x))
        cam_meta = cam_entry(
            "exact",
            name,
            "class-activation map: the linear head's weights over the globally pooled stage",
        )
    elif options.cam:
        last_conv = [s for s in stages if s.kind == "conv"][-1]
        x = last_conv.tensor
        post += [
            helper.make_node("Cast", [x], [P + "cam/xf"], to=TensorProto.FLOAT),
            *_reduce_mean(P + "cam/xf", P + "cam/mean", [1], opset),
            _const("cam/classes", np.array([1, k, 1, 1], np.int64)),
            helper.make_node("Expand", [P + "cam/mean", P + "cam/classes"], [P + "cam/maps"]),
        ]
        cam_meta = cam_entry(
            "approximate",
            last_conv.name,
            "gradient-free: the mean over "
            "channels of the stage's activations, the same map for every "
            "class (the head is not global pooling + linear)",
        )
    nodes = [*pre, *g.node, *post]
    for node in nodes:
        node.input[:] = [shown.get(i, i) for i in node.input]
        node.output[:] = [shown.get(o, o) for o in node.output]
    del g.node[:]
    g.node.extend(nodes)
    exact = None if exact is None else (shown.get(exact[0], exact[0]), exact[1])
    del g.output[:]
    names = ["probabilities", "logits", *(f"features/{s.name}" for s in stages)]
    g.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names)

    # A first run tells every output's shape (and whether the graph runs with our input at all).
    probes = [P + "cam/maps"] if options.cam else []
    if exact is not None:
        probes.append(exact[0])
    g.output.extend(onnx.ValueInfoProto(name=n) for n in probes)
    shapes = _run_shapes(adopted, h, w, c)
    del g.output[len(names) :]
    if exact is not None:
        hw = shapes[exact[0]][2:]
        g.node.extend(
            [
                _const("cam/shape", np.array([0, k, *hw], np.int64)),
                helper.make_node("Reshape", [P + "cam/maps", P + "cam/shape"], ["cam"]),
            ]
        )
        shapes["cam"] = [1, k, *hw]
    elif options.cam:
        g.node.append(helper.make_node("Identity", [P + "cam/maps"], ["cam"]))
        shapes["cam"] = shapes[P + "cam/maps"]
    del g.output[:]
    for n in [*names, *(["cam"] if options.cam else [])]:
        g.output.append(helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", *shapes[n][1:]]))
    for n in names[:2]:
        if shapes[n][1:] != [k]:
            raise AdoptError(
                f"the class scores have shape {shapes[n]}, not [N, {k}] for the {k} labels"
            )

    layers = []
    for s in stages:
        kernel, stride, pad = _kernel(graph, s.node)
        shape = shapes[f"features/{s.name}"]
        if len(shape) != 4:
            raise AdoptError(
                f"stage {s.name} ({s.node.op_type}) gives a {len(shape)}-D tensor; "
                "adopt serves 2-D convolutions"
            )
        layers.append(
            {
                "output": f"features/{s.name}",
                "name": s.name,
                "kind": s.kind,
                "kernel": kernel,
                "stride": stride,
                "padding": pad,
                "channels": shape[1],
                "height": shape[2],
                "width": shape[3],
            }
        )
    parity = _parity(
        original_session,
        adopted,
        (original_input, cls_out.name),
        layout,
        (mean, std),
        elem,
        given,
        (h, w, c),
    )
    if parity > PARITY_TOLERANCE:
        raise AdoptError(
            f"the adopted graph differs from the original by {parity:.1e} in "
            f"probability (more than {PARITY_TOLERANCE}); nothing was written"
        )
    params = sum(int(np.prod(t.dims)) for t in g.initializer)
    set_metadata(
        adopted,
        {
            "labels": options.labels,
            "input": input_entry(h, w, c, options.resize, options.background),
            "layers": layers,
            "temperature": 1.0,
            "metrics": {},
            "version": options.version,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "recipe": {
                "source": "python -m training adopt",
                "original": source.name,
                "command": options.command,
                "layout": layout,
                "parameters": params,
                "normalization": {"mean": mean.tolist(), "std": std.tolist()},
                "given": given,
                "tensors": {n: t for t, n in shown.items()},  # output -> original tensor
                "parity": {
                    "reference": f"onnxruntime on {source.name}",
                    "pictures": 8,
                    "max_abs_probabilities": parity,
                },
            },
            "cam": cam_meta,
        },
    )
    try:
        return save_model(adopted, out)
    except onnx.checker.ValidationError as exc:
        raise AdoptError(f"the rewritten graph fails onnx.checker ({_first_line(exc)})") from exc


def _blank(h: int, w: int, c: int, n: int = 1) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, h, w, c), dtype=np.uint8)


def _run_shapes(model: onnx.ModelProto, h: int, w: int, c: int) -> dict[str, list[int]]:
    """Every output's shape for a batch of 2: proves the batch axis is free, too."""
    try:
        session = _session(model)
        names = [o.name for o in session.get_outputs()]
        values = session.run(names, {INPUT_NAME: _blank(h, w, c, 2)})
    except Exception as exc:
        raise AdoptError(
            f"the model does not run with a batch of 2 pictures ({_first_line(exc)}); "
            "its graph may fix the batch size: export it with a dynamic batch "
            "axis"
        ) from exc
    return {n: list(v.shape) for n, v in zip(names, values)}


def _tensor_shape(model: onnx.ModelProto, tensor: str, h: int, w: int, c: int) -> list[int]:
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.append(helper.make_tensor_value_info(tensor, TensorProto.FLOAT, None))
    return _run_shapes(probe, h, w, c)[tensor]


def _parity(
    original: Any,
    adopted: onnx.ModelProto,
    names: tuple[str, str],
    layout: str,
    norm: tuple[np.ndarray, np.ndarray],
    elem: int,
    given: str,
    size: tuple[int, int, int],
) -> float:
    """Max |dp| between the adopted graph and the original fed the same pixels, one at a time."""
    pixels = _blank(*size, 8)
    got = _session(adopted).run(["probabilities"], {INPUT_NAME: pixels})[0]
    want = []
    for picture in pixels:
        x: np.ndarray = picture[None]
        if elem != TensorProto.UINT8:
            x = ((x.astype(np.float32) / 255.0 - norm[0]) / norm[1]).astype(FLOATS[elem])
        if layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        want.append(np.asarray(original.run([names[1]], {names[0]: x})[0], np.float64))
    ref = np.concatenate(want)
    if given == "logits":
        z = np.exp(ref - ref.max(1, keepdims=True))
        ref = z / z.sum(1, keepdims=True)
    return float(np.abs(got - ref).max())
