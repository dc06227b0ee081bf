# The two commands of the README: `make run` and `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench bench-deps lint format system-deps test-deps clean lock audit

# What runs in production comes from requirements.lock (every package, transitive ones
# included, pinned with its hashes: `make lock` writes it from requirements.txt); the
# tools only the tests use come from requirements-dev.txt.
$(STAMP): requirements.lock requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

lock: $(STAMP)
	$(BIN)/uv pip compile requirements.txt --generate-hashes --python-version 3.11 \
	  --python-platform x86_64-unknown-linux-gnu -o requirements.lock

# Known vulnerabilities in the locked packages (OSV's database; needs api.osv.dev).
audit: $(STAMP)
	$(BIN)/pip-audit -r requirements.lock --require-hashes --disable-pip -s osv --progress-spinner off

# redis-server (embedded Redis, tests) and haproxy (the public port when Flower
# is enabled) come from the system's packages.
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v haproxy >/dev/null 2>&1 || missing="$$missing haproxy"; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $$missing; \
	fi

# What only the tests use: promtool (the alert rules' unit tests; it comes with Debian's prometheus
# package, whose service a container does not start), openssl (the TLS Redis test's certificates),
# chromium and its driver (the status page's test in a real browser), rootful podman with runc,
# netavark and debootstrap (the image's test builds the Dockerfile on a local stand-in base).
test-deps:
	@missing=""; \
	command -v promtool >/dev/null 2>&1 || missing="$$missing prometheus"; \
	command -v openssl >/dev/null 2>&1 || missing="$$missing openssl"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null 2>&1 || missing="$$missing chromium-driver"; \
	command -v podman >/dev/null 2>&1 || missing="$$missing podman"; \
	command -v runc >/dev/null 2>&1 || missing="$$missing runc"; \
	test -x /usr/lib/podman/netavark || missing="$$missing netavark aardvark-dns"; \
	command -v iptables >/dev/null 2>&1 || missing="$$missing iptables"; \
	command -v debootstrap >/dev/null 2>&1 || missing="$$missing debootstrap"; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

run: $(STAMP) system-deps
	PATH="$(CURDIR)/$(BIN):$$PATH" ./start.sh

test: $(STAMP) system-deps test-deps
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest

# wrk (the ack benchmark's load client, in C so that it leaves the cores to the server)
bench-deps:
	@command -v wrk >/dev/null 2>&1 || { SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq wrk; }

# Benchmarks (not part of `make test`; about 12 minutes on 2 cores); figures go
# to docs/performance.md.
bench: $(STAMP) system-deps bench-deps
	$(BIN)/python bench/reader_confusion.py
	$(BIN)/python bench/batching_quality.py
	$(BIN)/python bench/batching_quality.py --cold
	$(BIN)/python bench/batching_quality.py --text lists
	$(BIN)/python bench/batching_quality.py --max-wait 60
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/batching_live.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/batching_live.py --cold --modes smart learned
	$(BIN)/python bench/e2e_overhead.py --messages 150 --window 0.5
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/webhook_ack.py --seconds 5 --connections 16 --rounds 3
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/webhook_ack.py --targets seed bare gateway gateway-public --rounds 3
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/drain_rate.py --conversations 1000
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/scale_out.py --conversations 200
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/footprint.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/open_windows.py --conversations 100000
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/concurrency.py --contacts 100 --bot-seconds 3 --spread 3 --settings default solo threads-32

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) data .pytest_cache
