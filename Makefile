# kvmcloud: `make up` runs the all-in-one cloud, `make test` runs the tests.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
export KVMCLOUD_TEST_ENV ?= /var/tmp/kvmcloud-test

.PHONY: deps test-env test test-unit bench lint up down clean

deps:
	bash scripts/install-deps.sh

test-env: deps
	bash scripts/test-env.sh up

test: test-env
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: deps
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

bench: test-env
	mkdir -p bench/results
	$(PY) -m tests.bench.run

lint: deps
	$(VENV)/bin/ruff check agentcore kvmagent storageagent sftpbackup cephagent controller simulator tests
	$(VENV)/bin/mypy agentcore kvmagent storageagent sftpbackup cephagent controller simulator
	$(VENV)/bin/lint-imports --no-cache --no-logo
	shellcheck -x -S warning scripts/*.sh scripts/components/*.sh scripts/lib/*.sh .ci/run

up: deps
	bash scripts/up.sh

down:
	bash scripts/down.sh

clean:
	bash scripts/test-env.sh down
