from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from training.config import TrainConfig
from training.nets import PRESETS, ConvNet, build_net, model_args_for
from training.train import load_checkpoint, predict_logits, slow_bf16, train


def tiny_config(data_dir: Path, out: Path, **kw) -> TrainConfig:
    base = dict(dataset="mnist", data_dir=str(data_dir), preset="small", epochs=1, val_size=500,
                batch_size=64, out_dir=str(out), allow_download=False, threads=2)  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("channels", [1, 3])
def test_presets_expose_named_stages_and_cam(preset: str, channels: int) -> None:
    net = build_net(model_args_for(preset, channels, 7)).eval()
    x = torch.randn(2, channels, 28, 28)
    feats = net.forward_features(x)
    assert list(feats) == [n for n, _ in net.stages.named_children()]
    assert any(n.startswith("pool") for n in feats) and any(n.startswith("conv") for n in feats)
    last = list(feats.values())[-1]
    logits = net(x)
    assert logits.shape == (2, 7)
    # GAP head: the mean of each class-activation map plus the bias is that class's logit
    cam = net.class_activation_maps(last)
    torch.testing.assert_close(cam.mean(dim=(2, 3)) + net.fc.bias, logits, rtol=1e-4, atol=1e-4)


def test_conv_blocks_honour_kernel_stride_padding() -> None:
    layers = [
        {"kind": "conv", "channels": 8, "kernel": 5, "stride": 2, "padding": 2},
        {"kind": "pool", "kernel": 2, "stride": 2},
        {"kind": "conv", "channels": 4, "kernel": 3, "stride": 1, "padding": 0},
    ]
    net = ConvNet(3, 2, layers).eval()
    shapes = [tuple(v.shape) for v in net.forward_features(torch.zeros(1, 3, 32, 32)).values()]
    assert shapes == [(1, 8, 16, 16), (1, 8, 8, 8), (1, 4, 6, 6)]


def test_one_epoch_on_real_images_beats_chance(tiny_idx_dir: Path, tmp_path: Path) -> None:
    best = train(tiny_config(tiny_idx_dir, tmp_path, epochs=3, batch_size=32))
    net, ckpt = load_checkpoint(best)
    assert set(ckpt) >= {"state_dict", "model_args", "config", "data", "calibration"}
    from training.data import load_dataset

    ds = load_dataset("mnist", tiny_idx_dir, allow_download=False)
    logits = predict_logits(net, ds.test_x, ckpt["data"]["mean"], ckpt["data"]["std"])
    accuracy = (logits.argmax(1) == ds.test_y).mean()
    assert accuracy > 0.7, accuracy  # chance is 0.1
    assert 0.05 < ckpt["calibration"]["temperature"] < 20
    assert (tmp_path / "curves.png").stat().st_size > 1000
    assert (tmp_path / "history.json").exists()


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_resume_continues_identically(tiny_idx_dir: Path, tmp_path: Path, ema: float) -> None:
    straight = tmp_path / "straight"
    train(tiny_config(tiny_idx_dir, straight, epochs=2, limit_train=1200, ema=ema))
    split = tmp_path / "split"
    cfg = tiny_config(tiny_idx_dir, split, epochs=2, limit_train=1200, time_budget=0.001, ema=ema)
    train(cfg)  # the budget stops it after the first epoch
    assert torch.load(split / "last.pt", weights_only=False)["epoch"] == 1
    cfg.time_budget, cfg.resume = None, True
    train(cfg)
    a = torch.load(straight / "last.pt", weights_only=False)
    b = torch.load(split / "last.pt", weights_only=False)
    assert b["epoch"] == 2
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    assert [h["val_acc"] for h in a["history"]] == [h["val_acc"] for h in b["history"]]


def test_a_moving_average_of_the_weights_is_what_is_validated_and_kept(
    tiny_idx_dir: Path, tmp_path: Path
) -> None:
    from training.data import load_dataset, split_validation

    cfg = tiny_config(tiny_idx_dir, tmp_path, epochs=2, limit_train=1200, ema=0.9)
    best = train(cfg)
    last = torch.load(tmp_path / "last.pt", weights_only=False)
    kept, stepped = last["state_dict"], last["trained"]
    assert any(not torch.equal(kept[k], stepped[k]) for k in stepped)  # not the last step's
    assert "averaged" in last
    # The validation accuracy in the history is the averaged weights' own.
    ds = load_dataset("mnist", tiny_idx_dir, allow_download=False)
    _, _, val_x, val_y = split_validation(ds.train_x[:1200], ds.train_y[:1200], 500, 0)
    net = build_net(last["model_args"])
    net.load_state_dict(kept)
    logits = predict_logits(net, val_x, last["data"]["mean"], last["data"]["std"])
    assert (logits.argmax(1) == val_y).mean() == last["history"][-1]["val_acc"]
    assert load_checkpoint(best)[1]["config"]["ema"] == 0.9


def test_an_average_is_validated_with_batchnorm_statistics_of_its_own(
    tiny_idx_dir: Path, tmp_path: Path
) -> None:
    """Early in a run the averaged weights, carrying the average of other networks' BatchNorm
    statistics, validate far below the network being trained (31 % against 59 % here); with
    statistics measured for them they are close to it."""
    from training.data import load_dataset, split_validation

    train(tiny_config(tiny_idx_dir, tmp_path, epochs=2, limit_train=3000, ema=0.98))
    last = torch.load(tmp_path / "last.pt", weights_only=False)
    ds = load_dataset("mnist", tiny_idx_dir, allow_download=False)
    _, _, val_x, val_y = split_validation(ds.train_x[:3000], ds.train_y[:3000], 500, 0)

    def accuracy(state: dict[str, torch.Tensor]) -> float:
        net = build_net(last["model_args"])
        net.load_state_dict(state)
        logits = predict_logits(net, val_x, last["data"]["mean"], last["data"]["std"])
        return float((logits.argmax(1) == val_y).mean())

    kept, trained = accuracy(last["state_dict"]), accuracy(last["trained"])
    averaged = {
        k.removeprefix("module."): v for k, v in last["averaged"].items() if k != "n_averaged"
    }
    assert kept >= trained - 0.1, (kept, trained)
    assert kept > accuracy(averaged) + 0.1, (kept, accuracy(averaged))
    # the weights are the average's: only the statistics were measured again
    for name, value in averaged.items():
        if "running" not in name and "num_batches" not in name:
            assert torch.equal(value, last["state_dict"][name]), name


def test_rgb_folder_training_runs(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, colour in enumerate([(200, 30, 30), (30, 200, 30)]):
        (tmp_path / "data" / f"class{c}").mkdir(parents=True)
        for i in range(40):
            px = np.clip(np.array(colour) + rng.normal(0, 20, (12, 12, 3)), 0, 255)
            Image.fromarray(px.astype(np.uint8)).save(tmp_path / "data" / f"class{c}" / f"{i}.png")
    cfg = TrainConfig(dataset=f"folder:{tmp_path / 'data'}", image_size=12, preset="small",
                      epochs=3, val_size=10, batch_size=16, out_dir=str(tmp_path / "run"),
                      lr=1e-2)  # fmt: skip
    _, ckpt = load_checkpoint(train(cfg))
    assert ckpt["data"]["mode"] == "RGB" and ckpt["model_args"]["in_channels"] == 3
    assert ckpt["history"][-1]["val_acc"] >= 0.9  # red vs green is easy


def test_bf16_on_a_cpu_that_emulates_it_is_called_slow(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        monkeypatch.setattr(torch.cpu, probe, lambda: False)
    assert "10x slower" in (slow_bf16(cpu) or "")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert slow_bf16(cpu) is None
    assert slow_bf16(torch.device("cuda")) is None
