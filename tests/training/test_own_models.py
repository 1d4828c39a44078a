"""Networks convscope never built, made to meet the contract: two PyTorch modules exported with
``export --module`` and two ONNX files from other tools adopted (tests/own_models.py).

Each is compared with its original: probabilities within 1e-5 on the same pixels, every
``features/*`` output equal to the original's own intermediate tensor, and the CAM it claims.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper

from tests import own_models as om
from training.__main__ import main
from training.contract import read_metadata

from .conftest import REPO
from .test_export import check_contract

ADOPTED = ("plain-torch", "keras-like")
EXPORTED = ("lenet5", "resnet-lite")
CAM_KINDS = {
    "lenet5": "approximate",
    "resnet-lite": "exact",
    "plain-torch": "approximate",
    "keras-like": "exact",
    "keras-no-cam": None,
}


def session(path: Path | bytes) -> ort.InferenceSession:
    return ort.InferenceSession(
        path if isinstance(path, bytes) else str(path), providers=["CPUExecutionProvider"]
    )


def pixels_for(meta: dict[str, Any], n: int = 6, seed: int = 1) -> np.ndarray:
    inp = meta["input"]
    size = inp["height"]
    x, _ = om.stripes(n, size, inp["channels"], seed)
    return x


def run_all(path: Path, pixels: np.ndarray) -> dict[str, np.ndarray]:
    s = session(path)
    names = [o.name for o in s.get_outputs()]
    return dict(zip(names, s.run(names, {"image": pixels})))


@pytest.mark.parametrize("name", sorted(CAM_KINDS))
def test_every_model_meets_the_contract(own_models: om.OwnModels, name: str) -> None:
    meta = check_contract(own_models.models / name / "model.onnx")
    cam = meta["cam"]
    assert (cam["kind"] if cam else None) == CAM_KINDS[name]
    assert meta["recipe"]["parity"]["max_abs_probabilities"] <= 1e-5


def test_the_stages_are_found_and_named_from_the_networks_own_names(
    own_models: om.OwnModels,
) -> None:
    def stages(name: str) -> list[tuple[str, str, int, int, int]]:
        meta = read_metadata(own_models.models / name / "model.onnx")
        return [
            (ly["name"], ly["kind"], ly["kernel"], ly["stride"], ly["padding"])
            for ly in meta["layers"]
        ]

    assert stages("lenet5") == [
        ("conv1", "conv", 5, 1, 2),
        ("pool1", "pool", 2, 2, 0),
        ("conv2", "conv", 5, 1, 0),
        ("pool2", "pool", 2, 2, 0),
    ]
    assert [s[0] for s in stages("resnet-lite")] == [
        "stem",
        "layer1.conv1",
        "layer1.conv2",
        "layer1.down.0",
        "layer2.conv1",
        "layer2.conv2",
        "layer2.down.0",
    ]
    assert [s[2:] for s in stages("resnet-lite")][1] == (3, 2, 1)  # a strided convolution
    assert stages("plain-torch") == [
        ("features.features.0", "conv", 3, 1, 1),
        ("features.features.2", "pool", 2, 2, 0),
        ("features.features.3", "conv", 3, 1, 1),
        ("features.features.5", "pool", 2, 2, 0),
    ]
    assert stages("keras-like") == [
        ("sequential.conv2d", "conv", 3, 1, 1),
        ("sequential.max_pooling2d", "pool", 2, 2, 0),
        ("sequential.conv2d_1", "conv", 3, 2, 1),
    ]


@pytest.mark.parametrize("name", ADOPTED)
def test_adopted_models_equal_the_original_file(own_models: om.OwnModels, name: str) -> None:
    """Probabilities, and every feature map against the original graph's own tensor."""
    path = own_models.models / name / "model.onnx"
    adopted = onnx.load(str(path))
    copies = [
        n
        for n in adopted.graph.node
        if n.op_type in ("Identity", "Cast")
        and any(o.startswith("features/") or o == "probabilities" for o in n.output)
    ]
    assert copies == []  # the outputs are the original tensors renamed: no node runs for them
    meta = read_metadata(path)
    pixels = pixels_for(meta)
    got = run_all(path, pixels)
    # which tensor of the original each features/* output shows (the adopt's Cast reads it)
    # which tensor of the original each features/* output is (adopt renames, adds no node)
    shown = {
        out: tensor
        for out, tensor in meta["recipe"]["tensors"].items()
        if out.startswith("features/")
    }
    original = onnx.load(str(own_models.originals[name]))
    wanted = list(shown.values())
    original.graph.output.extend(onnx.ValueInfoProto(name=t) for t in wanted)
    ref = session(original.SerializeToString())
    scores = original.graph.output[0].name
    x = om.original_input(name, own_models, pixels)
    want = ref.run([scores, *wanted], {ref.get_inputs()[0].name: x})
    probs = want[0]
    if name == "plain-torch":  # the original gives logits; the adopted graph adds the softmax
        z = np.exp(probs - probs.max(1, keepdims=True))
        probs = z / z.sum(1, keepdims=True)
    np.testing.assert_allclose(got["probabilities"], probs, rtol=0, atol=1e-5)
    for (output, _), value in zip(shown.items(), want[1:]):
        np.testing.assert_allclose(got[output], value, rtol=0, atol=1e-5, err_msg=output)
    # the activation is what the features show, where there is one (Relu after each Conv)
    conv = next(ly["output"] for ly in meta["layers"] if ly["kind"] == "conv")
    assert got[conv].min() >= 0


def _torch_stages(name: str, net: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The tensors each stage should show, written out by hand from the two modules' code."""
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        m.register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, o))
        for n, m in net.named_modules()
        if n
    ]
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    if name == "lenet5":
        return {
            "conv1": torch.tanh(seen["conv1"]),
            "pool1": seen["pool1"],
            "conv2": seen["act2"],
            "pool2": seen["pool2"],
        }
    out = {"stem": F.relu(seen["bn"])}
    for block in ("layer1", "layer2"):
        out[f"{block}.conv1"] = F.relu(seen[f"{block}.bn1"])
        out[f"{block}.conv2"] = seen[block]  # relu(bn2 + shortcut): the block's output
        out[f"{block}.down.0"] = seen[f"{block}.down"]
    return out


@pytest.mark.parametrize("name", EXPORTED)
def test_exported_models_equal_pytorch(own_models: om.OwnModels, name: str) -> None:
    path = own_models.models / name / "model.onnx"
    pixels = pixels_for(read_metadata(path))
    got = run_all(path, pixels)
    net = own_models.nets[name].eval()
    x = torch.from_numpy(om.original_input(name, own_models, pixels))
    with torch.no_grad():
        probs = torch.softmax(net(x), 1).numpy()
    np.testing.assert_allclose(got["probabilities"], probs, rtol=0, atol=1e-5)
    for stage, value in _torch_stages(name, net, x).items():
        np.testing.assert_allclose(
            got[f"features/{stage}"], value.numpy(), rtol=0, atol=1e-4, err_msg=stage
        )


@pytest.mark.parametrize("name", ["resnet-lite", "keras-like"])
def test_an_exact_cam_averages_to_the_logit(own_models: om.OwnModels, name: str) -> None:
    """With a GAP + linear head, each class map's mean plus the bias is that class's logit."""
    path = own_models.models / name / "model.onnx"
    out = run_all(path, pixels_for(read_metadata(path)))
    means = out["cam"].mean(axis=(2, 3))
    bias = out["logits"] - means
    np.testing.assert_allclose(bias, np.broadcast_to(bias[:1], bias.shape), atol=1e-4)
    assert np.ptp(means, axis=1).min() > 0  # class maps differ


@pytest.mark.parametrize("name", ["lenet5", "plain-torch"])
def test_an_approximate_cam_is_the_channel_mean_of_its_stage(
    own_models: om.OwnModels, name: str
) -> None:
    path = own_models.models / name / "model.onnx"
    meta = read_metadata(path)
    out = run_all(path, pixels_for(meta))
    stage = out[f"features/{meta['cam']['layer']}"]
    assert meta["cam"]["layer"] == [ly["name"] for ly in meta["layers"] if ly["kind"] == "conv"][-1]
    for k in range(len(meta["labels"])):
        np.testing.assert_allclose(out["cam"][:, k], stage.mean(axis=1), atol=1e-5)


def test_a_fixed_batch_export_is_adopted_with_a_free_batch_axis(tmp_path: Path) -> None:
    original = om.plain_torch_onnx(tmp_path / "fixed.onnx", dynamic_batch=False)
    assert session(original).get_inputs()[0].shape == [1, 1, 28, 28]
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(om.LABELS10))
    out = tmp_path / "models" / "fixed" / "model.onnx"
    assert main(["adopt", str(original), "--labels", str(labels), "--out", str(out)]) == 0
    s = session(out)
    assert isinstance(s.get_inputs()[0].shape[0], str)
    assert s.run(["probabilities"], {"image": np.zeros((5, 28, 28, 1), np.uint8)})[0].shape == (
        5,
        10,
    )
    assert "Not trained by convscope" in (out.parent / "card.md").read_text()


# ---- what adopt cannot do: one sentence, a non-zero exit, no file ----------------------------


def _model(
    nodes: list, inputs: list, outputs: list, inits: list | None = None, opset: int = 17
) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits or [])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _mlp() -> onnx.ModelProto:
    w = onnx.numpy_helper.from_array(np.zeros((784, 10), np.float32), "w")
    return _model(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 784])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        [w],
    )


def _no_conv() -> onnx.ModelProto:
    w = onnx.numpy_helper.from_array(np.zeros((784, 10), np.float32), "w")
    return _model(
        [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("MatMul", ["f", "w"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        [w],
    )


def _dynamic_size() -> onnx.ModelProto:
    w = onnx.numpy_helper.from_array(np.zeros((10, 1, 3, 3), np.float32), "w")
    return _model(
        [
            helper.make_node("Conv", ["x", "w"], ["c"]),
            helper.make_node("GlobalAveragePool", ["c"], ["g"]),
            helper.make_node("Flatten", ["g"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        [w],
    )


def _future_opset() -> onnx.ModelProto:
    model = _dynamic_size()
    model.opset_import[0].version = 99
    return model


@pytest.mark.parametrize(
    ("make", "extra", "sentence"),
    [
        (
            _mlp,
            [],
            "input 'x' has shape ['N', 784]; adopt needs a 4-D image input "
            "([N, C, H, W] or [N, H, W, C])",
        ),
        (_no_conv, [], "the model has no Conv node: adopt serves convolutional networks"),
        (
            _dynamic_size,
            [],
            "input 'x' has a dynamic spatial size ['N', 1, 'H', 'W']; give the "
            "size the network was made for with --size HxWxC",
        ),
        (_future_opset, [], "onnxruntime {ort} cannot run bad.onnx (opset 99): "),
        (_dynamic_size, ["--size", "28x28x3"], "--size gives channels 3 but input 'x' has 1"),
    ],
)
def test_adopt_refuses_with_one_sentence_and_writes_nothing(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    make: Callable[[], onnx.ModelProto],
    extra: list[str],
    sentence: str,
) -> None:
    source = tmp_path / "bad.onnx"
    onnx.save(make(), str(source))
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(om.LABELS10))
    out = tmp_path / "models" / "bad" / "model.onnx"
    rc = main(["adopt", str(source), "--labels", str(labels), "--out", str(out), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0
    assert len(err) == 1 and err[0].startswith("error: " + sentence.format(ort=ort.__version__))
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_dynamic_size_adopts_with_size_given(tmp_path: Path) -> None:
    source = tmp_path / "dyn.onnx"
    onnx.save(_dynamic_size(), str(source))
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(om.LABELS10))
    out = tmp_path / "m" / "model.onnx"
    args = ["adopt", str(source), "--labels", str(labels), "--out", str(out), "--size", "20x24x1"]
    assert main(args) == 0
    assert session(out).get_inputs()[0].shape[1:] == [20, 24, 1]
    assert read_metadata(out)["cam"]["kind"] == "approximate"  # GAP, but no linear layer


# ---- the command lines ---------------------------------------------------------------------


def test_export_module_command_line(tmp_path: Path) -> None:
    """`python -m training export --module ... --weights ...` in a process of its own."""
    torch.manual_seed(3)
    weights = tmp_path / "lenet.pt"
    torch.save(om.lenet5().state_dict(), weights)
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps(om.LABELS10))
    out = tmp_path / "models" / "mine" / "model.onnx"
    cmd = [
        sys.executable,
        "-m",
        "training",
        "export",
        "--module",
        "tests.own_models:lenet5",
        "--weights",
        str(weights),
        "--labels",
        str(labels),
        "--input",
        "28x28x1",
        "--out",
        str(out),
        "--background",
        "dark",
        "--resize",
        "pad",
    ]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    meta = check_contract(out)
    assert meta["input"]["background"] == "dark" and meta["labels"] == om.LABELS10
    assert meta["recipe"]["command"].startswith("python -m training export --module tests.own")
    card = (out.parent / "card.md").read_text()
    assert "Class-activation map: approximate" in card and "conv1 (conv k5 s1 p2" in card


def test_export_module_refuses_weights_that_do_not_fit(tmp_path: Path) -> None:
    weights = tmp_path / "resnet.pt"
    torch.save(om.resnet_lite().state_dict(), weights)
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(om.LABELS10))
    out = tmp_path / "m" / "model.onnx"
    args = [
        "export",
        "--module",
        "tests.own_models:lenet5",
        "--weights",
        str(weights),
        "--labels",
        str(labels),
        "--input",
        "28x28x1",
        "--out",
        str(out),
    ]
    assert main(args) == 2
    assert not out.exists()
