"""The one edge (service/edge.py): the fast lane behind it answers exactly as FastAPI would.

Every request here goes to two apps on the same settings: the real one, whose lane answers plain
raw-body classifications, and a twin with its lane switched off, where FastAPI answers
everything behind the same edge. Status, JSON and headers must match; a spy says which requests
the lane took.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from service import balance
from service.app import create_app
from service.fastlane import FastLane
from service.schemas import ClassifyResponse
from service.settings import Settings
from tests import images as pics

KEY = "lane-key-123"
HEADERS_COMPARED = ("content-type", "www-authenticate", "connection")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, model_file: Path) -> Path:
    folder = tmp_path_factory.mktemp("lane") / "models"
    for name in ("fashion-mnist", "second"):
        (folder / name).mkdir(parents=True)
        (folder / name / "model.onnx").symlink_to(model_file)
    return folder


def settings(models: Path, **kw: Any) -> Settings:
    return Settings(model_dir=models, providers=["CPUExecutionProvider"], max_images=4, **kw)


class Pair:
    """The app with its lane and its twin without, and the requests the lane answered."""

    def __init__(self, models: Path, monkeypatch: pytest.MonkeyPatch, **kw: Any) -> None:
        self.lane_app = create_app(settings(models, **kw), static_dir=None)
        self.app_only = create_app(settings(models, **kw), static_dir=None)
        self.app_only.edge.fast = None  # type: ignore[attr-defined]
        self.taken: list[str] = []
        real, taken = FastLane.__call__, self.taken

        async def spy(lane: FastLane, scope: dict, *args: Any) -> Any:
            try:
                outcome = await real(lane, scope, *args)
            except Exception:  # answered by the lane: the edge words the error
                taken.append(scope["path"])
                raise
            if outcome is True:  # answered by the lane
                taken.append(scope["path"])
            return outcome

        monkeypatch.setattr(FastLane, "__call__", spy)

    def __enter__(self) -> Pair:
        self.with_lane = TestClient(self.lane_app).__enter__()
        self.without = TestClient(self.app_only).__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.with_lane.__exit__(None, None, None)
        self.without.__exit__(None, None, None)

    def both(self, path: str, **kw: Any) -> tuple[httpx.Response, httpx.Response]:
        return self.with_lane.post(path, **kw), self.without.post(path, **kw)


@pytest.fixture
def pair(models: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pair]:
    with Pair(models, monkeypatch) as p:
        yield p


def assert_same(a: httpx.Response, b: httpx.Response) -> None:
    assert a.status_code == b.status_code, (a.text, b.text)
    assert a.json() == b.json()
    for name in HEADERS_COMPARED:
        assert a.headers.get(name) == b.headers.get(name), name
    assert a.headers["x-request-id"] and b.headers["x-request-id"]


@pytest.fixture(scope="module")
def pictures(fashion_mnist: tuple[np.ndarray, np.ndarray]) -> dict[str, bytes]:
    a = fashion_mnist[0][3]
    photo = np.dstack([np.kron(a, np.ones((12, 16), np.uint8))] * 3)  # 336x448 RGB
    return {
        "png": pics.png(a),
        "jpeg": pics.jpeg(photo, quality=90),
        "rgba": pics.rgba_png(a),
        "exif": pics.exif_rotated(a),
    }


@pytest.mark.parametrize("kind", ["png", "jpeg", "rgba", "exif"])
@pytest.mark.parametrize(
    "query",
    ["", "?top_k=3", "?top_k=1000", "?input_image=true", "?top_k=2&feature_maps=false&cam=no"],
)
def test_plain_classifications_are_answered_by_the_lane_as_by_the_routes(
    pair: Pair, pictures: dict[str, bytes], kind: str, query: str
) -> None:
    for path in ("/v1/classify", "/v1/models/second/classify"):
        body = pictures[kind]
        a, b = pair.both(path + query, content=body, headers={"content-type": "image/png"})
        assert a.status_code == 200
        assert_same(a, b)
        ClassifyResponse.model_validate(a.json())  # the documented schema
        # A multipart upload of the picture: the same answer, from the lane and from FastAPI.
        c, d = pair.both(path + query, files={"file": ("p.png", body, "image/png")})
        assert_same(c, d)
        assert c.json() == a.json()
    assert pair.taken == ["/v1/classify"] * 2 + ["/v1/models/second/classify"] * 2


def test_input_image_is_only_sent_when_asked(pair: Pair, pictures: dict[str, bytes]) -> None:
    plain = pair.with_lane.post("/v1/classify", content=pictures["png"]).json()
    shown = pair.with_lane.post("/v1/classify?input_image=1", content=pictures["png"]).json()
    assert plain["results"][0]["input_image"] is None
    assert shown["results"][0]["input_image"].startswith("data:image/png;base64,")


@pytest.mark.parametrize(
    ("path", "kw"),
    [
        ("/v1/classify", {"json": {"images": ["aGVsbG8="]}}),
        ("/v1/classify?feature_maps=true", {}),
        ("/v1/classify?feature_maps=conv1", {}),
        ("/v1/classify?feature_maps=nope", {}),
        ("/v1/classify?cam=true", {}),
        ("/v1/classify?cam=0", {}),  # class 0, not "false"
        ("/v1/classify?cam=Sneaker", {}),
        ("/v1/classify?top_k=0", {}),
        ("/v1/classify?top_k=five", {}),
        ("/v1/classify?top_k=1001", {}),
        ("/v1/classify?top_k=%C2%B2", {}),  # a Unicode digit
        ("/v1/classify?top_k=2&top_k=3", {}),
        ("/v1/classify?input_image=maybe", {}),
        ("/v1/classify?something=else", {}),
        ("/v1/classify?" + "cam=" + "x" * 300, {}),
        ("/v1/models/nobody/classify", {}),
        ("/v1/models//classify", {}),
        ("/v1/classify/", {}),
    ],
)
def test_everything_else_goes_to_the_app_and_gets_its_answer(
    pair: Pair, pictures: dict[str, bytes], path: str, kw: dict[str, Any]
) -> None:
    if not kw:
        kw = {"content": pictures["png"], "headers": {"content-type": "image/png"}}
    a, b = pair.both(path, follow_redirects=False, **kw)
    if a.status_code == 307:  # /v1/classify/ -> /v1/classify, as FastAPI does
        assert (a.status_code, a.headers["location"]) == (b.status_code, b.headers["location"])
    else:
        assert_same(a, b)
    assert pair.taken == []


def part(disposition: str, data: bytes, extra: str = "") -> bytes:
    head = f"Content-Disposition: {disposition}\r\n{extra}Content-Type: image/png\r\n\r\n"
    return head.encode() + data


MULTIPART = {
    "two files": [part('form-data; name="file"; filename="a"', b"{png}")] * 2,
    "a text field": [part('form-data; name="file"', b"{png}")],
    "another field": [part('form-data; name="picture"; filename="a"', b"{png}")],
    "a file and a field": [
        part('form-data; name="file"; filename="a"', b"{png}"),
        part('form-data; name="note"', b"hello"),
    ],
    "an escaped filename": [part('form-data; name="file"; filename="a\\"b"', b"{png}")],
    "a transfer encoding": [
        part(
            'form-data; name="file"; filename="a"',
            b"{png}",
            "Content-Transfer-Encoding: binary\r\n",
        )
    ],
    "an empty file": [part('form-data; name="file"; filename="a"', b"")],
    "not a picture": [part('form-data; name="file"; filename="a"', b"%PDF-1.4 not a picture")],
}


@pytest.mark.parametrize("case", [*MULTIPART, "preamble", "no closing", "epilogue", "quoted"])
def test_multipart_bodies_the_lane_does_not_parse_get_the_apps_answer(
    pair: Pair, pictures: dict[str, bytes], case: str
) -> None:
    boundary = "b0und4ry'()+_,-./:=?"
    parts = [
        p.replace(b"{png}", pictures["png"])
        for p in MULTIPART.get(case, MULTIPART["two files"][:1])
    ]
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + p + b"\r\n" for p in parts)
    body += b"--" + boundary.encode() + b"--\r\n"
    media = f"multipart/form-data; boundary={boundary}"
    if case == "preamble":
        body = b"a preamble\r\n" + body
    elif case == "no closing":
        body = body[: -len(boundary) - 6]
    elif case == "epilogue":
        body += b"an epilogue"
    elif case == "quoted":
        media = f'multipart/form-data; boundary="{boundary}"'
    a, b = pair.both("/v1/classify", content=body, headers={"content-type": media})
    assert_same(a, b)
    answered = {"quoted": 200, "not a picture": 415}
    assert pair.taken == (["/v1/classify"] if case in answered else []), a.text
    if case in answered:
        assert a.status_code == answered[case]
    if case == "no closing":  # the app says what is wrong (it used to say "no picture")
        assert a.status_code == 400 and "closing boundary" in a.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"", 422),
        (b"not a picture at all", 415),
        ("truncated", 400),
        ("bomb", 413),
    ],
)
def test_bad_pictures_get_the_same_errors(
    pair: Pair, pictures: dict[str, bytes], body: bytes | str, status: int
) -> None:
    data = (
        {
            "truncated": lambda: pics.truncated(pictures["jpeg"]),
            "bomb": lambda: pics.png_bomb(10_000, 10_000),
        }[body]()
        if isinstance(body, str)
        else body
    )
    a, b = pair.both("/v1/classify", content=data, headers={"content-type": "image/png"})
    assert a.status_code == status
    assert_same(a, b)
    assert pair.taken == ["/v1/classify"]


def test_keys_and_limits_apply_in_the_lane(
    models: Path, monkeypatch: pytest.MonkeyPatch, pictures: dict[str, bytes]
) -> None:
    with Pair(models, monkeypatch, api_keys=[KEY], max_upload_bytes=50_000) as p:
        png, cases = pictures["png"], []
        cases.append({})  # no key
        cases.append({"authorization": "Bearer wrong"})
        cases.append({"authorization": f"Basic {KEY}"})  # not a bearer token: no key
        cases.append({"authorization": f"Bearer {KEY}"})
        cases.append({"x-api-key": KEY})
        cases.append({"authorization": "Bearer", "x-api-key": KEY})
        statuses = []
        for headers in cases:
            a, b = p.both("/v1/classify", content=png, headers=headers)
            assert_same(a, b)
            statuses.append(a.status_code)
        assert statuses == [401, 401, 401, 200, 200, 200]
        assert p.with_lane.post("/v1/classify", content=png).headers["www-authenticate"] == "Bearer"
        # Over the byte limit: 413, connection closed, before the key is even looked at: by the
        # edge, before any handler (the lane takes only the requests above and the 401 one).
        big = pictures["jpeg"] + b"\0" * 60_000
        a, b = p.both("/v1/classify", content=big)
        assert a.status_code == 413 and a.headers["connection"] == "close"
        assert a.json() == b.json()
        assert len(p.taken) == len(cases) + 1


def test_cors_applies_to_the_lane_as_to_the_routes(
    models: Path, monkeypatch: pytest.MonkeyPatch, pictures: dict[str, bytes]
) -> None:
    origin = "https://frontend.example"
    with Pair(models, monkeypatch, cors_origins=[origin]) as p:
        headers = {"origin": origin}
        a, b = p.both("/v1/classify", content=pictures["png"], headers=headers)
        assert a.status_code == 200 and a.headers["access-control-allow-origin"] == origin
        assert_same(a, b)
        for name in ("access-control-allow-origin", "access-control-expose-headers", "vary"):
            assert a.headers.get(name) == b.headers.get(name), name
        p.with_lane.post("/v1/classify", content=pictures["png"])  # no Origin: the lane too
        assert p.taken == ["/v1/classify"] * 2


def test_the_lane_keeps_request_ids_metrics_and_the_access_log(
    pair: Pair, pictures: dict[str, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    client = pair.with_lane
    with caplog.at_level(logging.INFO, logger="service.access"):
        given = client.post(
            "/v1/classify", content=pictures["png"], headers={"x-request-id": "abc-1"}
        )
        made = client.post("/v1/models/second/classify", content=b"junk")
    assert given.headers["x-request-id"] == "abc-1"
    assert len(made.headers["x-request-id"]) == 32 and made.status_code == 415
    lines = [r for r in caplog.records if r.name == "service.access"]
    assert [(r.route, r.status, r.request_id) for r in lines] == [  # type: ignore[attr-defined]
        ("/v1/classify", 200, "abc-1"),
        ("/v1/models/{name}/classify", 415, made.headers["x-request-id"]),
    ]
    metrics = client.get("/metrics").text
    assert 'convscope_http_requests_total{method="POST",route="/v1/classify",status="200"} 1.0' in (
        metrics
    )
    route = 'route="/v1/models/{name}/classify",status="415"'
    assert f'convscope_http_requests_total{{method="POST",{route}}} 1.0' in metrics
    assert pair.taken == ["/v1/classify", "/v1/models/second/classify"]


def count_inline(app: Any, inline: list[int]) -> None:
    """Record in ``inline`` the number of pictures of each run on the event loop (run_inline)."""
    runtime = app.state.registry.default.runtime
    real = runtime.run_inline

    def counting(pixels: np.ndarray, outputs: list[str]) -> dict:
        inline.append(len(pixels))
        return real(pixels, outputs)

    runtime.run_inline = counting


def test_a_lone_request_runs_inline_and_concurrent_ones_are_batched(
    models: Path, pictures: dict[str, bytes], fashion_mnist: tuple[np.ndarray, np.ndarray]
) -> None:
    app = create_app(settings(models), static_dir=None)
    inline: list[int] = []
    bodies = [pics.png(a) for a in fashion_mnist[0][:16]]

    async def scenario() -> tuple[list[dict], list[dict]]:
        async with app.router.lifespan_context(app):
            count_inline(app, inline)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                alone = [(await client.post("/v1/classify", content=b)).json() for b in bodies[:3]]
                together = await asyncio.gather(
                    *(client.post("/v1/classify", content=b) for b in bodies)
                )
                return alone, [r.json() for r in together]

    alone, together = asyncio.run(scenario())
    assert inline == [1, 1, 1]  # one after another: each ran inline, no batch
    registry, labels = app.state.metrics.registry, {"model": "fashion-mnist"}
    pictures_run = registry.get_sample_value("convscope_batch_size_sum", labels)
    calls = registry.get_sample_value("convscope_batch_size_count", labels)
    assert pictures_run == 3 + 16
    assert calls - 3 <= 4  # the 16 concurrent pictures shared a few onnxruntime calls
    assert together[:3] == alone  # and got the same answers


def test_a_lone_request_runs_inline_only_while_no_other_worker_holds_a_connection(
    models: Path, fashion_mnist: tuple[np.ndarray, np.ndarray]
) -> None:
    """The lone session's threads take every core: with another worker busy they would take its
    cores too, so the request then goes through the batcher's worker thread instead."""
    app = create_app(settings(models), static_dir=None)
    inline: list[int] = []
    body = pics.png(fashion_mnist[0][0])
    shares = balance.Balance(2)
    shares.join(0)
    shares.opened()  # this worker's one connection: the client below

    async def scenario() -> list[dict]:
        async with app.router.lifespan_context(app):
            count_inline(app, inline)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                answers = [(await client.post("/v1/classify", content=body)).json()]
                shares.slots[1] = 3  # the other worker now holds connections
                answers.append((await client.post("/v1/classify", content=body)).json())
                shares.slots[1] = 0  # and has closed them
                answers.append((await client.post("/v1/classify", content=body)).json())
                return answers

    balance.install(shares)
    try:
        answers = asyncio.run(scenario())
    finally:
        balance.install(None)
    assert inline == [1, 1]  # the first and the last; the second went to the batcher
    assert answers[0] == answers[1] == answers[2]
