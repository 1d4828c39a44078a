"""The committed gRPC messages: what ``make grpc-stubs`` makes from the proto, and on the wire the
same as Triton's (tritonclient.grpc's own ``service_pb2``), field by field."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ["open_inference_grpc_pb2.py", "open_inference_grpc_pb2.pyi"]


def test_committed_stubs_are_what_make_grpc_stubs_generates(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    subprocess.run(
        ["make", "-s", "grpc-stubs", f"PY={sys.executable}", f"GRPC_OUT={tmp_path}"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    for name in GENERATED:
        committed = (ROOT / "service" / "grpc" / name).read_text()
        assert (tmp_path / name).read_text() == committed, f"{name} is stale: run make grpc-stubs"


def _fields(message: object) -> dict[str, tuple[int, int, int]]:
    return {f.name: (f.number, f.type, f.label) for f in message.fields}  # type: ignore[attr-defined]


def test_messages_match_tritons_field_numbers_and_types() -> None:
    pb = pytest.importorskip("service.grpc.open_inference_grpc_pb2")
    triton = pytest.importorskip("tritonclient.grpc.service_pb2")  # both in one process: fine
    ours = pb.DESCRIPTOR
    assert ours.package == "inference"
    (service,) = ours.services_by_name.values()
    theirs = triton.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.full_name == theirs.full_name == "inference.GRPCInferenceService"
    for method in service.methods:
        twin = theirs.methods_by_name[method.name]
        assert method.input_type.full_name == twin.input_type.full_name
        assert method.output_type.full_name == twin.output_type.full_name
    checked = 0
    stack = list(ours.message_types_by_name.values())
    while stack:
        message = stack.pop()
        stack += message.nested_types
        twin = triton.DESCRIPTOR.pool.FindMessageTypeByName(message.full_name)
        mine, tritons = _fields(message), _fields(twin)
        # Triton's file may add fields; every field of ours must be the same there.
        assert {k: tritons.get(k) for k in mine} == mine, message.full_name
        checked += 1
    assert checked >= 20
