"""A small typed client for the convscope HTTP API (/v1), on the standard library alone.

    from service.client import Client

    with Client("http://127.0.0.1:8000", api_key="my-key") as client:
        [result] = client.classify("shirt.png", top_k=3)
        print(result.predictions[0].label, result.predictions[0].probability)
        for fmap in client.feature_maps("shirt.png"):
            Path(f"{fmap.layer}.png").write_bytes(fmap.png)

It imports nothing beyond the standard library (no numpy, no onnxruntime, no torch), so scripts
can use it wherever the package is installed, the runtime image included. Every answer the
service refuses raises ``ServiceError`` with the service's status, code and sentence; a service
that cannot be reached raises ``Unreachable``. One client holds one keep-alive connection: use
one per thread.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

DEFAULT_URL = "http://127.0.0.1:8000"
Picture = str | os.PathLike[str] | bytes  # a file's path, or the picture's bytes


class ConvscopeError(Exception):
    """Anything the client could not get an answer for."""


class ServiceError(ConvscopeError):
    """The service answered with an error: its HTTP status, code and sentence."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status, self.code, self.message = status, code, message


class Unreachable(ConvscopeError):
    """No answer: the service is down, the address is wrong, or the connection broke."""


@dataclass(frozen=True)
class Prediction:
    label: str
    index: int
    probability: float


@dataclass(frozen=True)
class FeatureMap:
    layer: str
    kind: str  # "conv" or "pool"
    shape: tuple[int, ...]  # (channels, height, width)
    grid: dict[str, int]  # rows, cols, tile, channels
    png: bytes  # one tile per channel, row by row


@dataclass(frozen=True)
class Cam:
    label: str
    index: int
    png: bytes  # the heat map over the picture


@dataclass(frozen=True)
class Result:
    model: str
    version: str
    predictions: list[Prediction]  # most probable first
    preprocessing: dict[str, Any]
    feature_maps: list[FeatureMap]  # empty unless asked for
    cam: Cam | None
    input_png: bytes | None  # the exact pixels the network saw, when asked for


@dataclass(frozen=True)
class Model:
    name: str
    version: str
    default: bool
    labels: list[str]
    input: dict[str, Any]
    layers: list[dict[str, Any]]
    metrics: dict[str, Any]


def _png(data_url: str) -> bytes:
    return base64.b64decode(data_url.split(",", 1)[1])


def _model(doc: dict[str, Any]) -> Model:
    keys = ("name", "version", "default", "labels", "input", "layers", "metrics")
    return Model(**{k: doc[k] for k in keys})


def _result(model: dict[str, str], doc: dict[str, Any]) -> Result:
    fmaps = [
        FeatureMap(f["layer"], f["kind"], tuple(f["shape"]), f["grid"], _png(f["image"]))
        for f in doc.get("feature_maps") or []
    ]
    cam = doc.get("cam")
    return Result(
        model=model["name"],
        version=model["version"],
        predictions=[
            Prediction(p["label"], p["index"], p["probability"]) for p in doc["predictions"]
        ],
        preprocessing=doc["preprocessing"],
        feature_maps=fmaps,
        cam=Cam(cam["label"], cam["index"], _png(cam["image"])) if cam else None,
        input_png=_png(doc["input_image"]) if doc.get("input_image") else None,
    )


def _flag(value: bool | str | Sequence[str]) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else ",".join(value)


def _read(picture: Picture) -> bytes:
    return picture if isinstance(picture, bytes) else Path(picture).read_bytes()


def _multipart(pictures: list[bytes]) -> tuple[bytes, str]:
    boundary = secrets.token_hex(16)
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="picture{i}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode()
        + data
        + b"\r\n"
        for i, data in enumerate(pictures)
    ]
    return b"".join(
        parts
    ) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


class Client:
    def __init__(
        self, url: str = DEFAULT_URL, *, api_key: str | None = None, timeout: float = 60.0
    ) -> None:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.url = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        self._scheme, self._host, self._port = parts.scheme, parts.hostname, parts.port
        self._base = parts.path.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    # -- the API -------------------------------------------------------------------------------

    def models(self) -> list[Model]:
        """Every model the service runs (the default one says ``default=True``)."""
        return [_model(m) for m in self._json("GET", "/v1/models")["models"]]

    def model(self, name: str) -> Model:
        return _model(self._json("GET", f"/v1/models/{quote(name, safe='')}"))

    def classify(
        self,
        pictures: Picture | Sequence[Picture],
        *,
        model: str | None = None,
        top_k: int = 5,
        feature_maps: bool | Sequence[str] = False,
        cam: bool | str = False,
        input_image: bool = False,
    ) -> list[Result]:
        """One result per picture, in order. ``feature_maps``: True for every layer or layer
        names; ``cam``: True for each picture's top class, or a label."""
        if isinstance(pictures, str | bytes | os.PathLike):
            data = [_read(pictures)]
        else:
            data = [_read(p) for p in pictures]
        query = {
            "top_k": str(top_k),
            "feature_maps": _flag(feature_maps),
            "cam": _flag(cam),
            "input_image": _flag(input_image),
        }
        path = f"/v1/models/{quote(model, safe='')}/classify" if model else "/v1/classify"
        if len(data) == 1:  # the raw body: no multipart to build or parse
            body, kind = data[0], "application/octet-stream"
        else:
            body, kind = _multipart(data)
        doc = self._json("POST", f"{path}?{urlencode(query)}", body, kind)
        return [_result(doc["model"], r) for r in doc["results"]]

    def feature_maps(
        self, picture: Picture, *, layers: Sequence[str] | None = None, model: str | None = None
    ) -> list[FeatureMap]:
        """Each layer's activations for one picture as a PNG grid (every layer by default),
        in network order."""
        [result] = self.classify(picture, model=model, top_k=1, feature_maps=layers or True)
        return result.feature_maps

    # -- HTTP ----------------------------------------------------------------------------------

    def _json(self, method: str, path: str, body: bytes | None = None, kind: str = "") -> Any:
        status, data = self._send(method, self._base + path, body, kind)
        try:
            doc = json.loads(data) if data else None
        except ValueError:
            doc = None
        if status >= 400:
            error = doc.get("error") if isinstance(doc, dict) else None
            if isinstance(error, dict) and {"code", "message"} <= error.keys():
                raise ServiceError(status, error["code"], error["message"])
            raise ServiceError(status, "http_error", f"HTTP {status} from {self.url}")
        if doc is None:
            raise ConvscopeError(f"{self.url} did not answer with JSON (is it convscope?)")
        return doc

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            kind = (
                http.client.HTTPSConnection
                if self._scheme == "https"
                else http.client.HTTPConnection
            )
            self._conn = kind(self._host, self._port, timeout=self.timeout)
        return self._conn

    def _send(self, method: str, path: str, body: bytes | None, kind: str) -> tuple[int, bytes]:
        headers = {**self._headers, **({"Content-Type": kind} if kind else {})}
        # A kept-alive connection the server has closed fails on first use: once more, on a
        # new one (a classification changes nothing on the server, so repeating it is safe).
        for attempt in (1, 2):
            reused = self._conn is not None
            conn = self._connection()
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
            except (http.client.HTTPException, OSError) as exc:
                self.close()
                if reused and attempt == 1 and not isinstance(exc, TimeoutError):
                    continue
                raise Unreachable(f"cannot reach {self.url}: {exc or type(exc).__name__}") from None
            if response.will_close:
                self.close()
            return response.status, data
        raise AssertionError("not reached")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
