# Two commands do all set-up: `make demo` and `make test` create .venv when it is missing,
# install the project with its pinned dependency set (constraints.txt), then run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test evaluate bench install clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m lightning_nas evaluate --config configs/evaluate/digits.yaml

test: $(STAMP)
	$(PY) -m pytest -q

TASK ?= digits
evaluate: $(STAMP)
	$(PY) -m lightning_nas evaluate --config configs/evaluate/$(TASK).yaml

bench: $(STAMP)
	$(PY) benchmarks/space.py
	$(PY) benchmarks/zc_throughput.py

clean:
	rm -rf $(VENV) runs .pytest_cache
