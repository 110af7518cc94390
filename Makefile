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

.PHONY: setup demo test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/spark-lance-index demo --dir demo-data --rows 200000 --dim 128 --fragments 16 --master "local[2]"

test: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider -q tests

clean:
	rm -rf $(VENV) demo-data *.egg-info
