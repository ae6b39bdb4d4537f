# The README's two commands: `make main` and `make test`. Each sets up .venv first (idempotent).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU default. GPU users: make setup TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH_SPEC ?= torch==2.13.0
# DeepSpeed compiles its ops on first use (JIT); building them at install time needs CUDA.
export DS_BUILD_OPS := 0
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup main test clean
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "make: $(PYTHON) is Python $$($(PYTHON) -c 'import platform; print(platform.python_version())'); the pins need 3.11+: make PYTHON=python3.11 $(MAKECMDGOALS)"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

# The offline default: build (or reuse) the toy model, run the smoke sweep (70 tracked trials, 5 seeds)
# into the embedded MLflow store ./mlflow.db, then write its report. --fresh: a rerun starts a new
# sweep (stages cached). The report runs after a partly failed sweep too (exit 1: it lists what is
# missing), not after a sweep that never started (exit 2); make then exits with the sweep's status.
main: setup
	$(BIN)/editdecay prepare configs/toy.yaml
	status=0; $(BIN)/editdecay sweep sweeps/smoke.yaml --fresh || status=$$?; \
	if [ $$status -le 1 ]; then $(BIN)/editdecay report --sweep sweep-results/smoke --out sweep-results/smoke/report || exit $$?; fi; \
	exit $$status

test: setup
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .cache .pytest_cache sweep-results mlflow.db mlruns
