# The one entry point: the README, the hooks and .ci/run call these targets.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
MODEL_DIR ?= models

.PHONY: install install-service serve train export evaluate test test-fast lint typecheck bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# Service only (what the Docker runtime stage installs): no torch.
install-service: $(PY)
	$(PY) -m pip install -q -e .

# Everything: service, training (torch==2.13.0 CPU) and the test tools.
install: $(PY)
	$(PY) -m pip install -q -e '.[train,dev]'

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
	$(PY) -m pytest -m "not slow and not browser"

bench: install
	$(PY) benchmarks/train_speed.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
