# Everything the project needs is installed here from a bare Python 3.11 and make.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python

.PHONY: test demo lint typecheck unit bench bench-quick stress clean interop interop-deps

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Stamps record which extras are installed, so a change of pyproject.toml re-installs.
$(VENV)/.installed-dev: pyproject.toml | $(BIN)/activate
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

$(VENV)/.installed-bench: pyproject.toml $(VENV)/.installed-dev
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $@

$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(PY) -m pip install --quiet -e .
	touch $@

test: $(VENV)/.installed-dev
	$(BIN)/ruff check journalstore tests $(wildcard benchmarks)
	$(BIN)/mypy --strict journalstore
	$(BIN)/pytest -q

demo: $(VENV)/.installed
	$(BIN)/journalstore demo

# The real containers/storage 1.43 and podman, for tests/interop (Debian bookworm packages; keep in
# step with PACKAGES in tests/interop/harness.py). Installs only as root and only what is missing.
INTEROP_PACKAGES := containers-storage golang-go golang-github-containers-storage-dev \
	golang-github-ulikunitz-xz-dev podman

interop-deps:
	@missing=$$(for p in $(INTEROP_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -z "$$missing" ]; then echo "interop packages: all installed"; \
	elif [ "$$(id -u)" != 0 ]; then echo "interop packages missing (not root, not installing):" $$missing; \
	else apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; fi

interop: $(VENV)/.installed-dev
	$(BIN)/pytest -q tests/interop

bench: $(VENV)/.installed-bench
	$(PY) -m benchmarks

bench-quick: $(VENV)/.installed-bench
	$(PY) -m benchmarks --quick

stress: $(VENV)/.installed-dev
	JOURNALSTORE_STRESS=1 $(BIN)/pytest -q tests/reliability tests/interop

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
