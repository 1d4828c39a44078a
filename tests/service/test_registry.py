"""The registry loads every model folder, refuses contract breakers by name, and reloads safely."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.errors import ModelError, NotFound
from service.registry import Registry, load_all
from service.settings import Settings

onnx = pytest.importorskip("onnx")


def variant(model_file: Path, dest: Path, edit: Callable[[Any], None]) -> Path:
    """A copy of the committed model with one thing broken."""
    model = onnx.load(str(model_file))
    edit(model)
    dest.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dest))
    return dest


def set_meta(key: str, change: Callable[[Any], Any]) -> Callable[[Any], None]:
    def edit(model: Any) -> None:
        prop = next(p for p in model.metadata_props if p.key == key)
        prop.value = json.dumps(change(json.loads(prop.value)))

    return edit


def drop_meta(key: str) -> Callable[[Any], None]:
    def edit(model: Any) -> None:
        keep = [p for p in model.metadata_props if p.key != key]
        del model.metadata_props[:]
        model.metadata_props.extend(keep)

    return edit


def drop_output(name: str) -> Callable[[Any], None]:
    def edit(model: Any) -> None:
        keep = [o for o in model.graph.output if o.name != name]
        del model.graph.output[:]
        model.graph.output.extend(keep)

    return edit


def float_input(model: Any) -> None:
    """The input becomes float32 (cast to uint8 inside): a graph that runs, with the wrong dtype."""
    for node in model.graph.node:
        node.input[:] = ["image_u8" if name == "image" else name for name in node.input]
    cast = onnx.helper.make_node("Cast", ["image"], ["image_u8"], to=onnx.TensorProto.UINT8)
    model.graph.node.insert(0, cast)
    model.graph.input[0].type.tensor_type.elem_type = onnx.TensorProto.FLOAT


def load(model_dir: Path, **settings: Any) -> Registry:
    return asyncio.run(Registry.load(Settings(model_dir=model_dir, **settings)))


def test_loads_the_model_with_its_spec(model_dir: Path, model_meta: dict[str, Any]) -> None:
    registry = load(model_dir)
    model = registry.get("fashion-mnist")
    assert registry.default_name == "fashion-mnist" and registry.default is model
    assert model.path == model_dir / "fashion-mnist" / "model.onnx"
    assert model.spec.labels == model_meta["labels"]
    assert [ly.output for ly in model.spec.layers] == [ly["output"] for ly in model_meta["layers"]]
    assert model.spec.version == model_meta["version"]
    assert [m.name for m in registry] == ["fashion-mnist"]


def test_unknown_name_is_404(model_dir: Path) -> None:
    with pytest.raises(NotFound) as info:
        load(model_dir).get("imagenet")
    assert info.value.payload() == {
        "error": {"code": "not_found", "message": "no model named 'imagenet'"}
    }


def labels_plus_one(labels: list[str]) -> list[str]:
    return [*labels, "Hat"]


def one_layer_less(layers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return layers[:-1]


BROKEN: list[tuple[str, Callable[[Any], None] | None, str]] = [
    ("missing", None, "file not found"),
    ("empty", None, "file is empty"),
    ("garbage", None, "not a loadable ONNX model ("),
    ("no labels", drop_meta("labels"), "metadata lacks labels (not a convscope model)"),
    ("no probabilities", drop_output("probabilities"), "output 'probabilities' is missing"),
    ("no cam", drop_output("cam"), "output 'cam' is missing"),
    (
        "float input",
        float_input,
        "input 'image' is tensor(float), expected tensor(uint8)",
    ),
    (
        "labels do not match the outputs",
        set_meta("labels", labels_plus_one),
        "output 'probabilities' has shape ['batch', 10], not [None, 11]",
    ),
    (
        "a feature output the metadata does not list",
        set_meta("layers", one_layer_less),
        "is not listed in the metadata layers",
    ),
]


@pytest.mark.parametrize(("case", "edit", "problem"), BROKEN, ids=[b[0] for b in BROKEN])
def test_a_broken_model_is_refused_naming_file_and_problem(
    tmp_path: Path,
    model_dir: Path,
    model_file: Path,
    case: str,
    edit: Callable[[Any], None] | None,
    problem: str,
) -> None:
    path = model_dir / "zz-broken" / "model.onnx"
    path.parent.mkdir()
    if case == "empty":
        path.write_bytes(b"")
    elif case == "garbage":
        path.write_bytes(b"this is not protobuf" * 10)
    elif edit is not None:
        variant(model_file, path, edit)
    with pytest.raises(ModelError) as info:
        load_all(Settings(model_dir=model_dir))
    assert info.value.path == path
    assert problem in info.value.problem
    assert str(info.value).startswith(f"{path}: ")


def test_an_empty_model_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as info:
        load(tmp_path)
    assert str(info.value) == f"{tmp_path}: no models found (expected <name>/model.onnx)"


def test_default_model_must_exist(model_dir: Path) -> None:
    with pytest.raises(ModelError) as info:
        load(model_dir, default_model="mnist")
    assert info.value.problem == "default model 'mnist' is not there (found: fashion-mnist)"


def test_reload_swaps_only_when_every_model_loads(model_dir: Path, model_file: Path) -> None:
    async def scenario() -> None:
        registry = await Registry.load(Settings(model_dir=model_dir))
        before = registry.get("fashion-mnist")

        second = model_dir / "copy" / "model.onnx"
        second.parent.mkdir()
        second.symlink_to(model_file)
        assert await registry.reload() == ["copy", "fashion-mnist"]
        assert registry.get("copy").spec.labels == before.spec.labels
        assert registry.get("fashion-mnist") is not before  # a fresh session

        current = registry.get("fashion-mnist")
        (model_dir / "broken").mkdir()
        (model_dir / "broken" / "model.onnx").write_bytes(b"")
        with pytest.raises(ModelError):
            await registry.reload()
        assert registry.get("fashion-mnist") is current  # the old set still serves
        inp = current.spec.input
        pixels = np.zeros((1, inp.height, inp.width, inp.channels), np.uint8)
        probs = (await current.runtime.infer(pixels, ["probabilities"]))["probabilities"]
        assert probs.shape == (1, len(current.spec.labels))

    asyncio.run(scenario())
