# Three stages, one file:
#   builder  installs the project (`pip install .`: the dependency list is pyproject.toml's, the
#            same list `make install-service` installs) into /opt/venv, wheels only, then slims
#            it (deploy/docker/slim-venv.sh) and smoke-tests the slimmed venv;
#   trainer  torch 2.13.0 CPU + the training code: trains and exports into a mounted folder
#            (docker build --target trainer -t convscope-trainer .);
#   runtime  (the default, last stage) python:3.11-slim + that venv + models/: no torch, no
#            compilers, no pip, a non-root user.
# Build with BuildKit (Docker 23+ by default; Debian's 20.10: DOCKER_BUILDKIT=1): it builds only
# the stages the target needs, so the runtime image never waits for torch. No `# syntax=` line:
# the daemon's built-in Dockerfile frontend is used, and no frontend image is pulled.
# Behind a TLS-intercepting proxy, hand the proxy's CA bundle to pip as a build secret; it is
# mounted for the pip steps only and never stored in a layer:
#   docker build --secret id=ca-certificates,src=/etc/ssl/certs/ca-certificates.crt ...
# Without a registry (no python:3.11-slim): deploy/docker/local-base.sh makes a Debian-built
# Python 3.11 base; pass it with --build-arg PYTHON_IMAGE=convscope-base:bookworm.
ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------- builder
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    PYTHONDONTWRITEBYTECODE=1
# binutils for `strip` (slim-venv); it stays in this stage: the runtime stage copies the venv only.
RUN apt-get update \
    && apt-get install --yes --no-install-recommends binutils \
    && rm -rf /var/lib/apt/lists/* \
    && python -m venv /opt/venv
WORKDIR /src
# Only what the service's wheel is built from: training/ stays out of the runtime image.
COPY pyproject.toml README.md ./
COPY service/ service/
COPY deploy/docker/slim-venv.sh /usr/local/bin/slim-venv
COPY deploy/docker/smoke.py /usr/local/bin/smoke.py
# --only-binary: a dependency without a wheel fails the build instead of needing a compiler.
RUN --mount=type=secret,id=ca-certificates,target=/etc/ssl/certs/ca-certificates.crt \
    /opt/venv/bin/pip install --only-binary=:all: . \
    && /opt/venv/bin/pip check \
    && slim-venv /opt/venv
# The slimmed venv starts the service and classifies a picture over HTTP: a library broken by
# stripping, or a file removed that was needed after all, fails the build here. The model is
# copied after the install so that a new model does not reinstall the dependencies; the
# runtime stage copies models/ itself.
# The smoke run also writes the byte-code caches of exactly the modules it imports (the server's
# and every native extension's packages): the runtime root is read-only, so without them each
# start compiles them again (1.2 s of a 2.7 s start here); the whole venv's would add 15 MB.
COPY models/ /src/models/
RUN env -u PYTHONDONTWRITEBYTECODE /opt/venv/bin/python /usr/local/bin/smoke.py /src/models

# ---------------------------------------------------------------------------------- trainer
FROM ${PYTHON_IMAGE} AS trainer
# PyPI's Linux torch wheels are CUDA builds that pull gigabytes of NVIDIA libraries; only a
# +cpu build is accepted (a local version label satisfies the `train` extra's torch==2.13.0 pin,
# so the project's install keeps it). TORCH_FROM says where it comes from, as pip options: by
# default PyTorch's CPU index; or a folder of wheels on the host served over loopback (build with
# --network host; torch's own dependencies then come from the package index):
#   python3 -m http.server -b 127.0.0.1 -d /opt/wheels 8765 &
#   docker build --network host --target trainer \
#       --build-arg TORCH_FROM="--find-links http://127.0.0.1:8765/" .
ARG TORCH_FROM="--index-url https://download.pytorch.org/whl/cpu"
ARG TORCH_VERSION=2.13.0
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH
RUN --mount=type=secret,id=ca-certificates,target=/etc/ssl/certs/ca-certificates.crt \
    python -m venv /opt/venv \
    && pip install ${TORCH_FROM} "torch==${TORCH_VERSION}+cpu" \
    && python -c "import torch; assert torch.version.cuda is None, torch.version.cuda"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service/ service/
COPY training/ training/
COPY deploy/docker/train-and-export.sh /usr/local/bin/train-and-export
RUN --mount=type=secret,id=ca-certificates,target=/etc/ssl/certs/ca-certificates.crt \
    pip install --only-binary=:all: ".[train]" \
    && pip check \
    && python -c "import torch, training.train; assert not torch.cuda.is_available()"
RUN groupadd --system --gid 10001 convscope \
    && useradd --system --uid 10001 --gid convscope --no-create-home \
        --shell /usr/sbin/nologin convscope \
    && mkdir -p /work/runs /work/models \
    && chown convscope:convscope /work/runs /work/models
WORKDIR /work
# Mount ./runs (checkpoints + the data-set download cache) and ./models (the exported model);
# compose's `train` service sets the user to the host's uid so the files stay yours.
ENV CONVSCOPE_DATA_CACHE=/work/runs/data-cache \
    MPLCONFIGDIR=/tmp/matplotlib \
    HOME=/tmp
USER 10001:10001
VOLUME ["/work/runs", "/work/models"]
CMD ["train-and-export"]

# ---------------------------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="convscope" \
      org.opencontainers.image.description="CNN image classifier (FastAPI + onnxruntime)"
RUN groupadd --system --gid 10001 convscope \
    && useradd --system --uid 10001 --gid convscope --no-create-home \
        --shell /usr/sbin/nologin convscope
COPY --from=builder /opt/venv /opt/venv
# Code and model belong to root and are read-only for the server's user.
COPY deploy/docker/healthcheck.py /app/healthcheck.py
COPY models/ /app/models/
WORKDIR /app
# Configuration is by environment (service/settings.py reads CONVSCOPE_*); these are the image's
# defaults, and `docker run -e` / compose / Kubernetes override them. ORT_DISABLE_TELEMETRY:
# onnxruntime's Linux telemetry would report to its vendor from the server, and warns at every
# start that it cannot store a device id on the read-only root. Workers: the service's default, one
# per CPU the container may use (its cgroup quota: `docker run --cpus`), each with its share.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CONVSCOPE_HOST=0.0.0.0 \
    CONVSCOPE_PORT=8000 \
    CONVSCOPE_MODEL_DIR=/app/models \
    ORT_DISABLE_TELEMETRY=1
USER 10001:10001
EXPOSE 8000
# python, not curl: the slim image has no curl. Exit 1 while /readyz says 503 (models loading).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "/app/healthcheck.py"]
# Exec form: the server is PID 1 and gets SIGTERM itself, so uvicorn drains in-flight requests.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "service"]
