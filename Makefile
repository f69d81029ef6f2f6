# The two commands of the README: `make run` (set up, then run the default sweep)
# and `make test` (set up, then run the whole test suite); `make validate` reruns the checks
# against exact answers of docs/validation.md. All create .venv on
# first use with nothing but Python >= 3.11 and pip.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CORES  ?= 2
# pytest workers of `make test`: one more than CORES. Some tests mostly wait: the SLURM test polls
# the scheduler (the executor plugin checks job status every ~10 s: ~370 s wall for ~140 s of
# CPU) and the workflow tests wait on their snakemake jobs, so with CORES workers a core sits
# idle meanwhile. Measured on the 2-core CI machine (whole suite): ~1400 s wall with -n 2,
# ~1270 s with -n 3, before tests/conftest.py set XLA for fast compilation (since: 678 s with
# -n 3 in a fresh clone on the 2-core development machine). CORES stays what snakemake gets.
TEST_WORKERS ?= $(shell expr $(CORES) + 1)

.PHONY: setup run test bench validate clean-venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/snakemake --cores $(CORES)

test: $(STAMP)
	OPENBLAS_NUM_THREADS=1 JAX_PLATFORMS=$${JAX_PLATFORMS:-cpu} $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder -rs --durations=20 -m "not known_failure" $(PYTEST_ARGS)

bench: $(STAMP)
	mkdir -p benchmarks/results
	$(BIN)/python benchmarks/bench_engine.py --out benchmarks/results/engine_$$($(BIN)/python -c "import jax; print(jax.default_backend())")

# The validation sweeps of docs/validation.md against exact answers (lambda = 0 band solver,
# two-electron exact diagonalisation); rewrites that page's generated tables. PARTS= to pick.
validate: $(STAMP)
	OPENBLAS_NUM_THREADS=1 JAX_PLATFORMS=$${JAX_PLATFORMS:-cpu} $(BIN)/python scripts/validate.py --cores $(CORES) $(if $(PARTS),--parts $(PARTS),)

clean-venv:
	rm -rf $(VENV)
