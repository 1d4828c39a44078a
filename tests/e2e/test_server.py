"""A real ``python -m service`` process on a loopback port, real HTTP clients, real Fashion-MNIST
test pictures in the formats people send: the service must give the model's own answer.
"""

from __future__ import annotations

import base64
import io
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from tests import images as pics

pytestmark = pytest.mark.e2e

CLASSIFY = "/v1/models/fashion-mnist/classify"

# name -> (encoder, content type, what preprocessing must report)
ENCODINGS: dict[str, tuple[Callable[[np.ndarray], bytes], str, dict[str, Any]]] = {
    "png": (pics.png, "image/png", {"format": "PNG", "mode": "L"}),
    "jpeg": (pics.jpeg, "image/jpeg", {"format": "JPEG", "mode": "L"}),
    "rgba png": (pics.rgba_png, "image/png", {"format": "PNG", "alpha_flattened": True}),
    "exif-rotated jpeg": (pics.exif_rotated, "image/jpeg", {"exif_rotated": True}),
}


@pytest.fixture(scope="module")
def server(service_factory: Any) -> Iterator[str]:
    with service_factory() as service:
        yield service.url


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_real_pictures_get_the_models_top1(
    server: str, decisive_pictures: tuple[np.ndarray, np.ndarray], encoding: str
) -> None:
    encode, content_type, reported = ENCODINGS[encoding]
    images, expected = decisive_pictures
    got = []
    with httpx.Client(base_url=server, timeout=30) as client:
        for i, image in enumerate(images):
            data = encode(image)
            if i % 2:  # both ways of sending a picture
                r = client.post(f"{CLASSIFY}?top_k=1", files={"file": ("p", data, content_type)})
            else:
                r = client.post(CLASSIFY, content=data, headers={"Content-Type": content_type})
            assert r.status_code == 200, r.text
            result = r.json()["results"][0]
            assert result["preprocessing"].items() >= reported.items()
            assert (result["preprocessing"]["width"], result["preprocessing"]["height"]) == (28, 28)
            got.append(result["predictions"][0]["index"])
    assert got == expected.tolist()


def test_probabilities_of_a_png_equal_the_model_on_its_pixels(
    server: str, fashion_mnist: tuple[np.ndarray, np.ndarray], reference
) -> None:
    images = fashion_mnist[0][:3]
    files = [("file", (f"{i}.png", pics.png(a), "image/png")) for i, a in enumerate(images)]
    r = httpx.post(f"{server}{CLASSIFY}?top_k=100", files=files, timeout=30)
    assert r.status_code == 200
    expected = reference(images[..., None])
    for result, want in zip(r.json()["results"], expected, strict=True):
        got = np.zeros_like(want)
        for p in result["predictions"]:
            got[p["index"]] = p["probability"]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_feature_maps_and_cam_come_back_as_pngs(
    server: str, decisive_pictures: tuple[np.ndarray, np.ndarray], model_meta: dict[str, Any]
) -> None:
    image = decisive_pictures[0][0]
    body = {"images": [base64.b64encode(pics.png(image)).decode()]}
    r = httpx.post(f"{server}/v1/classify?feature_maps=true&cam=true", json=body, timeout=30)
    result = r.json()["results"][0]
    for fm, layer in zip(result["feature_maps"], model_meta["layers"], strict=True):
        png = base64.b64decode(fm["image"].split(",", 1)[1])
        assert Image.open(io.BytesIO(png)).format == "PNG"
        assert fm["grid"]["channels"] == layer["channels"] == fm["shape"][0]
    assert result["cam"]["index"] == result["predictions"][0]["index"]
    layer = model_meta["layers"][-1]["name"]
    r = httpx.post(
        f"{server}/v1/models/fashion-mnist/feature-maps/{layer}", content=pics.png(image)
    )
    assert (r.status_code, r.headers["content-type"]) == (200, "image/png")
    assert int(r.headers["x-grid-channels"]) == model_meta["layers"][-1]["channels"]


def batch_sizes(server: str) -> tuple[float, float]:
    """(onnxruntime calls with one picture, all calls) from the Prometheus histogram."""
    text = httpx.get(f"{server}/metrics").text
    family = next(
        f for f in text_string_to_metric_families(text) if f.name == "convscope_batch_size"
    )
    single = next(s.value for s in family.samples if s.labels.get("le") == "1.0")
    total = next(s.value for s in family.samples if s.name.endswith("_count"))
    return single, total


def send_together(server: str, path: str, bodies: list[bytes]) -> list[int]:
    """One connection per body, all requests sent, then the status of each answer. Each request
    goes out but for its last byte; the last bytes then follow back to back, so the server
    has them all at about the same moment."""
    host, port = server.removeprefix("http://").split(":")
    socks = [socket.create_connection((host, int(port)), timeout=30) for _ in bodies]
    try:
        messages = []
        for sock, body in zip(socks, bodies, strict=True):
            head = f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: image/png\r\n"
            messages.append(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
            sock.sendall(messages[-1][:-1])
        time.sleep(0.2)
        for sock, message in zip(socks, messages, strict=True):
            sock.sendall(message[-1:])
        statuses = []
        for sock in socks:
            answer = b""
            while b"\r\n" not in answer:
                chunk = sock.recv(4096)
                assert chunk, "the connection closed without an answer"
                answer += chunk
            statuses.append(int(answer.split()[1]))
        return statuses
    finally:
        for sock in socks:
            sock.close()


def test_concurrent_requests_are_batched_and_a_lone_one_is_not_delayed(
    service_factory: Any, fashion_mnist: tuple[np.ndarray, np.ndarray]
) -> None:
    pictures = [pics.png(a) for a in fashion_mnist[0][:24]]
    # A long batch wait makes both effects plain: grouping under load, no wait when alone. The
    # lone session is off: this is the batcher's behaviour (the lane's inline runs for a client
    # that is alone are tested in tests/service/test_fastlane.py).
    env = {"CONVSCOPE_BATCH_DELAY_MS": "1000", "CONVSCOPE_LONE_THREADS": "0"}
    with service_factory(env) as service:
        url = f"{service.url}{CLASSIFY}"
        with httpx.Client(timeout=30) as client:
            client.post(url, content=pictures[0])  # warm the connection and the code paths
            start = time.perf_counter()
            assert client.post(url, content=pictures[1]).status_code == 200
            alone = time.perf_counter() - start
        assert alone < 0.5, f"a lone request took {alone:.3f} s: it waited for a batch"
        assert batch_sizes(service.url) == (2, 2)

        # Truly concurrent: every request is on the wire before any answer is read (clients
        # that each connect and send in turn may be served one by one, each alone).
        assert set(send_together(service.url, CLASSIFY, pictures)) == {200}
        single, total = batch_sizes(service.url)
        assert total - single >= 1, "no onnxruntime call carried more than one picture"
        assert total < 2 + len(pictures)
