"""Every router of the service, assembled in one place (app.py includes them in this order)."""

from __future__ import annotations

from fastapi import APIRouter

from .health import router as health_router
from .v1 import router as v1_router
from .v2 import router as v2_router

ROUTERS: list[APIRouter] = [health_router, v1_router, v2_router]
