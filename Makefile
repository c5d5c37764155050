# virtfleet: `make demo` and `make test` each install what is missing (as root on Debian),
# then run. Everything lands in .venv; the CLI is .venv/bin/virtfleet.
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed

.PHONY: all deps system-deps services images demo test lint typecheck unit integration bench bench-placement bench-clone bench-migrate bench-ha openapi clean

all: test

# apt packages (only those missing), then a check that every program in scripts/programs.txt is
# there. Every time, not once per venv: a machine can lose a package after the venv was made.
# Quick when nothing is missing.
system-deps:
	bash scripts/install-deps.sh

# The venv with virtfleet installed editable (after the apt packages, without being remade by them).
$(STAMP): pyproject.toml | system-deps
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# Bytecode for virtfleet's own modules too (pip compiles only what it installs, not the editable
# source): where PYTHONDONTWRITEBYTECODE is set, every command would otherwise compile them again.
deps: system-deps $(STAMP)
	$(PY) -m compileall -q src

# libvirtd/virtlogd on this machine and a private PostgreSQL for the store tests; no systemd here.
services: deps
	bash scripts/start-services.sh

lint: deps
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy --strict bench

# The template tests' Debian image (debootstrap, once, cached like the apt packages).
images: deps
	bash scripts/build-test-image.sh

# The integration tests on the lab and the unit tests (over pytest-xdist workers) side by side.
test: services lint images
	bash scripts/run-tests.sh

unit: deps
	$(VENV)/bin/pytest -q -n 2 tests/unit

demo: services
	bash scripts/demo.sh

bench: services
	$(PY) bench/fleet_query.py

bench-placement: deps
	$(PY) bench/placement.py

bench-clone: services
	$(PY) bench/clone.py

bench-migrate: services
	$(PY) bench/migrate.py

bench-ha: services
	$(PY) bench/ha.py

clean:
	-$(VENV)/bin/virtfleet lab down
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# The API's OpenAPI document kept in the repository (tests/unit/test_api_openapi.py checks it).
openapi: deps
	$(PY) -m virtfleet.controller.openapi > docs/openapi.json
