"""The Dockerfile, read statically (no Docker engine here): stages, user, health check, commands,
what the runtime stage carries, and that its dependency list is pyproject.toml's."""

from __future__ import annotations

import email.parser
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]

BUILD_TOOLS = re.compile(r"\b(torch|torchvision|gcc|g\+\+|clang|build-essential|apt-get|apk)\b")


def pip_installs(stage: Any) -> list[list[str]]:
    """The arguments of every `pip install` in the stage's RUN lines (options removed)."""
    installs = []
    for run in stage.values("RUN"):
        lexer = shlex.shlex(run, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        commands: list[list[str]] = [[]]
        for token in lexer:
            if token in ("&&", "||", ";", "|"):
                commands.append([])
            else:
                commands[-1].append(token)
        for words in commands:
            command = " ".join(words)
            if "pip" not in " ".join(words[:3]) or "install" not in words:
                continue
            args = words[words.index("install") + 1 :]
            kept, skip = [], False
            for word in args:
                if skip:
                    skip = False
                elif word in ("--index-url", "-i", "--extra-index-url"):
                    skip = True  # the option's value is not a requirement
                elif not word.startswith("-"):
                    kept.append(word)
                else:
                    assert word not in ("-r", "--requirement", "-c", "--constraint"), (
                        f"a second dependency list in {command!r}"
                    )
            installs.append(kept)
    return installs


def strip_run_flags(run: str) -> str:
    """A RUN line's command without its leading --mount=... flags."""
    words = run.split(None, 1)
    while words and words[0].startswith("--"):
        words = words[1].split(None, 1) if len(words) > 1 else []
    return " ".join(words)


def test_builds_with_the_daemons_own_frontend_and_the_ca_bundle_as_a_secret(
    stages: dict[str, Any],
) -> None:
    """No `# syntax=` line: BuildKit would pull that frontend image from a registry before the
    first step. Every step that reaches the package index mounts the CA bundle as a secret (for
    a TLS-intercepting proxy), over the base's own bundle that pip is told to use, so the build
    works with or without it and the bundle never lands in a layer."""
    text = (ROOT / "Dockerfile").read_text()
    assert not re.search(r"^#\s*syntax\s*=", text, re.M | re.I)
    mount = "--mount=type=secret,id=ca-certificates,target=/etc/ssl/certs/ca-certificates.crt"
    for name in ("builder", "trainer"):
        stage = stages[name]
        assert stage.env()["PIP_CERT"] == "/etc/ssl/certs/ca-certificates.crt"
        for run in stage.values("RUN"):
            if "pip install" in run:
                assert run.startswith(mount), run
    assert "--mount" not in " ".join(stages["runtime"].values("RUN"))
    assert "ca-certificates" not in " ".join(v for _, v in stages["runtime"].instructions)


def test_stages_share_one_base_and_runtime_is_the_default_target(stages: dict[str, Any]) -> None:
    assert list(stages) == ["builder", "trainer", "runtime"]  # the last stage is the default
    assert {s.base for s in stages.values()} == {"python:3.11-slim"}


def test_runtime_runs_as_a_non_root_user(stages: dict[str, Any]) -> None:
    user = stages["runtime"].values("USER")[-1]
    uid = user.split(":")[0]
    assert uid not in ("root", "0"), user
    assert uid.isdigit(), "numeric uid: Kubernetes' runAsNonRoot can verify only a number"
    assert stages["trainer"].values("USER")[-1].split(":")[0] not in ("root", "0")


def test_runtime_healthcheck_runs_the_readyz_probe_with_python(stages: dict[str, Any]) -> None:
    runtime = stages["runtime"]
    (healthcheck,) = runtime.values("HEALTHCHECK")
    command = re.search(r"\bCMD\s+(\[.*\])", healthcheck)
    assert command, f"HEALTHCHECK {healthcheck} is not exec form"
    assert shlex.split(command.group(1).replace(",", " ").strip("[]")) == [
        "python",
        "/app/healthcheck.py",
    ]
    assert (None, ["deploy/docker/healthcheck.py"], "/app/healthcheck.py") in runtime.copies()
    assert "/readyz" in (ROOT / "deploy/docker/healthcheck.py").read_text()


def test_commands_are_exec_form_and_configuration_is_environment(
    stages: dict[str, Any],
) -> None:
    runtime = stages["runtime"]
    assert runtime.exec_form("CMD") == ["python", "-m", "service"]
    assert not runtime.values("ENTRYPOINT")
    env = runtime.env()
    assert env["CONVSCOPE_HOST"] == "0.0.0.0"
    assert env["CONVSCOPE_PORT"] in runtime.values("EXPOSE")
    assert env["CONVSCOPE_MODEL_DIR"] == "/app/models"
    assert (None, ["models/"], "/app/models/") in runtime.copies()
    assert stages["trainer"].exec_form("CMD") == ["train-and-export"]
    assert (
        None,
        ["deploy/docker/train-and-export.sh"],
        "/usr/local/bin/train-and-export",
    ) in stages["trainer"].copies()


def test_runtime_stage_has_no_torch_compilers_or_installers(stages: dict[str, Any]) -> None:
    runtime = stages["runtime"]
    for instruction, value in runtime.instructions:
        if instruction != "LABEL":
            assert not BUILD_TOOLS.search(value), f"{instruction} {value}"
    for run in runtime.values("RUN"):
        assert not re.search(r"\bpip\b|install\b", run.replace("--no-create-home", "")), run
    # Everything installed comes from the builder's venv, and nothing else from other stages.
    from_stages = [c for c in runtime.copies() if c[0]]
    assert from_stages == [("builder", ["/opt/venv"], "/opt/venv")]
    assert not re.search(r"\b(binutils|strip|slim-venv)\b", " ".join(runtime.values("RUN")))
    # The builder compiles nothing either: wheels only; its one system package is binutils,
    # for slim-venv.sh's `strip`.
    builder = " ".join(stages["builder"].values("RUN"))
    assert "--only-binary=:all:" in builder
    assert not BUILD_TOOLS.search(builder.replace("apt-get", ""))
    apt = re.findall(r"apt-get install ([^&]*)", builder)
    assert [a.split() for a in apt] == [["--yes", "--no-install-recommends", "binutils"]]


def test_builder_slims_the_venv_then_smoke_tests_it(stages: dict[str, Any]) -> None:
    """pip install -> pip check -> slim-venv -> smoke.py on the model, so a library broken by
    stripping fails the build (tests/deploy/test_docker_scripts.py runs both scripts)."""
    builder = stages["builder"]
    copies = builder.copies()
    assert (None, ["deploy/docker/slim-venv.sh"], "/usr/local/bin/slim-venv") in copies
    assert (None, ["deploy/docker/smoke.py"], "/usr/local/bin/smoke.py") in copies
    runs = [strip_run_flags(run) for run in builder.values("RUN")]
    steps = [step.strip() for run in runs for step in run.split("&&")]
    # The smoke run writes byte-code caches (the builder's ENV forbids them elsewhere).
    steps = [s.removeprefix("env -u PYTHONDONTWRITEBYTECODE ") for s in steps]
    assert "env -u PYTHONDONTWRITEBYTECODE /opt/venv/bin/python /usr/local/bin/smoke.py" in (
        " ".join(runs)
    )
    steps = steps[[s.split()[:2] for s in steps].index(["/opt/venv/bin/pip", "install"]) :]
    assert [s.split()[:2] for s in steps] == [
        ["/opt/venv/bin/pip", "install"],
        ["/opt/venv/bin/pip", "check"],
        ["slim-venv", "/opt/venv"],
        ["/opt/venv/bin/python", "/usr/local/bin/smoke.py"],
    ]
    (models,) = [dest for _, sources, dest in copies if sources == ["models/"]]
    assert steps[-1].split()[2] == models.rstrip("/")
    # The model arrives after the install: a new model does not invalidate that layer.
    order = [i for i, v in builder.instructions if i in ("RUN", "COPY")]
    values = [v for i, v in builder.instructions if i in ("RUN", "COPY")]
    install = next(n for n, v in enumerate(values) if "pip install" in v)
    model_copy = next(n for n, v in enumerate(values) if v.startswith("models/"))
    assert order[model_copy] == "COPY" and install < model_copy


def test_builder_installs_the_project_exactly_like_make_install_service(
    stages: dict[str, Any], pyproject: dict[str, Any]
) -> None:
    assert pip_installs(stages["builder"]) == [["."]]
    # The README's service install is `make serve` -> `install-service`: the same project, so
    # the same dependency list (pyproject.toml's), editable there and a wheel here.
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^install-service:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert recipe, "Makefile has no install-service target"
    pip_lines = [line for line in recipe.group(1).splitlines() if "pip install" in line]
    assert len(pip_lines) == 1
    words = shlex.split(pip_lines[0].split("pip install", 1)[1])
    assert [w for w in words if not w.startswith("-")] == ["."]
    assert "make serve" in (ROOT / "README.md").read_text()
    assert "dependencies" not in pyproject["project"].get("dynamic", [])


def test_trainer_installs_cpu_torch_at_the_train_extras_pin(
    stages: dict[str, Any], pyproject: dict[str, Any]
) -> None:
    trainer = stages["trainer"]
    pins = [Requirement(r) for r in pyproject["project"]["optional-dependencies"]["train"]]
    (torch_pin,) = [r for r in pins if r.name == "torch"]
    args = dict(v.split("=", 1) for v in trainer.values("ARG") if "=" in v)
    assert str(torch_pin.specifier) == f"=={args['TORCH_VERSION']}"
    # Where torch comes from is pip options in a build argument; PyTorch's CPU index by default.
    assert args["TORCH_FROM"].strip('"').split() == [
        "--index-url",
        "https://download.pytorch.org/whl/cpu",
    ]
    installs = pip_installs(trainer)
    assert installs == [["${TORCH_FROM}", "torch==${TORCH_VERSION}+cpu"], [".[train]"]]
    # Wherever it comes from, only a +cpu build is accepted, and the step checks it is one.
    (torch_run,) = [r for r in trainer.values("RUN") if "torch==" in r]
    assert "assert torch.version.cuda is None" in torch_run
    # The +cpu build satisfies the extra's pin, so installing the project keeps it.
    assert torch_pin.specifier.contains(f"{args['TORCH_VERSION']}+cpu")
    assert "torchvision" not in (ROOT / "Dockerfile").read_text()


def test_dockerignore_sends_what_is_copied_and_keeps_the_rest_out(
    stages: dict[str, Any], in_context: Callable[[str], bool]
) -> None:
    for stage in stages.values():
        for frm, sources, _ in stage.copies():
            if frm:
                continue
            for source in sources:
                path = ROOT / source
                assert path.exists(), source
                files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
                kept = [f for f in files if in_context(str(f.relative_to(ROOT)))]
                assert kept, f"COPY {source}: .dockerignore leaves nothing of it in the context"
    for left_out in (
        ".venv/bin/python",
        ".git/HEAD",
        "runs/fashion-mnist/best.pt",
        "tests/deploy/test_dockerfile.py",
        "service/__pycache__/app.cpython-311.pyc",
        "docker-compose.yml",
        "deploy/kubernetes/base/deployment.yaml",
    ):
        assert not in_context(left_out), left_out
    assert in_context("service/static/index.html")


def test_builder_context_builds_a_wheel_of_service_with_pyprojects_dependencies(
    stages: dict[str, Any],
    in_context: Callable[[str], bool],
    pyproject: dict[str, Any],
    tmp_path: Path,
) -> None:
    """Build the wheel from exactly what the builder stage copies (after .dockerignore): its
    Requires-Dist is what `pip install .` installs in the image."""
    context = tmp_path / "src"
    for frm, sources, dest in stages["builder"].copies():
        if frm or not dest.startswith(("./", "service")):
            continue  # the slimming script goes elsewhere and is not part of the wheel
        for source in sources:
            path = ROOT / source
            files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
            for f in files:
                rel = f.relative_to(ROOT)
                if in_context(str(rel)):
                    (context / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(f, context / rel)
    out = tmp_path / "wheel"
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    # No index and no build isolation: nothing is downloaded; the venv's setuptools builds it.
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    result = subprocess.run(
        [*pip_wheel, "--wheel-dir", str(out), str(context)],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = out.glob("convscope-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        (metadata_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = email.parser.Parser().parsestr(zf.read(metadata_name).decode())
    base = [Requirement(r) for r in metadata.get_all("Requires-Dist", [])]
    base = [r for r in base if not (r.marker and "extra" in str(r.marker))]
    expected = [Requirement(r) for r in pyproject["project"]["dependencies"]]
    assert sorted(map(str, base)) == sorted(map(str, expected))
    assert not [r for r in base if r.name in ("torch", "torchvision", "onnx")]
    packages = {n.split("/")[0] for n in names if not n.startswith("convscope-")}
    assert packages == {"service"}, "the runtime image carries the service's code only"
    assert "service/static/index.html" in names
