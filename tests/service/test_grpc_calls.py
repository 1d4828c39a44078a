"""The gRPC request path (service/grpc/calls.py) on one call: the work's errors as status codes,
the unexpected as INTERNAL naming only the request id, and one metrics observation each.
(The e2e tests run the same through a real server; this covers what a client cannot provoke.)"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

grpc = pytest.importorskip("grpc")
from service.errors import NotFound  # noqa: E402
from service.grpc.calls import Gate, status_code  # noqa: E402
from service.metrics import Metrics  # noqa: E402
from service.settings import Settings  # noqa: E402


class Aborted(Exception):
    pass


class Context:
    """What a grpc.aio servicer context offers a unary call, recorded."""

    def __init__(self, metadata: tuple[tuple[str, str], ...] = ()) -> None:
        self.metadata, self.trailing, self.aborted = metadata, (), None

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata

    def peer(self) -> str:
        return "ipv6:[::1]:50123"

    def set_trailing_metadata(self, trailing: Any) -> None:
        self.trailing = trailing

    async def abort(self, code: Any, details: str, trailing: Any = ()) -> None:
        self.aborted = (code, details)
        raise Aborted


def _gate(model_dir: Path, **settings: Any) -> Gate:
    state = SimpleNamespace(settings=Settings(model_dir=model_dir, **settings), metrics=Metrics())
    return Gate("test.Service", state)


def _count(gate: Gate, status: str) -> float:
    value = gate.state.metrics.registry.get_sample_value(
        "convscope_http_requests_total",
        {"method": "GRPC", "route": "/test.Service/Call", "status": status},
    )
    return value or 0.0


async def _fails(request: Any, state: Any) -> Any:
    raise RuntimeError("a bug with a secret path /srv/x")


async def _not_found(request: Any, state: Any) -> Any:
    raise NotFound("no model named 'x'")


async def _echo(request: Any, state: Any) -> Any:
    return request


def test_the_unexpected_is_internal_with_only_the_request_id(
    model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gate = _gate(model_dir)
    context = Context((("x-request-id", "rid-1"),))
    with caplog.at_level(logging.ERROR, logger="service"), pytest.raises(Aborted):
        asyncio.run(gate.call("Call", _fails, open_call=True)(b"", context))
    assert context.aborted == (grpc.StatusCode.INTERNAL, "internal error (request id rid-1)")
    assert context.trailing == (("x-request-id", "rid-1"),)
    assert "rid-1" in caplog.text and "RuntimeError" in caplog.text
    assert _count(gate, "500") == 1


def test_service_errors_keys_and_size(model_dir: Path) -> None:
    gate = _gate(model_dir, api_keys="k", max_upload_bytes=10)
    context = Context()
    with pytest.raises(Aborted):
        asyncio.run(gate.call("Call", _echo)(b"", context))
    assert context.aborted is not None
    assert context.aborted[0] == grpc.StatusCode.UNAUTHENTICATED
    keyed = Context((("authorization", "Bearer k"),))
    with pytest.raises(Aborted):
        asyncio.run(gate.call("Call", _not_found)(b"", keyed))
    assert keyed.aborted == (grpc.StatusCode.NOT_FOUND, "no model named 'x'")
    big = Context((("x-api-key", "k"),))
    with pytest.raises(Aborted):
        asyncio.run(gate.call("Call", _echo, parse=bytes)(b"x" * 11, big))
    assert big.aborted == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "the request body is larger than the limit of 10 bytes",
    )
    fits = asyncio.run(
        gate.call("Call", _echo, parse=bytes.upper)(b"x" * 10, Context(big.metadata))
    )
    assert fits == b"X" * 10
    assert [_count(gate, s) for s in ("401", "404", "413", "200")] == [1, 1, 1, 1]


@pytest.mark.parametrize(
    ("http", "code"),
    [
        (400, "INVALID_ARGUMENT"),
        (415, "INVALID_ARGUMENT"),
        (422, "INVALID_ARGUMENT"),
        (408, "DEADLINE_EXCEEDED"),
        (503, "UNAVAILABLE"),
        (500, "INTERNAL"),
        (418, "INTERNAL"),
    ],
)
def test_status_codes(http: int, code: str) -> None:
    assert status_code(http) == getattr(grpc.StatusCode, code)
