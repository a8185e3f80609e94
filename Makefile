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

# The whole chain at demo size (zc → … → evaluate on digits) in runs/demo, then runs/demo/REPORT.md;
# rerunning skips finished stages and reuses the report's cached studies.
demo: $(STAMP)
	$(PY) -m lightning_nas pipeline --config configs/pipeline/tiny.yaml
	$(PY) -m lightning_nas report runs/demo --table1_samples 8 --table2_iterations 50 --compare_epochs 5

# TEST_WORKERS pytest-xdist processes, one test file each at a time (a file's fixtures are built once);
# the 20 slowest tests are listed at the end.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=20

# make evaluate TASK=<digits|cifar10|cifar100|imagenet|spherical|darcy_flow|psicov|cosmic|ninapro|ecg|satellite|deepsea>
#               [ARCH=path/to/arch.json] [RECIPE=fast|zennas_cifar|zennas_imagenet] [RESUME=1: from the last checkpoint]
TASK ?= digits
evaluate: $(STAMP)
	@test -f configs/evaluate/$(TASK).yaml || { echo "TASK=$(TASK): no configs/evaluate/$(TASK).yaml; tasks: $$(ls configs/evaluate | sed 's/.yaml//' | tr '\n' ' ')"; exit 2; }
	$(PY) -m lightning_nas evaluate --config configs/evaluate/$(TASK).yaml \
	  $(if $(RECIPE),--config configs/recipes/$(RECIPE).yaml) $(if $(ARCH),--model.init_args.arch $(ARCH)) \
	  $(if $(RESUME),--ckpt_path last)

bench: $(STAMP)
	$(PY) benchmarks/space.py
	$(PY) benchmarks/zc_throughput.py

clean:
	rm -rf $(VENV) runs .pytest_cache
