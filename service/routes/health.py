"""Liveness, readiness and Prometheus metrics: always open, even when API keys are set."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..deps import MetricsDep, RegistryDep
from ..schemas import Health, Ready, error_responses

router = APIRouter(tags=["health"])


@router.get("/healthz", name="health", summary="The process is alive")
def health() -> Health:
    return Health()


@router.get(
    "/readyz",
    name="ready",
    summary="Every model is loaded (503 until then)",
    responses=error_responses(503),
)
def ready(registry: RegistryDep) -> Ready:
    return Ready(models=[m.name for m in registry])


@router.get(
    "/metrics",
    name="metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Text format."}},
)
def prometheus_metrics(metrics: MetricsDep) -> Response:
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
