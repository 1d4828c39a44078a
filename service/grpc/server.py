"""The gRPC server: ``inference.GRPCInferenceService`` and ``grpc.health.v1.Health`` on one port.

grpc.aio, started in the app's lifespan once the models are loaded, so it runs on uvicorn's
event loop and shares the app's registry, batcher, settings and metrics: a gRPC picture and an
HTTP picture can land in the same onnxruntime batch. With several worker processes each binds
the port with SO_REUSEPORT and the kernel spreads the connections, as for HTTP.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from ..settings import Settings
from . import inference
from . import open_inference_grpc_pb2 as pb
from .calls import Gate

log = logging.getLogger("service")

SERVICE = "inference.GRPCInferenceService"
# Messages a little over the size limit still reach the call, which refuses them with the
# service's own sentence; past this slack gRPC refuses them itself (also RESOURCE_EXHAUSTED),
# without buffering them.
LIMIT_SLACK = 1024 * 1024


def _unary(behaviour: Any, request: Any, response: Any) -> grpc.RpcMethodHandler:
    deserialize = None if request is None else request.FromString
    return grpc.unary_unary_rpc_method_handler(
        behaviour, request_deserializer=deserialize, response_serializer=response.SerializeToString
    )


def build(state: Any, settings: Settings) -> tuple[grpc.aio.Server, health.aio.HealthServicer]:
    options = [
        ("grpc.max_receive_message_length", settings.max_upload_bytes + LIMIT_SLACK),
        ("grpc.max_send_message_length", -1),
        # Several workers share the port; one process must not share it by accident.
        ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
    ]
    server = grpc.aio.server(options=options)
    gate = Gate(SERVICE, state)
    handlers = {
        "ServerLive": _unary(
            gate.call("ServerLive", inference.server_live, open_call=True),
            pb.ServerLiveRequest,
            pb.ServerLiveResponse,
        ),
        "ServerReady": _unary(
            gate.call("ServerReady", inference.server_ready, open_call=True),
            pb.ServerReadyRequest,
            pb.ServerReadyResponse,
        ),
        "ServerMetadata": _unary(
            gate.call("ServerMetadata", inference.server_metadata, open_call=True),
            pb.ServerMetadataRequest,
            pb.ServerMetadataResponse,
        ),
        "ModelReady": _unary(
            gate.call("ModelReady", inference.model_ready),
            pb.ModelReadyRequest,
            pb.ModelReadyResponse,
        ),
        "ModelMetadata": _unary(
            gate.call("ModelMetadata", inference.model_metadata),
            pb.ModelMetadataRequest,
            pb.ModelMetadataResponse,
        ),
        # Raw bytes in: the size limit is checked (and worded) before parsing.
        "ModelInfer": _unary(
            gate.call("ModelInfer", inference.model_infer, parse=pb.ModelInferRequest.FromString),
            None,
            pb.ModelInferResponse,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    checks = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    return server, checks


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@asynccontextmanager
async def serve(state: Any, settings: Settings) -> AsyncIterator[int]:
    """Serves until the block ends, then stops like HTTP: in-flight calls get the grace period.
    Yields the bound port (``CONVSCOPE_GRPC_PORT=0``: one the OS chose)."""
    assert settings.grpc_port is not None
    server, checks = build(state, settings)
    address = _address(settings.host, settings.grpc_port)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError:
        port = 0
    if not port:
        problem = f"gRPC cannot listen on {address} (in use, or not an address here)"
        state.startup_error = f"cannot start: {problem}"  # the one line the app prints
        raise OSError(problem)
    await server.start()
    serving = health_pb2.HealthCheckResponse.SERVING
    for name in ("", SERVICE):  # "": the whole server, what a Kubernetes gRPC probe asks
        await checks.set(name, serving)
    log.info("gRPC (Open Inference Protocol) on %s", _address(settings.host, port))
    try:
        yield port
    finally:
        await checks.enter_graceful_shutdown()  # probes see NOT_SERVING while calls drain
        await server.stop(settings.graceful_shutdown_s)
