"""Fuzzing from the OpenAPI spec (schemathesis) against a real server: no 5xx anywhere, every
status and content type the API answers with is the one its spec documents.

Each operation gets valid requests with the real model's name, layer and version in its path,
valid requests with random path values, and invalid requests (negative mode). Bounded:
MAX_EXAMPLES requests per operation, derandomized, no example database on disk. Operations are
driven through schemathesis' Python API (its lazy pytest fixture loader does not work with
pytest 9), and every failure is collected before the test fails.
"""

from __future__ import annotations

import re

import httpx
import pytest

from tests.server import Server

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    status_code_conformance,
)

pytestmark = pytest.mark.e2e

MAX_EXAMPLES = 30
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance]


def real_path_values(url: str) -> dict[str, str]:
    model = httpx.get(f"{url}/v1/models", timeout=10).json()["models"][0]
    return {
        "name": model["name"],
        "version": model["version"],
        "layer": model["layers"][-1]["name"],
    }


def test_api_conforms_to_its_spec(server: Server) -> None:
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    real = real_path_values(server.url)
    failures: dict[str, str] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10, [op.label for op in operations]

    for operation in operations:
        names = re.findall(r"{(\w+)}", operation.path)
        known = {n: real[n] for n in names if n in real}
        strategies = [operation.as_strategy(GenerationMode.NEGATIVE)]
        if names:
            strategies.append(operation.as_strategy(path_parameters=known))
        strategies.append(operation.as_strategy())

        @given(case=st.one_of(strategies))
        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
            print_blob=False,
        )
        def fuzz(case: schemathesis.Case) -> None:
            case.call_and_validate(checks=CHECKS, timeout=30)

        try:
            fuzz()
        except Exception as exc:  # keep going: report every operation that fails
            failures[operation.label] = str(exc)[:1500]
    assert not failures, "\n\n".join(f"{k}:\n{v}" for k, v in failures.items())
