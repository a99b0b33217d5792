# Two commands set up and run everything on a fresh Debian machine:
#   make demo   build release, then compare six modes side by side (installs what is missing)
#   make test   unit and integration tests (installs what is missing)
# make serve serves one mode (CONFIG=config/gil.yaml ...) for curl and loadtest.

SWIFT ?= $(shell command -v swift 2>/dev/null || echo /opt/swift/usr/bin/swift)
# A statically linked Swift runtime keeps an idle server near 15 MB resident instead of 21 MB:
# the dynamic loader no longer relocates every page of Foundation and ICU at start.
RELEASE = -c release --static-swift-stdlib
CONFIG ?= config/nogil.yaml
# memcached: the tests (and cache.backend: memcached) run a real one.
APT_PACKAGES = libevent-dev pkg-config memcached

.PHONY: all setup build release demo serve test test-tsan test-asan fuzz bench clean

all: build

# Installs libevent, pkg-config and memcached when missing: with apt-get as root, otherwise it prints the
# exact command and stops.
setup:
	@if ! [ -x "$(SWIFT)" ]; then \
		echo "Swift 6 is required: put swift on PATH or install it at /opt/swift (https://swift.org/install)."; exit 1; \
	fi
	@if pkg-config --exists libevent 2>/dev/null && [ -x /usr/bin/memcached ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing $(APT_PACKAGES)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES); \
	else \
		echo "libevent 2.1 development files or memcached are missing. Run:"; \
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

# The seeded property tests over the query, cache-key, router and configuration parsers, each for
# FUZZ_SECONDS from a fresh seed (printed; FUZZ_SEED=N replays one).
FUZZ_SECONDS ?= 60
fuzz: setup
	FUZZ_SECONDS=$(FUZZ_SECONDS) $(SWIFT) test --filter ParserPropertyTests

bench: setup
	bench/http_core.sh
	bench/lock_modes.sh
	bench/prefork.sh
	bench/loadtest_vs_wrk.sh
	bench/cache_backends.sh

clean:
	rm -rf .build
