# Two commands for a new machine (Java 17 must be installed; everything else is installed here):
#   make demo   set up, then index a generated 200k x 128 dataset with local Spark, print recall
#   make test   set up, then run the test suite (real Spark, real Lance datasets)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

export SPARK_LOCAL_IP ?= 127.0.0.1
export PYSPARK_PYTHON := $(abspath $(BIN)/python)
export PYSPARK_DRIVER_PYTHON := $(abspath $(BIN)/python)

.PHONY: setup demo test test-fast lint bench clean

setup: $(STAMP)

# Azurite, Microsoft's Azure Storage emulator, for the Azure tests (from npm; without npm those
# tests are skipped and say so).
AZURITE := .azurite/node_modules/.bin/azurite-blob
$(AZURITE):
	command -v npm >/dev/null && npm install --prefix .azurite --no-audit --no-fund --silent azurite@3.37.0 \
		|| echo "npm is not on this machine: the Azure (Azurite) tests will be skipped"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	$(BIN)/python -m spark_lance_index.jvm_archive || echo "no JVM class archive: local Spark starts as usual"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/spark-lance-index demo --dir demo-data --rows 200000 --dim 128 --fragments 16 --master "local[2]"

test: $(STAMP) $(AZURITE)
	$(BIN)/python -m pytest -q --durations=15 tests

# Every test that needs no JVM, in well under a minute; JAVA_HOME points nowhere, so a test that
# starts Spark without its `jvm` mark fails here (see tests/conftest.py).
test-fast: $(STAMP)
	JAVA_HOME=/nonexistent/no-java-in-the-fast-tier $(BIN)/python -m pytest -q -m "not jvm" --durations=5 tests

lint: $(STAMP)
	$(BIN)/ruff check spark_lance_index jobs tests bench
	$(BIN)/mypy

# The benchmarks at their default (full) sizes, in their own venv (lance-ray, ray, psutil):
# long on a small machine, see bench/README.md. Each appends its figures to docs/benchmarks.md.
BENCH_VENV  := .venv-bench
BENCH_PY    := $(abspath $(BENCH_VENV)/bin/python)
BENCH_STAMP := $(BENCH_VENV)/.installed
FASHION     := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

$(BENCH_STAMP): pyproject.toml
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/pip install --quiet -e ".[bench]"
	$(BENCH_VENV)/bin/python -m spark_lance_index.jvm_archive || echo "no JVM class archive: local Spark starts as usual"
	touch $(BENCH_STAMP)

bench: export PYSPARK_PYTHON := $(BENCH_PY)
bench: export PYSPARK_DRIVER_PYTHON := $(BENCH_PY)
bench: $(BENCH_STAMP)
	test -e $(FASHION) || (apt-get update && apt-get install -y dataset-fashion-mnist)
	$(BENCH_PY) bench/compare.py
	$(BENCH_PY) bench/scale.py
	$(BENCH_PY) bench/fashion_mnist.py

clean:
	rm -rf $(VENV) $(BENCH_VENV) .azurite demo-data demo-data.queries.npy demo-data.report.json *.egg-info
