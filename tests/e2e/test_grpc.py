"""The Open Inference Protocol over gRPC, spoken by the unmodified ``tritonclient[grpc]`` against
a real ``python -m service`` process with ``CONVSCOPE_GRPC_PORT`` set.

Every call of ``inference.GRPCInferenceService``; probabilities equal to REST /v2's and /v1's for
the same real Fashion-MNIST pictures (UINT8 as raw and as typed contents, PNG files as BYTES);
errors with the same sentences as /v2, as gRPC status codes; the message-size limit; API keys in
metadata; ``grpc.health.v1`` as a Kubernetes gRPC probe asks it. Typed contents go through
tritonclient's own generated stub (its ``service_pb2``), since its ``InferInput`` always sends raw.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.e2e

MODEL = "fashion-mnist"
ATOL = 1e-6
SERVICE = "inference.GRPCInferenceService"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Servers:
    """One service process: its HTTP URL, its gRPC address and clients for both."""

    def __init__(self, svc: Any, grpc_port: int) -> None:
        self.url, self.process = svc.url, svc.process
        self.address = f"127.0.0.1:{grpc_port}"
        self.grpc = tgrpc.InferenceServerClient(self.address)
        self.http = thttp.InferenceServerClient(svc.url.removeprefix("http://"))
        self.channel = grpc.insecure_channel(self.address)
        self.stub = service_pb2_grpc.GRPCInferenceServiceStub(self.channel)

    def close(self) -> None:
        self.grpc.close()
        self.http.close()
        self.channel.close()


@pytest.fixture(scope="module")
def start(service_factory: Any) -> Callable[..., Any]:
    @contextmanager
    def run(env: dict[str, str] | None = None) -> Iterator[Servers]:
        port = free_port()
        settings = {"CONVSCOPE_GRPC_PORT": str(port), "CONVSCOPE_WORKERS": "1", **(env or {})}
        with service_factory(settings) as svc:
            servers = Servers(svc, port)
            try:
                yield servers
            finally:
                servers.close()

    return run


@pytest.fixture(scope="module")
def servers(start: Callable[..., Any]) -> Iterator[Servers]:
    with start() as s:
        yield s


@pytest.fixture(scope="module")
def pictures(fashion_mnist: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Eight real test pictures as the model's input, uint8 [8, 28, 28, 1]."""
    return np.ascontiguousarray(fashion_mnist[0][:8, :, :, None])


def _png(picture: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(picture[:, :, 0]).save(buffer, format="PNG")
    return buffer.getvalue()


def _v1(url: str, picture: np.ndarray, labels: int) -> np.ndarray:
    files = {"file": ("p.png", _png(picture), "image/png")}
    response = httpx.post(f"{url}/v1/classify", params={"top_k": labels}, files=files, timeout=30)
    response.raise_for_status()
    probs = np.zeros(labels, np.float32)
    for p in response.json()["results"][0]["predictions"]:
        probs[p["index"]] = p["probability"]
    return probs


def _uint8(module: Any, pictures: np.ndarray) -> Any:
    inp = module.InferInput("image", list(pictures.shape), "UINT8")
    inp.set_data_from_numpy(pictures)
    return inp


def _files(module: Any, files: list[bytes]) -> Any:
    inp = module.InferInput("image", [len(files)], "BYTES")
    inp.set_data_from_numpy(np.array(files, dtype=np.object_))
    return inp


def test_health_readiness_and_metadata_as_rest_v2(
    servers: Servers, model_meta: dict[str, Any]
) -> None:
    g, h = servers.grpc, servers.http
    assert g.is_server_live() and g.is_server_ready()
    assert g.is_model_ready(MODEL)
    assert g.is_model_ready(MODEL, model_version=model_meta["version"])
    # As Triton (and tritonclient.http here): a model it does not have is "not ready".
    assert not g.is_model_ready("no-such-model") and not h.is_model_ready("no-such-model")
    assert not g.is_model_ready(MODEL, model_version="0.0.0-nope")

    server = g.get_server_metadata(as_json=True)
    assert {k: server[k] for k in ("name", "version", "extensions")} == h.get_server_metadata()

    meta = g.get_model_metadata(MODEL, as_json=True)
    rest = h.get_model_metadata(MODEL)

    def tensors(doc: dict[str, Any], key: str) -> list[tuple[str, str, list[int]]]:
        return [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in doc[key]]

    assert (meta["name"], meta["versions"], meta["platform"]) == (
        rest["name"],
        rest["versions"],
        rest["platform"],
    )
    assert tensors(meta, "inputs") == tensors(rest, "inputs")
    assert tensors(meta, "outputs") == tensors(rest, "outputs")
    assert tensors(meta, "inputs") == [("image", "UINT8", [-1, 28, 28, 1])]


def test_uint8_raw_contents_match_rest_v2_v1_and_onnxruntime(
    servers: Servers,
    pictures: np.ndarray,
    reference: Callable[..., np.ndarray],
    model_meta: dict[str, Any],
) -> None:
    result = servers.grpc.infer(MODEL, [_uint8(tgrpc, pictures)], request_id="uint8-raw")
    response = result.get_response()
    assert (response.id, response.model_version) == ("uint8-raw", model_meta["version"])
    # No outputs named: probabilities only, not every feature map.
    assert [o.name for o in response.outputs] == ["probabilities"]
    got = result.as_numpy("probabilities")
    assert got.dtype == np.float32 and got.shape == (8, len(model_meta["labels"]))
    rest = servers.http.infer(MODEL, [_uint8(thttp, pictures)]).as_numpy("probabilities")
    np.testing.assert_allclose(got, rest, atol=ATOL, rtol=0)
    np.testing.assert_allclose(got, reference(pictures), atol=ATOL, rtol=0)
    for picture, row in zip(pictures, got, strict=True):
        v1 = _v1(servers.url, picture, len(model_meta["labels"]))
        np.testing.assert_allclose(row, v1, atol=ATOL, rtol=0)


def test_uint8_typed_contents(
    servers: Servers, pictures: np.ndarray, reference: Callable[..., np.ndarray]
) -> None:
    request = service_pb2.ModelInferRequest(model_name=MODEL)
    tensor = request.inputs.add(name="image", datatype="UINT8", shape=list(pictures.shape))
    tensor.contents.uint_contents.extend(pictures.ravel().tolist())
    response = servers.stub.ModelInfer(request, timeout=30)
    (out,) = response.outputs
    assert (out.name, out.datatype, list(out.shape)) == ("probabilities", "FP32", [8, 10])
    got = np.frombuffer(response.raw_output_contents[0], "<f4").reshape(8, 10)
    np.testing.assert_allclose(got, reference(pictures), atol=ATOL, rtol=0)


def test_png_files_as_bytes_raw_and_typed_through_the_decoder(
    servers: Servers, pictures: np.ndarray, reference: Callable[..., np.ndarray]
) -> None:
    files = [_png(p) for p in pictures]
    raw = servers.grpc.infer(MODEL, [_files(tgrpc, files)]).as_numpy("probabilities")
    rest = servers.http.infer(MODEL, [_files(thttp, files)]).as_numpy("probabilities")
    request = service_pb2.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="image", datatype="BYTES", shape=[len(files)])
    request.inputs[0].contents.bytes_contents.extend(files)
    typed = np.frombuffer(servers.stub.ModelInfer(request).raw_output_contents[0], "<f4")
    # PNG is lossless and the pictures are already 28x28: the same pixels reach the network.
    want = reference(pictures)
    for got in (raw, rest, typed.reshape(8, 10)):
        np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)


def test_classification_extension_and_feature_maps_as_rest_v2(
    servers: Servers, pictures: np.ndarray
) -> None:
    def ask(module: Any, client: Any) -> tuple[np.ndarray, np.ndarray]:
        outputs = [
            module.InferRequestedOutput("probabilities", class_count=3),
            module.InferRequestedOutput("features/conv1"),
        ]
        result = client.infer(MODEL, [_uint8(module, pictures)], outputs=outputs)
        return result.as_numpy("probabilities"), result.as_numpy("features/conv1")

    classes, fmaps = ask(tgrpc, servers.grpc)
    rest_classes, rest_fmaps = ask(thttp, servers.http)
    assert classes.shape == (8, 3) and classes.tolist() == rest_classes.tolist()
    assert classes[0][0].decode().count(":") == 2  # "score:index:label"
    assert fmaps.shape == (8, 32, 28, 28)
    np.testing.assert_allclose(fmaps, rest_fmaps, atol=ATOL, rtol=0)


def _error(call: Callable[[], Any]) -> tuple[str, str]:
    with pytest.raises(InferenceServerException) as info:
        call()
    return info.value.status(), info.value.message()


ERRORS = [
    # (what, gRPC status, HTTP status of the same request over REST /v2)
    ("unknown model", "NOT_FOUND", "404"),
    ("unknown version", "NOT_FOUND", "404"),
    ("unknown input", "INVALID_ARGUMENT", "400"),
    ("wrong datatype", "INVALID_ARGUMENT", "400"),
    ("wrong shape", "INVALID_ARGUMENT", "400"),
    ("unknown output", "INVALID_ARGUMENT", "400"),
    ("not a picture", "INVALID_ARGUMENT", "415"),
    ("too many pictures", "INVALID_ARGUMENT", "400"),
]


def _bad_request(module: Any, what: str) -> dict[str, Any]:
    model, version, outputs = MODEL, "", None
    inp = _uint8(module, np.zeros((1, 28, 28, 1), np.uint8))
    if what == "unknown model":
        model = "no-such-model"
    elif what == "unknown version":
        version = "0.0.0-nope"
    elif what == "unknown input":
        inp = module.InferInput("pixels", [1, 28, 28, 1], "UINT8")
        inp.set_data_from_numpy(np.zeros((1, 28, 28, 1), np.uint8))
    elif what == "wrong datatype":
        inp = module.InferInput("image", [1, 28, 28, 1], "FP32")
        inp.set_data_from_numpy(np.zeros((1, 28, 28, 1), np.float32))
    elif what == "wrong shape":
        inp = _uint8(module, np.zeros((1, 14, 56, 1), np.uint8))
    elif what == "unknown output":
        outputs = [module.InferRequestedOutput("features/nope")]
    elif what == "not a picture":
        inp = _files(module, [b"plain text, not a picture"])
    elif what == "too many pictures":
        inp = _uint8(module, np.zeros((17, 28, 28, 1), np.uint8))
    return {"model_name": model, "inputs": [inp], "model_version": version, "outputs": outputs}


@pytest.mark.parametrize(("what", "code", "http_status"), ERRORS, ids=[e[0] for e in ERRORS])
def test_errors_are_status_codes_with_rest_v2s_sentences(
    servers: Servers, what: str, code: str, http_status: str
) -> None:
    status, message = _error(lambda: servers.grpc.infer(**_bad_request(tgrpc, what)))
    rest_status, rest_message = _error(lambda: servers.http.infer(**_bad_request(thttp, what)))
    assert (status, rest_status) == (f"StatusCode.{code}", http_status)
    assert message == rest_message and message


def test_bad_messages_are_invalid_argument(servers: Servers) -> None:
    # Bytes that are no ModelInferRequest at all, sent on the call's path.
    call = servers.channel.unary_unary(f"/{SERVICE}/ModelInfer")
    with pytest.raises(grpc.RpcError) as info:
        call(b"\xff\xff\xff\xff", timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == "the request is not a valid message of this call's type"
    # Raw contents that do not match the shape.
    request = service_pb2.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="image", datatype="UINT8", shape=[1, 28, 28, 1])
    request.raw_input_contents.append(b"\x00" * 100)
    with pytest.raises(grpc.RpcError) as info:
        servers.stub.ModelInfer(request, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == (
        "input 'image' has 100 binary bytes but UINT8 [1, 28, 28, 1] needs 784"
    )


def test_request_id_in_trailing_metadata_and_metrics(servers: Servers) -> None:
    request = service_pb2.ServerLiveRequest()
    _, call = servers.stub.ServerLive.with_call(request, metadata=[("x-request-id", "trace-42")])
    assert ("x-request-id", "trace-42") in tuple(call.trailing_metadata())
    servers.grpc.infer(MODEL, [_uint8(tgrpc, np.zeros((1, 28, 28, 1), np.uint8))])
    text = httpx.get(f"{servers.url}/metrics", timeout=10).text
    line = (
        f'convscope_http_requests_total{{method="GRPC",route="/{SERVICE}/ModelInfer",status="200"}}'
    )
    assert line in text


def test_size_limits_are_resource_exhausted_with_the_services_sentence(
    start: Callable[..., Any], pictures: np.ndarray
) -> None:
    limit = 50_000
    env = {"CONVSCOPE_MAX_UPLOAD_BYTES": str(limit), "CONVSCOPE_MAX_PIXELS": "10000"}
    with start(env) as s:
        big = _files(tgrpc, [np.random.default_rng(0).bytes(limit + 10)])
        status, message = _error(lambda: s.grpc.infer(MODEL, [big]))
        assert status == "StatusCode.RESOURCE_EXHAUSTED"
        assert message == f"the request body is larger than the limit of {limit} bytes"
        big_rest = _files(thttp, [np.random.default_rng(0).bytes(limit + 10)])
        assert _error(lambda: s.http.infer(MODEL, [big_rest])) == ("413", message)
        # Far past the limit gRPC refuses the message itself, without reading it: the same code.
        huge = _files(tgrpc, [bytes(3 * 1024 * 1024)])
        assert _error(lambda: s.grpc.infer(MODEL, [huge]))[0] == "StatusCode.RESOURCE_EXHAUSTED"
        # A picture over the pixel limit (101 x 100 > 10,000): the same sentence as over HTTP.
        wide = io.BytesIO()
        Image.new("L", (101, 100)).save(wide, format="PNG")
        status, message = _error(lambda: s.grpc.infer(MODEL, [_files(tgrpc, [wide.getvalue()])]))
        rest = _error(lambda: s.http.infer(MODEL, [_files(thttp, [wide.getvalue()])]))
        assert (status, rest) == ("StatusCode.RESOURCE_EXHAUSTED", ("413", message))
        # Under the limits all is well.
        ok = s.grpc.infer(MODEL, [_files(tgrpc, [_png(pictures[0])])])
        assert ok.as_numpy("probabilities").shape == (1, 10)


def test_api_keys_in_metadata(start: Callable[..., Any]) -> None:
    with start({"CONVSCOPE_API_KEYS": "k1,k2"}) as s:
        image = [_uint8(tgrpc, np.zeros((1, 28, 28, 1), np.uint8))]
        status, message = _error(lambda: s.grpc.infer(MODEL, image))
        rest_image = [_uint8(thttp, np.zeros((1, 28, 28, 1), np.uint8))]
        assert status == "StatusCode.UNAUTHENTICATED"
        assert _error(lambda: s.http.infer(MODEL, rest_image)) == ("401", message)
        wrong = {"authorization": "Bearer nope"}
        assert _error(lambda: s.grpc.infer(MODEL, image, headers=wrong)) == (
            "StatusCode.UNAUTHENTICATED",
            "the API key is not valid",
        )
        for headers in ({"authorization": "Bearer k2"}, {"x-api-key": "k1"}):
            result = s.grpc.infer(MODEL, image, headers=headers)
            assert result.as_numpy("probabilities").shape == (1, 10)
        _error(lambda: s.grpc.get_model_metadata(MODEL))  # metadata needs the key too
        # Liveness, readiness and health stay open, as /v2/health/* does.
        assert s.grpc.is_server_live() and s.grpc.is_server_ready()
        health = health_pb2_grpc.HealthStub(s.channel)
        reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_health_checking_as_a_kubernetes_grpc_probe(start: Callable[..., Any]) -> None:
    with start() as s:
        health = health_pb2_grpc.HealthStub(s.channel)
        for name in ("", SERVICE):  # "" is what a probe without `service:` asks
            reply = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as info:
            health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        # While it stops (SIGTERM), a watcher sees NOT_SERVING before the stream ends.
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        s.process.send_signal(signal.SIGTERM)
        # (A probe would stop asking; a watcher left open would hold the shutdown for its grace.)
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        watch.cancel()
        assert s.process.wait(timeout=30) == 0


def test_several_workers_share_the_grpc_port(start: Callable[..., Any]) -> None:
    # Each worker process starts its own gRPC server on the port (SO_REUSEPORT, as HTTP shares
    # its socket); a fresh connection may land on either, and every one is answered.
    with start({"CONVSCOPE_WORKERS": "2"}) as s:
        for _ in range(6):
            with tgrpc.InferenceServerClient(s.address) as client:
                assert client.is_model_ready(MODEL)
                image = _uint8(tgrpc, np.zeros((1, 28, 28, 1), np.uint8))
                assert client.infer(MODEL, [image]).as_numpy("probabilities").shape == (1, 10)


def test_each_call_has_one_access_line_with_its_request_id(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    port, grpc_port = free_port(), free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CONVSCOPE_")}
    env = {
        **clean,
        "CONVSCOPE_GRPC_PORT": str(grpc_port),
        "CONVSCOPE_WORKERS": "1",
        "CONVSCOPE_LOG_FORMAT": "json",
    }
    cmd = [
        sys.executable,
        "-m",
        "service",
        "--port",
        str(port),
        "--model-dir",
        str(root / "models"),
    ]
    log = tmp_path / "service.log"
    with log.open("wb") as out:
        process = subprocess.Popen(cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while "gRPC (Open Inference Protocol)" not in log.read_text():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        with tgrpc.InferenceServerClient(f"127.0.0.1:{grpc_port}") as client:
            image = _uint8(tgrpc, np.zeros((1, 28, 28, 1), np.uint8))
            client.infer(MODEL, [image], headers={"x-request-id": "call-1"})
            _error(lambda: client.infer("no-such-model", [image], headers={"x-request-id": "c-2"}))
        time.sleep(0.5)
    finally:
        process.terminate()
        process.wait(timeout=30)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    access = [line for line in lines if line.get("logger") == "service.access"]
    route = f"/{SERVICE}/ModelInfer"
    assert [
        (a["method"], a["path"], a["route"], a["status"], a["request_id"], a["client"])
        for a in access
    ] == [
        ("GRPC", route, route, 200, "call-1", "127.0.0.1"),
        ("GRPC", route, route, 404, "c-2", "127.0.0.1"),
    ]
