"""The Open Inference Protocol over gRPC (``inference.GRPCInferenceService``), beside HTTP.

Off unless ``CONVSCOPE_GRPC_PORT`` is set; it needs the ``grpc`` extra (grpcio). Importing this
package imports no grpcio: ``serving`` does, only when the port is set.

The generated messages (open_inference_grpc_pb2.py, ``make grpc-stubs``) live in a private
descriptor pool: the protocol's message names (``inference.ModelInferRequest``, ...) are also
what tritonclient.grpc registers in protobuf's default pool, and two files defining one name
there cannot be imported into the same process.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from ..settings import Settings


@asynccontextmanager
async def serving(state: Any, settings: Settings) -> AsyncIterator[None]:
    """For the app's lifespan: the gRPC server runs while the block does (nothing when off)."""
    if settings.grpc_port is None:
        yield
        return
    from .server import serve

    async with serve(state, settings):
        yield
