# make demo  — set up everything on a fresh machine and run the end-to-end demo
# make test  — set up everything and run every test (what .ci/run calls)
# make bench — print the intake throughput and alert-to-mutation latency figures

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test bench worker system-deps venv clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# Real Alertmanager and Prometheus from Debian, used by the demo and the end-to-end tests;
# HAProxy, the TLS-terminating proxy the tests put in front of Temporal (tests/tls.py);
# PostgreSQL, the server the tests start in a temporary directory (tests/postgres.py).
system-deps:
	@if ! command -v prometheus-alertmanager >/dev/null || ! command -v prometheus >/dev/null \
	    || { ! command -v haproxy >/dev/null && [ ! -x /usr/sbin/haproxy ]; } \
	    || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends prometheus-alertmanager prometheus haproxy postgresql; \
	fi
	@# Debian starts the packaged services; the demo and tests run their own on loopback.
	@-$(SUDO) systemctl disable --now prometheus prometheus-alertmanager prometheus-node-exporter haproxy postgresql >/dev/null 2>&1 || true

demo: venv system-deps
	$(BIN)/remediator demo

test: venv system-deps
	$(BIN)/lint-imports
	$(BIN)/pytest -n 2 --dist loadfile

bench: venv
	$(BIN)/python -m tools.bench

worker: venv
	$(BIN)/python worker.py

clean:
	rm -rf .state
