# milvus-audit: `make demo` runs the quickstart on embedded Milvus Lite; `make test` runs everything.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
VENV26 := .venv-pymilvus26
VENVFW := .venv-frameworks

.PHONY: demo test lint typecheck unit catalog26 frameworks bench clean redis-server chromium

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.demo: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[lite]"
	touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[dev,siem,redis,report]"
	# The real Milvus 2.3.5 standalone server, for the authentication tests. Its
	# [client] extra pins an old pymilvus, hence --no-deps.
	$(BIN)/pip install -q --no-deps "milvus==2.3.5"
	touch $@

$(VENV26)/.dev: pyproject.toml
	$(PYTHON) -m venv $(VENV26)
	$(VENV26)/bin/pip install -q --upgrade pip
	$(VENV26)/bin/pip install -q -e ".[dev]" "pymilvus>=2.6,<2.7"
	touch $@

# LangChain and LlamaIndex need pymilvus < 3; langchain-milvus 0.3.3 fails on pymilvus >= 2.6.10
# ("should create connection first"), LlamaIndex needs >= 2.6.7.
$(VENVFW)/.dev: pyproject.toml
	$(PYTHON) -m venv $(VENVFW)
	$(VENVFW)/bin/pip install -q --upgrade pip
	$(VENVFW)/bin/pip install -q -e ".[dev,frameworks]" "pymilvus==2.6.7"
	touch $@

demo: $(VENV)/.demo
	$(BIN)/python examples/quickstart.py

lint: $(VENV)/.dev
	$(BIN)/ruff check src tests examples benchmarks

typecheck: $(VENV)/.dev
	$(BIN)/mypy

unit: $(VENV)/.dev redis-server chromium
	scripts/in-netns $(BIN)/pytest -q -p no:cacheprovider --ignore=tests/test_frameworks.py

catalog26: $(VENV26)/.dev
	$(VENV26)/bin/pytest -q -p no:cacheprovider -m catalog tests/test_catalog.py tests/test_instrumentor.py

frameworks: $(VENVFW)/.dev
	scripts/in-netns $(VENVFW)/bin/pytest -q -p no:cacheprovider tests/test_frameworks.py

test: lint typecheck unit catalog26 frameworks

# The fleet tests (tests/test_fleet.py) and the with_shared_state benchmark start a real Redis:
# Debian's redis-server, installed here when missing (as root; apt-get update first if needed).
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" != "0" ]; then echo "redis-server is missing: run 'make redis-server' as root" >&2; exit 1; fi; \
	  apt-get install -y -q redis-server >/dev/null 2>&1 || { apt-get update -q && apt-get install -y -q redis-server; }; \
	  command -v redis-server >/dev/null 2>&1 || { echo "could not install redis-server" >&2; exit 1; }; }

# The report's browser test (tests/test_report.py) opens the HTML report in headless Chromium:
# Debian's chromium, installed here when missing (as root; apt-get update first if needed).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" != "0" ]; then echo "chromium is missing: run 'make chromium' as root" >&2; exit 1; fi; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }; \
	  command -v chromium >/dev/null 2>&1 || { echo "could not install chromium" >&2; exit 1; }; }

bench: $(VENV)/.dev redis-server
	$(BIN)/pip install -q -e ".[bench]"
	scripts/in-netns $(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) $(VENV26) $(VENVFW) .mypy_cache .ruff_cache .pytest_cache
