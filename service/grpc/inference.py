"""What each call of ``inference.GRPCInferenceService`` does: /v2's use case, over gRPC.

The work is /v2's (service/routes/v2.py): the same metadata, the same input checks and decoding,
the same output plan with ``probabilities`` by default, the same classification strings, the
same batcher. Only the messages differ (service/grpc/tensors.py). Each function takes the parsed
request and the app's state; errors are the service's own ``ServiceError``s, which
service/grpc/calls.py turns into gRPC status codes.
"""

from __future__ import annotations

from typing import Any

from .. import __version__
from ..errors import NotFound, NotReady
from ..registry import LoadedModel, Registry
from ..routes.v2 import EXTENSIONS, _metadata, _versioned, run_infer
from . import open_inference_grpc_pb2 as pb
from .tensors import encode_response, parse_request

SERVER_NAME = "convscope"


def registry_of(state: Any) -> Registry:
    registry: Registry | None = getattr(state, "registry", None)
    if registry is None:
        raise NotReady("the models are still loading; try again shortly")
    return registry


def _model(state: Any, name: str, version: str) -> LoadedModel:
    model = registry_of(state).get(name)
    return _versioned(model, version) if version else model


async def server_live(request: pb.ServerLiveRequest, state: Any) -> pb.ServerLiveResponse:
    return pb.ServerLiveResponse(live=True)


async def server_ready(request: pb.ServerReadyRequest, state: Any) -> pb.ServerReadyResponse:
    registry = getattr(state, "registry", None)
    return pb.ServerReadyResponse(ready=registry is not None and len(registry) > 0)


async def model_ready(request: pb.ModelReadyRequest, state: Any) -> pb.ModelReadyResponse:
    # As Triton: a model (or version) it does not have is not ready, rather than an error, so
    # tritonclient.grpc's is_model_ready() says False where tritonclient.http's does.
    try:
        _model(state, request.name, request.version)
    except (NotFound, NotReady):
        return pb.ModelReadyResponse(ready=False)
    return pb.ModelReadyResponse(ready=True)


async def server_metadata(
    request: pb.ServerMetadataRequest, state: Any
) -> pb.ServerMetadataResponse:
    return pb.ServerMetadataResponse(name=SERVER_NAME, version=__version__, extensions=EXTENSIONS)


async def model_metadata(request: pb.ModelMetadataRequest, state: Any) -> pb.ModelMetadataResponse:
    meta = _metadata(_model(state, request.name, request.version))
    response = pb.ModelMetadataResponse(
        name=meta.name, versions=meta.versions, platform=meta.platform
    )
    for tensor in meta.inputs:
        response.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
    for tensor in meta.outputs:
        response.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
    return response


async def model_infer(request: pb.ModelInferRequest, state: Any) -> pb.ModelInferResponse:
    model = _model(state, request.model_name, request.model_version)
    req = parse_request(request)
    outputs = await run_infer(req, model, state.settings, state.decoders)
    return encode_response(model.name, model.spec.version, req.id, outputs)
