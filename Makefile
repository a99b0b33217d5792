# Two commands set up and run everything on a fresh Debian machine:
#   make demo   build release, then compare six modes side by side (installs what is missing)
#   make test   unit and integration tests (installs what is missing)
#   make demo-python  the modes beside their CPython counterparts (gunicorn, uvicorn from PyPI)
# make serve serves one mode (CONFIG=config/gil.yaml ...) for curl and loadtest.

SWIFT ?= $(shell command -v swift 2>/dev/null || echo /opt/swift/usr/bin/swift)
# A statically linked Swift runtime keeps an idle server near 15 MB resident instead of 21 MB:
# the dynamic loader no longer relocates every page of Foundation and ICU at start.
RELEASE = -c release --static-swift-stdlib
CONFIG ?= config/nogil.yaml
# memcached: the tests (and cache.backend: memcached) run a real one. python3: a test serves the
# reference app (loadtest/python) with Python's own wsgiref. zlib: loadtest's interval logs are
# HdrHistogram's compressed histograms. libssl-dev: loadtest's https://; nginx and openssl: the
# TLS server (and its certificate) the tests and bench/loadtest_vs_wrk.sh run it against.
# libhdrhistogram-java and a JRE: a test reads loadtest's interval log with HdrHistogram's own
# Java HistogramLogProcessor. systemd: systemd-socket-activate and systemd-analyze, for socket
# activation and the unit files. python3-pylibmc: a Python client (libmemcached's ketama) on the
# memcached pool. haproxy: its config is checked beside nginx's. iproute2: bench/cluster.sh's and
# the cluster test's network namespaces.
APT_PACKAGES = libevent-dev pkg-config memcached python3 python3-venv zlib1g-dev libssl-dev nginx openssl \
	openjdk-17-jre-headless libhdrhistogram-java systemd python3-pylibmc haproxy iproute2
# make demo-python and bench/fidelity.sh: gunicorn and uvicorn in a virtual environment.
PYTHON_VENV = .build/python

.PHONY: all setup build release demo demo-python python-venv serve test test-tsan test-asan fuzz bench clean

all: build

# Installs libevent, pkg-config and memcached when missing: with apt-get as root, otherwise it prints the
# exact command and stops.
setup:
	@if ! [ -x "$(SWIFT)" ]; then \
		echo "Swift 6 is required: put swift on PATH or install it at /opt/swift (https://swift.org/install)."; exit 1; \
	fi
	@if pkg-config --exists libevent zlib openssl 2>/dev/null && [ -x /usr/bin/memcached ] && [ -x /usr/sbin/nginx ] && [ -x /usr/bin/openssl ] \
		&& [ -f /usr/share/java/hdrhistogram.jar ] && command -v java >/dev/null && python3 -c 'import venv, ensurepip' 2>/dev/null \
		&& [ -x /usr/bin/systemd-socket-activate ] && /usr/bin/python3 -c 'import pylibmc' 2>/dev/null && [ -x /usr/sbin/haproxy ] \
		&& [ -x /usr/sbin/ip -o -x /usr/bin/ip ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing $(APT_PACKAGES)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES); \
	else \
		echo "libevent 2.1, zlib or OpenSSL development files, memcached, nginx, haproxy, openssl, Java's HdrHistogram, python3, its venv module, pylibmc, systemd's tools or iproute2 are missing. Run:"; \
		echo "  sudo apt-get install -y $(APT_PACKAGES)"; exit 1; \
	fi

build: setup
	$(SWIFT) build

release: setup
	$(SWIFT) build $(RELEASE) --product threadbare
	$(SWIFT) build $(RELEASE) --product loadtest

# loadtest compare: each mode started from config/, the suite in loadtest/suite.yaml run
# against it, the tables printed and the raw results written to report/.
demo: release
	$$($(SWIFT) build $(RELEASE) --show-bin-path)/loadtest compare --quick --out report

# The four modes that model a Python server, each followed by that server running the same
# endpoints in CPython (loadtest/python/targets.yaml): gil and gunicorn gthread, prefork and
# gunicorn sync, async and uvicorn, prefork-async and gunicorn with uvicorn workers.
demo-python: release python-venv
	$$($(SWIFT) build $(RELEASE) --show-bin-path)/loadtest compare --quick --modes gil,prefork,async,prefork-async \
		--targets loadtest/python/targets.yaml --out report-python

# gunicorn and uvicorn from PyPI, pinned in loadtest/python/requirements.txt, in $(PYTHON_VENV).
python-venv: setup
	@if ! [ -x $(PYTHON_VENV)/bin/gunicorn ] || ! cmp -s loadtest/python/requirements.txt $(PYTHON_VENV)/requirements.txt; then \
		echo "installing gunicorn and uvicorn into $(PYTHON_VENV)"; \
		python3 -m venv $(PYTHON_VENV) && $(PYTHON_VENV)/bin/pip install -q -r loadtest/python/requirements.txt \
			&& cp loadtest/python/requirements.txt $(PYTHON_VENV)/requirements.txt; \
	fi

serve: release
	@echo "serving $(CONFIG); try: curl -s http://127.0.0.1:8080/ | head; Ctrl-C stops"
	$$($(SWIFT) build $(RELEASE) --show-bin-path)/threadbare serve --config $(CONFIG)

test: setup
	$(SWIFT) build --product threadbare
	$(SWIFT) test

test-tsan: setup
	$(SWIFT) build --sanitize=thread --product threadbare
	$(SWIFT) test --sanitize=thread

# AddressSanitizer and LeakSanitizer, servers included: a leak at a server's exit fails its test.
# .lsan-suppressions lists the toolchain's own allocations kept until exit.
test-asan: setup
	$(SWIFT) build --sanitize=address --product threadbare
	LSAN_OPTIONS=suppressions=$(CURDIR)/.lsan-suppressions $(SWIFT) test --sanitize=address

# The seeded property tests over the query, cache-key, router and configuration parsers, and the
# differential test of the framing rules against h11, each for FUZZ_SECONDS from a fresh seed
# (printed; FUZZ_SEED=N replays one).
FUZZ_SECONDS ?= 60
fuzz: setup
	FUZZ_SECONDS=$(FUZZ_SECONDS) $(SWIFT) test --filter 'ParserPropertyTests|FramingDifferentialTests'

bench: setup
	bench/http_core.sh
	bench/lock_modes.sh
	bench/prefork.sh
	bench/loadtest_vs_wrk.sh
	bench/cache_backends.sh
	@if [ "$$(id -u)" = 0 ]; then bench/cluster.sh; else echo "bench/cluster.sh skipped: it makes network namespaces, so it needs root (sudo bench/cluster.sh)"; fi

clean:
	rm -rf .build
