"""Dependencies: the service's minimum versions carry the known fixes for the parsers that face
the network, the installed versions satisfy them, and ``make audit`` exists (it needs the online
vulnerability database, so it is not part of the test run)."""

from __future__ import annotations

import subprocess
import tomllib
from importlib.metadata import version

import pytest

from tests.server import ROOT

packaging = pytest.importorskip("packaging")

from packaging.requirements import Requirement  # noqa: E402
from packaging.version import Version  # noqa: E402

# package -> (lowest version with every fix below, the advisories it fixes)
FIXED_IN = {
    "python-multipart": ("0.0.26", "CVE-2024-24762 CVE-2024-53981 CVE-2026-24486 CVE-2026-40347"),
    "starlette": ("0.49.1", "CVE-2024-47874 CVE-2025-54121 CVE-2025-62727"),
    "pillow": ("12.3.0", "CVE-2024-28219 CVE-2026-25990 CVE-2026-40192 PYSEC-2026-2253..2257"),
    "h11": ("0.16.0", "CVE-2025-43859"),
}


def runtime_requirements() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(line) for line in project["dependencies"]]
    return {r.name.lower(): r for r in reqs}


def floor(req: Requirement) -> Version | None:
    lows = [Version(s.version) for s in req.specifier if s.operator in (">=", "==", "~=")]
    return max(lows) if lows else None


@pytest.mark.parametrize("name", list(FIXED_IN))
def test_minimum_version_has_the_fixes(name: str) -> None:
    req = runtime_requirements()[name]
    fixed, advisories = FIXED_IN[name]
    low = floor(req)
    assert low is not None and low >= Version(fixed), f"{req}: needs >= {fixed} ({advisories})"
    assert not any(s.operator in ("<", "<=", "!=") for s in req.specifier), str(req)


@pytest.mark.parametrize("name", list(FIXED_IN))
def test_installed_version_has_the_fixes(name: str) -> None:
    installed = version(name)
    assert runtime_requirements()[name].specifier.contains(installed, prereleases=True), installed


def test_every_runtime_dependency_has_a_minimum() -> None:
    for name, req in runtime_requirements().items():
        assert floor(req) is not None, f"{name} has no minimum version"


def test_make_audit_exists_and_is_not_part_of_the_tests() -> None:
    dry = subprocess.run(
        ["make", "-n", "audit"], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert dry.returncode == 0, dry.stderr
    assert "pip_audit" in dry.stdout or "pip-audit" in dry.stdout
    test_target = subprocess.run(
        ["make", "-n", "test"], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert "audit" not in test_target.stdout
