# The one entry point: the README, the hooks and .ci/run call these targets.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
MODEL_DIR ?= models

.PHONY: install install-service serve train export evaluate test test-fast test-docker docker-base docker-build lint typecheck bench bench-load bench-own-models audit soak clean grpc-stubs

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# Service only (what the Docker runtime stage installs): no torch.
install-service: $(PY)
	$(PY) -m pip install -q -e .

# Everything: service, gRPC, training (torch==2.13.0 CPU) and the test tools.
install: $(PY)
	$(PY) -m pip install -q -e '.[train,grpc,dev]'

serve: install-service
	$(PY) -m service --host $(HOST) --port $(PORT) --model-dir $(MODEL_DIR)

train: install
	$(PY) -m training train --out-dir runs/fashion-mnist

export: install
	$(PY) -m training export runs/fashion-mnist/best.pt --out models/fashion-mnist/model.onnx

evaluate: install
	$(PY) -m training evaluate models/fashion-mnist/model.onnx

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy service

test: install lint
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not slow and not browser and not docker"

# The images built and run on the Docker engine (tests/deploy/engine; dockerd must be running:
# .ci/run starts one). They skip, saying why, where no engine answers.
test-docker: install
	$(PY) -m pytest -m docker tests/deploy

# Where python:3.11-slim cannot be pulled: a Python 3.11 base from Debian's packages.
DOCKER_BASE ?= convscope-base:bookworm
docker-base:
	sh deploy/docker/local-base.sh $(DOCKER_BASE)

# The runtime image (BuildKit: only the stages it needs); PYTHON_IMAGE=$(DOCKER_BASE) after
# `make docker-base`. The host's CA bundle goes to pip as a build secret, never into a layer.
PYTHON_IMAGE ?= python:3.11-slim
DOCKER ?= docker
HOST_CA := $(wildcard /etc/ssl/certs/ca-certificates.crt)
CA_SECRET = --secret id=ca-certificates,src=$(HOST_CA)
docker-build:
	DOCKER_BUILDKIT=1 $(DOCKER) build --network host $(if $(HOST_CA),$(CA_SECRET)) \
		--build-arg PYTHON_IMAGE=$(PYTHON_IMAGE) -t convscope .

bench: install
	$(PY) benchmarks/train_speed.py

# Models from elsewhere (exported or adopted) against onnxruntime on their original files,
# side by side in one process (~3 min).
bench-own-models: install
	$(PY) benchmarks/own_model_speed.py

# Service throughput, latency, memory and cold start against a plain FastAPI app (~7 min; needs
# wrk, Debian package `wrk`); results and method in benchmarks/README.md.
bench-load: install
	$(PY) benchmarks/load.py

# Known vulnerabilities in the installed packages (pip-audit against the PyPI advisory database).
# Not part of `make test` or CI's verdict: the database must be online. A mirror or proxy that
# answers but has no advisories would make pip-audit report "no known vulnerabilities" while
# checking nothing, so first a release with known advisories must come back with them; if not,
# this says the audit was SKIPPED and exits 0. Online, any finding (or unchecked package) fails.
AUDIT_PROBE ?= https://pypi.org/pypi/pillow/10.0.0/json
audit:
	@$(PY) -m pip_audit --version >/dev/null 2>&1 || { \
		echo "audit: pip-audit is not installed (make install adds it with the dev extra)"; exit 1; }
	@if $(PY) -c "import json, sys, urllib.request as u; \
		sys.exit(not json.load(u.urlopen(sys.argv[1], timeout=10)).get('vulnerabilities'))" \
		"$(AUDIT_PROBE)" >/dev/null 2>&1; then \
		$(PY) -m pip_audit --strict --progress-spinner off --skip-editable; \
	else \
		echo "audit: SKIPPED - the vulnerability database is unreachable from here (no advisories"; \
		echo "audit: came back for $(AUDIT_PROBE)); nothing was checked."; \
		echo "audit: run 'make audit' where pypi.org can be reached."; \
	fi

# The long hardening runs (the tests run them for seconds): 60 s of mixed load at concurrency 64,
# then 200 slow clients for 30 s.
soak: install
	$(PY) benchmarks/soak.py --seconds 60 --concurrency 64
	$(PY) benchmarks/slowloris.py --seconds 30 --connections 200

# The gRPC messages from service/grpc/open_inference_grpc.proto (grpcio-tools, in the dev
# extra), committed: building the package needs no protoc. The messages go into a private
# descriptor pool (service/grpc/__init__.py says why). tests/service/test_grpc_stubs.py runs this
# into a scratch folder and fails when the committed files differ.
GRPC_OUT ?= service/grpc
grpc-stubs:
	$(PY) -m grpc_tools.protoc -Iservice/grpc --python_out=$(GRPC_OUT) --pyi_out=$(GRPC_OUT) \
		service/grpc/open_inference_grpc.proto
	sed -i 's/_descriptor_pool.Default()/_descriptor_pool.DescriptorPool()/' \
		$(GRPC_OUT)/open_inference_grpc_pb2.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
