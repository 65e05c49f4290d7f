# Two commands for a fresh machine: `make demo` and `make test`. Both create .venv if missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.edgeslim-installed
# torch first (CPU wheel), or pip resolves a multi-GB CUDA build for transformers' sake.
TORCH ?= torch==2.13.0

.PHONY: install demo test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[full,minilm,dev]'
	touch $(STAMP)

# edgeslim is installed editable: byte-compile it here, since a PYTHONDONTWRITEBYTECODE
# environment would otherwise recompile every module at each start (fast when up to date).
install: $(STAMP)
	$(BIN)/python -m compileall -q edgeslim

demo: install
	$(BIN)/edgeslim doctor
	$(BIN)/edgeslim run recipes/minilm-int8.yaml
	@# the summary is printed even when the gate fails (exit 6); make then exits with run's status
	@$(BIN)/edgeslim run recipes/sst2-student-int8.yaml; status=$$?; \
	echo "embeddings: artifact out/minilm-int8, inspect report out/minilm-int8/inspect.md, report out/minilm-int8/report.html"; \
	echo "SST-2 student: artifact out/sst2-student-int8, report out/sst2-student-int8/report.html"; \
	echo; $(BIN)/edgeslim summary out/sst2-student-int8; exit $$status

lint: install
	$(BIN)/ruff check edgeslim tests tools
	$(BIN)/mypy edgeslim

test: lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf out .pytest_cache .mypy_cache .ruff_cache
	find edgeslim -name __pycache__ -type d -exec rm -rf {} +
