"""Dependencies as Annotated aliases, so route signatures read like data.

``ModelDep`` turns the ``{name}`` path parameter into a loaded model (404 for unknown names) in
this one place; ``RegistryDep`` is 503 until the lifespan has loaded every model.

They are ``async def`` although none awaits: FastAPI runs a plain ``def`` dependency in the
thread pool, a thread round trip per dependency per request (about a quarter of the server's
CPU per classification before this change; benchmarks/README.md).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from .decoding import Decoders
from .edge import check_api_key
from .errors import NotReady
from .metrics import Metrics
from .registry import LoadedModel, Registry
from .settings import Settings


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_registry(request: Request) -> Registry:
    registry: Registry | None = getattr(request.app.state, "registry", None)
    if registry is None:
        raise NotReady("the models are still loading; try again shortly")
    return registry


async def get_decoders(request: Request) -> Decoders:
    decoders: Decoders = request.app.state.decoders
    return decoders


async def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[Registry, Depends(get_registry)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
DecodersDep = Annotated[Decoders, Depends(get_decoders)]


async def get_model(name: str, registry: RegistryDep) -> LoadedModel:
    return registry.get(name)


async def get_default_model(registry: RegistryDep) -> LoadedModel:
    return registry.default


ModelDep = Annotated[LoadedModel, Depends(get_model)]
DefaultModelDep = Annotated[LoadedModel, Depends(get_default_model)]

# auto_error=False: a missing key is our 401 in our error shape, not FastAPI's 403.
bearer = HTTPBearer(auto_error=False, description="An API key from CONVSCOPE_API_KEYS.")
api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="An API key from CONVSCOPE_API_KEYS."
)


async def require_api_key(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    header_key: Annotated[str | None, Security(api_key_header)],
) -> None:
    """The edge's key check (service/edge.py); the Security parameters document it in OpenAPI."""
    if settings.api_keys:
        given = credentials.credentials if credentials is not None else header_key
        check_api_key(settings.api_keys, given)
