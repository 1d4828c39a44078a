"""Fixtures that read the deployment files: Dockerfile stages, .dockerignore, pyproject.toml.

(Fixtures rather than imports: pytest runs with --import-mode=importlib, so test modules cannot
import this file.)"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def values(self, instruction: str) -> list[str]:
        return [v for i, v in self.instructions if i == instruction]

    def env(self) -> dict[str, str]:
        pairs = [p for v in self.values("ENV") for p in shlex.split(v)]
        return dict(p.split("=", 1) for p in pairs)

    def exec_form(self, instruction: str) -> list[str]:
        """The last CMD/ENTRYPOINT as a JSON list; fails for the shell form."""
        value = self.values(instruction)[-1]
        parsed = json.loads(value)
        assert isinstance(parsed, list), f"{instruction} {value} is not exec form"
        return parsed

    def copies(self) -> list[tuple[str | None, list[str], str]]:
        """(--from stage or None, sources, destination) for each COPY."""
        out = []
        for value in self.values("COPY"):
            words = shlex.split(value)
            flags = {w.split("=", 1)[0]: w.split("=", 1)[-1] for w in words if w.startswith("--")}
            paths = [w for w in words if not w.startswith("--")]
            out.append((flags.get("--from"), paths[:-1], paths[-1]))
        return out


def parse_stages(path: Path = ROOT / "Dockerfile") -> list[Stage]:
    parser = DockerfileParser(path=str(path))
    bases = iter(parser.parent_images)  # FROM lines with the ARG defaults substituted
    stages: list[Stage] = []
    for item in parser.structure:
        instruction, value = item["instruction"], item["value"]
        if instruction == "FROM":
            words = value.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(name=name, base=next(bases)))
        elif instruction != "COMMENT" and stages:
            stages[-1].instructions.append((instruction, value))
    return stages


@pytest.fixture(scope="session")
def stages() -> dict[str, Stage]:
    """The Dockerfile's stages by name, in file order."""
    return {s.name: s for s in parse_stages()}


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Docker's .dockerignore pattern syntax (Go filepath.Match plus `**`) as a regex."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out)


def dockerignore_rules(path: Path = ROOT / ".dockerignore") -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").strip().strip("/")
        rules.append((negate, _pattern_regex(pattern)))
    return rules


def in_build_context(relpath: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = relpath.strip("/").split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    included = True
    for negate, regex in rules:
        if any(regex.fullmatch(p) for p in prefixes):
            included = negate
    return included


@pytest.fixture(scope="session")
def in_context() -> Callable[[str], bool]:
    """Whether a repository path is in the Docker build context (.dockerignore applied)."""
    rules = dockerignore_rules()
    return lambda relpath: in_build_context(relpath, rules)


@pytest.fixture(scope="session")
def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="session")
def load_yaml() -> Callable[[Path], list[dict[str, Any]]]:
    """Every non-empty YAML document of a file."""
    return lambda path: [d for d in yaml.safe_load_all(path.read_text()) if d]
