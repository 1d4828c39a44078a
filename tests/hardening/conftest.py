"""Hardening tests: real ``python -m service`` processes attacked by real clients.

The helper modules next to this file (``hardening_harness``, ``hostile_pictures``) are imported
by name, so this folder goes on ``sys.path`` (pytest runs with ``--import-mode=importlib``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tests.server import Server, run_server


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    """One default-configured service shared by the tests that only send requests."""
    with run_server() as running:
        yield running
