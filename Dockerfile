# syntax=docker/dockerfile:1
# Three stages, one file:
#   builder  installs the project (`pip install .`: the dependency list is pyproject.toml's, the
#            same list `make install-service` installs) into /opt/venv, wheels only, then slims
#            it (deploy/docker/slim-venv.sh) and smoke-tests the slimmed venv;
#   trainer  torch 2.13.0 CPU + the training code: trains and exports into a mounted folder
#            (docker build --target trainer -t convscope-trainer .);
#   runtime  (the default, last stage) python:3.11-slim + that venv + models/: no torch, no
#            compilers, no pip, a non-root user.
ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------- builder
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
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
RUN /opt/venv/bin/pip install --only-binary=:all: . \
    && /opt/venv/bin/pip check \
    && slim-venv /opt/venv
# The slimmed venv starts the service and classifies a picture over HTTP: a library broken by
# stripping, or a file removed that was needed after all, fails the build here. The model is
# copied after the install so that a new model does not reinstall the dependencies; the
# runtime stage copies models/ itself.
COPY models/ /src/models/
RUN /opt/venv/bin/python /usr/local/bin/smoke.py /src/models

# ---------------------------------------------------------------------------------- trainer
FROM ${PYTHON_IMAGE} AS trainer
# PyPI's Linux torch wheels are CUDA builds that pull gigabytes of NVIDIA libraries; PyTorch's
# CPU index serves the same release as 2.13.0+cpu, which satisfies the `train` extra's
# torch==2.13.0 pin (a local version label matches ==), so the next step keeps it.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.13.0
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv \
    && pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}+cpu"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service/ service/
COPY training/ training/
COPY deploy/docker/train-and-export.sh /usr/local/bin/train-and-export
RUN pip install --only-binary=:all: ".[train]" \
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
# defaults, and `docker run -e` / compose / Kubernetes override them.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CONVSCOPE_HOST=0.0.0.0 \
    CONVSCOPE_PORT=8000 \
    CONVSCOPE_MODEL_DIR=/app/models
USER 10001:10001
EXPOSE 8000
# python, not curl: the slim image has no curl. Exit 1 while /readyz says 503 (models loading).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "/app/healthcheck.py"]
# Exec form: the server is PID 1 and gets SIGTERM itself, so uvicorn drains in-flight requests.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "service"]
