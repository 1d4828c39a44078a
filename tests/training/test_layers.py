"""Layer SPECs: the user's own stages from the command line or a file, checked before training."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from training.config import TrainConfig
from training.export import export_onnx
from training.layers import PRESETS, LayerError, parse_layers, plan, table
from training.nets import build_net, model_args_for
from training.train import load_checkpoint, train

from .conftest import REPO
from .test_export import check_contract

LENET = "conv 6 k5 p2 tanh nobn, avgpool k2 s2, conv 16 k5 tanh, dropout 0.1, avgpool k2 s2"


def test_a_spec_names_every_field() -> None:
    assert parse_layers("conv 8 k5 s2 p2 tanh nobn, maxpool k3 s2 p1, avgpool, dropout 0.25") == [
        {
            "kind": "conv",
            "channels": 8,
            "kernel": 5,
            "stride": 2,
            "padding": 2,
            "activation": "tanh",
            "batchnorm": False,
        },
        {"kind": "pool", "kernel": 3, "stride": 2, "padding": 1},
        {"kind": "avgpool", "kernel": 2, "stride": 2, "padding": 0},
        {"kind": "dropout", "rate": 0.25},
    ]


@pytest.mark.parametrize(("preset", "parameters"), [("small", 24_058), ("default", 288_170)])
def test_presets_are_named_specs_and_the_count_is_the_nets(preset: str, parameters: int) -> None:
    rows = plan(parse_layers(preset), 1, 28, 28, 10)
    assert sum(r.parameters for r in rows) == parameters
    net = build_net(model_args_for(preset, 1, 10))
    assert sum(p.numel() for p in net.parameters()) == parameters
    assert parse_layers(preset) == parse_layers(PRESETS[preset])


def test_the_table_walks_the_shapes() -> None:
    rows = plan(parse_layers(LENET), 1, 28, 28, 10)
    assert [(r.name, r.shape) for r in rows] == [
        ("conv1", (6, 28, 28)),
        ("avgpool1", (6, 14, 14)),
        ("conv2", (16, 10, 10)),
        ("dropout1", (16, 10, 10)),
        ("avgpool2", (16, 5, 5)),
        ("head", (10, 1, 1)),
    ]
    net = build_net({"in_channels": 1, "num_classes": 10, "layers": parse_layers(LENET)}).eval()
    feats = net.forward_features(torch.zeros(1, 1, 28, 28))
    assert {n: tuple(v.shape[1:]) for n, v in feats.items()} == {
        r.name: r.shape for r in rows if r.name not in ("head", "dropout1")
    }
    assert sum(p.numel() for p in net.parameters()) == sum(r.parameters for r in rows)
    assert table(rows, 1, 28, 28).splitlines()[-1] == "parameters: 2,758"


@pytest.mark.parametrize(
    ("spec", "size", "sentence"),
    [
        ("", 28, "the layer list is empty: give at least one conv block, e.g. 'conv 16'"),
        ("maxpool k2, avgpool k2", 28, "the layers have no conv block: a CNN needs at least one"),
        (
            "conv 8 k3, pool k2, conv 8 k15",
            28,
            "layer 3 (conv2, conv 8 k15 s1 p0 relu): the kernel 15x15 is larger than its 13x13 "
            "input (padding 0)",
        ),
        (
            "conv 8 k3 p3",
            28,
            "layer 1 (conv1, conv 8 k3 s1 p3 relu): padding 3 is not smaller than the kernel 3",
        ),
        (
            "conv 8 k3 s2, conv 8 k3 s2, conv 8 k3 s2",
            12,
            "layer 3 (conv3, conv 8 k3 s2 p0 relu): the kernel 3x3 is larger than its 2x2 input "
            "(padding 0)",
        ),
        (
            "conv 8, maxpool k2 p2",
            28,
            "layer 2 (pool1, pool k2 s2 p2): padding 2 is not smaller than the kernel 2",
        ),
        (
            "conv 8, dropout 1.5",
            28,
            "layer 2 (dropout1, dropout 1.5): the rate 1.5 is not in [0, 1)",
        ),
    ],
)
def test_a_spec_that_cannot_work_is_one_sentence(spec: str, size: int, sentence: str) -> None:
    with pytest.raises(LayerError) as e:
        plan(parse_layers(spec), 1, size, size, 10)
    assert str(e.value) == sentence


@pytest.mark.parametrize(
    ("spec", "sentence"),
    [
        (
            "conv k3",
            "stage 1 ('conv k3'): a conv block needs its number of filters, e.g. 'conv 32 k3'",
        ),
        ("conv 8 x5", "stage 1 ('conv 8 x5'): does not understand 'x5'"),
        (
            "conv 8, lstm 4",
            "stage 2 ('lstm 4'): starts with 'lstm', expected conv, maxpool, avgpool or dropout",
        ),
    ],
)
def test_a_spec_that_does_not_parse_is_one_sentence(spec: str, sentence: str) -> None:
    with pytest.raises(LayerError) as e:
        parse_layers(spec)
    assert str(e.value) == sentence


def test_json_and_yaml_files_hold_the_same_stages(tmp_path: Path) -> None:
    stages = parse_layers(LENET)
    (tmp_path / "net.json").write_text(json.dumps(stages))
    yaml = "layers:\n" + "".join(
        "  - {" + ", ".join(f"{k}: {v}" for k, v in s.items()) + "}\n" for s in stages
    )
    (tmp_path / "net.yaml").write_text(yaml)
    assert parse_layers(str(tmp_path / "net.json")) == stages
    assert parse_layers(str(tmp_path / "net.yaml")) == stages


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "training", "train", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_plan_prints_the_table_and_trains_nothing(tiny_idx_dir: Path, tmp_path: Path) -> None:
    done = _cli(
        "--dataset",
        "mnist",
        "--data-dir",
        str(tiny_idx_dir),
        "--layers",
        LENET,
        "--out-dir",
        str(tmp_path / "run"),
        "--plan",
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[2].split() == [
        "conv1",
        "conv",
        "6",
        "k5",
        "s1",
        "p2",
        "tanh",
        "nobn",
        "6x28x28",
        "156",
    ]
    assert lines[-1] == "parameters: 2,758"
    assert not (tmp_path / "run").exists()


def test_a_bad_spec_stops_before_training(tiny_idx_dir: Path, tmp_path: Path) -> None:
    done = _cli(
        "--dataset",
        "mnist",
        "--data-dir",
        str(tiny_idx_dir),
        "--layers",
        "conv 8 k3, pool k2, conv 8 k30",
        "--out-dir",
        str(tmp_path / "run"),
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "error: layer 3 (conv2, conv 8 k30 s1 p0 relu): the kernel 30x30 is larger than its "
        "13x13 input (padding 0)"
    )
    assert not (tmp_path / "run" / "best.pt").exists()


def test_a_spec_trains_exports_and_keeps_an_exact_cam(tiny_idx_dir: Path, tmp_path: Path) -> None:
    """A LeNet-style SPEC ending in average pooling: features per stage, CAM on the last one."""
    cfg = TrainConfig(
        dataset="mnist",
        data_dir=str(tiny_idx_dir),
        layers=LENET,
        epochs=1,
        val_size=500,
        out_dir=str(tmp_path / "run"),
        allow_download=False,
        threads=2,
    )
    net, ckpt = load_checkpoint(train(cfg))
    assert ckpt["model_args"]["layers"] == parse_layers(LENET)
    out = export_onnx(net, ckpt, tmp_path / "m" / "model.onnx")
    meta = check_contract(out)
    assert [ly["name"] for ly in meta["layers"]] == ["conv1", "avgpool1", "conv2", "avgpool2"]
    assert meta["cam"] == {"kind": "exact", "layer": "avgpool2", "method": meta["cam"]["method"]}
    assert f"--layers '{LENET}'" in meta["recipe"]["command"]
    s = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    pixels = np.random.default_rng(0).integers(0, 256, (3, 28, 28, 1), dtype=np.uint8)
    logits, cam = s.run(["logits", "cam"], {"image": pixels})
    bias = net.fc.bias.detach().numpy()
    np.testing.assert_allclose(cam.mean(axis=(2, 3)) + bias, logits, atol=1e-4)
