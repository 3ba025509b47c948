# The two commands: `make run` and `make test`. Both set up what they need on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck pytest system-packages bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/callserver demo

# Debian's chromium for the browser tests (never a downloaded browser), sox for audio files,
# PostgreSQL, Redis (redis-server), and coturn for the tests of the larger installs.
system-packages:
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v sox >/dev/null || missing="$$missing sox"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v turnserver >/dev/null || missing="$$missing coturn"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check callserver tests benchmarks
	$(BIN)/ruff format --check callserver tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

# Two workers, a test file each at a time (`--dist loadfile`: a file's module fixtures, such as its
# network namespace or TURN server, stay on one worker): most tests wait on browsers, timers and
# child processes, so on the 2-core CI machine this takes ≈ 13 minutes instead of ≈ 20.
# Bytecode is cached even where the environment says not to (PYTHONDONTWRITEBYTECODE, as on this
# machine): each node, command and media worker a test starts would otherwise compile the package
# again, ≈ 0.6 s of CPU apiece.
pytest: $(STAMP) system-packages
	PYTHONDONTWRITEBYTECODE= $(BIN)/pytest -q -n 2 --dist loadfile

test: lint typecheck pytest

# The call-bridge benchmark (real server and load generator processes; figures in the README).
# Other modes: make bench BENCH_ARGS="--mode workers" (or delay, rss; add --quick for a smoke run).
BENCH_ARGS ?=
bench: $(STAMP)
	$(BIN)/python -m benchmarks.bridge $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
