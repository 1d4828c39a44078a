"""A bad model stops the start: non-zero exit and one line naming the file and the problem.

Every case is a model folder built in a temporary directory from the committed model (or from
nothing); the processes start in parallel to keep the test short.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.server import MODELS, start_and_exit

pytestmark = pytest.mark.e2e

onnx = pytest.importorskip("onnx")

GOOD = MODELS / "fashion-mnist" / "model.onnx"
EXIT_WITHIN_S = 120.0


def _write(data: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(data)


def _missing(path: Path) -> None:
    pass  # the folder exists, model.onnx does not


def _truncated(path: Path) -> None:
    data = GOOD.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _random(path: Path) -> None:
    path.write_bytes(np.random.default_rng(3).bytes(50_000))


def _wrong_input(path: Path) -> None:
    """A valid ONNX graph (opset 17) with a float input called 'x': nothing like the contract."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)


def _edit_metadata(edit: Callable[[dict[str, str]], None]) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        model = onnx.load(GOOD)
        props = {p.key: p.value for p in model.metadata_props}
        edit(props)
        del model.metadata_props[:]
        onnx.helper.set_model_props(model, props)
        onnx.save(model, path)

    return write


def _drop_labels(props: dict[str, str]) -> None:
    del props["labels"]


def _three_labels(props: dict[str, str]) -> None:
    props["labels"] = '["a", "b", "c"]'


def _labels_not_json(props: dict[str, str]) -> None:
    props["labels"] = "{not json"


def _input_size_lies(props: dict[str, str]) -> None:
    import json

    spec = json.loads(props["input"])
    spec["height"], spec["width"] = 64, 64
    props["input"] = json.dumps(spec)


# name -> (how model.onnx is made, words the one error line must contain)
CASES: dict[str, tuple[Callable[[Path], None], tuple[str, ...]]] = {
    "missing": (_missing, ("not found",)),
    "empty": (_write(b""), ("empty",)),
    "truncated": (_truncated, ("onnx",)),
    "random-bytes": (_random, ("onnx",)),
    "text": (_write(b"this is not a model\n"), ("onnx",)),
    "wrong-input": (_wrong_input, ("metadata",)),
    "no-labels": (_edit_metadata(_drop_labels), ("labels",)),
    "labels-not-json": (_edit_metadata(_labels_not_json), ("json",)),
    "label-count-mismatch": (_edit_metadata(_three_labels), ("probabilities",)),
    "input-size-mismatch": (_edit_metadata(_input_size_lies), ("input",)),
}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str, Path]]:
    """Start one service per case at once; collect (exit code, output, model path)."""
    running: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
    for name, (make, _) in CASES.items():
        folder = tmp_path_factory.mktemp(name) / "models" / "fashion-mnist"
        folder.mkdir(parents=True)
        make(folder / "model.onnx")
        running[name] = (start_and_exit(folder.parent), folder / "model.onnx")
    results = {}
    for name, (process, path) in running.items():
        try:
            out, _ = process.communicate(timeout=EXIT_WITHIN_S)
        except subprocess.TimeoutExpired:
            process.kill()
            out, _ = process.communicate()
        results[name] = (process.returncode, out.decode(errors="replace"), path)
    return results


@pytest.mark.parametrize("name", list(CASES))
def test_bad_model_refuses_to_start(outcomes: dict[str, tuple[int, str, Path]], name: str) -> None:
    code, output, path = outcomes[name]
    assert code not in (0, None, -9), f"exit {code}:\n{output}"
    assert "Traceback" not in output, output
    naming = [line for line in output.splitlines() if str(path) in line]
    assert len(naming) == 1, f"expected one line naming {path}:\n{output}"
    line = naming[0].lower()
    for word in CASES[name][1]:
        assert word in line, f"{word!r} not in {naming[0]!r}"
    assert len(naming[0]) < 500


def test_missing_model_folder(tmp_path: Path) -> None:
    process = start_and_exit(tmp_path / "nowhere")
    out, _ = process.communicate(timeout=EXIT_WITHIN_S)
    output = out.decode(errors="replace")
    assert process.returncode != 0
    assert "Traceback" not in output
    naming = [line for line in output.splitlines() if str(tmp_path / "nowhere") in line]
    assert len(naming) == 1 and "does not exist" in naming[0], output


def test_empty_model_folder(tmp_path: Path) -> None:
    process = start_and_exit(tmp_path)
    out, _ = process.communicate(timeout=EXIT_WITHIN_S)
    output = out.decode(errors="replace")
    assert process.returncode != 0
    assert "Traceback" not in output
    assert sum(str(tmp_path) in line and "no models" in line for line in output.splitlines()) == 1


def test_one_bad_model_among_good_ones(tmp_path: Path) -> None:
    """A good model does not carry a bad one: the whole start is refused."""
    shutil.copytree(GOOD.parent, tmp_path / "good", ignore=shutil.ignore_patterns("*.png"))
    (tmp_path / "zz-bad").mkdir()
    (tmp_path / "zz-bad" / "model.onnx").write_bytes(b"\x00" * 100)
    process = start_and_exit(tmp_path)
    out, _ = process.communicate(timeout=EXIT_WITHIN_S)
    output = out.decode(errors="replace")
    assert process.returncode != 0, output
    bad = tmp_path / "zz-bad" / "model.onnx"
    assert sum(str(bad) in line for line in output.splitlines()) == 1, output
