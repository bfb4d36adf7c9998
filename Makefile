# The one test command: installs what the tests need when it is missing, then
# runs vet, a gofmt check and every test with the race detector.
GO ?= go
VERSITYGW_VERSION := v1.8.0
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
GOBIN_DIR := $(shell $(GO) env GOBIN)
ifeq ($(GOBIN_DIR),)
GOBIN_DIR := $(shell $(GO) env GOPATH)/bin
endif

.PHONY: test deps build bench fuzz

test: deps
	@unformatted="$$(gofmt -l .)"; if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	PATH="$(GOBIN_DIR):$$PATH" $(GO) test -race -timeout 20m ./...

deps:
	@command -v redis-server >/dev/null 2>&1 || { \
		echo "installing redis-server from Debian's packages"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq redis-server; }
	@command -v versitygw >/dev/null 2>&1 || [ -x "$(GOBIN_DIR)/versitygw" ] || { \
		echo "installing versitygw $(VERSITYGW_VERSION) with go install (a few minutes)"; \
		$(GO) install github.com/versity/versitygw/cmd/versitygw@$(VERSITYGW_VERSION); }
	@command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || { \
		echo "installing Node.js and npm from Debian's packages (the tus tests drive a real tus client)"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq nodejs npm; }
	@command -v systemd-analyze >/dev/null 2>&1 || { \
		echo "installing systemd's tools (the tests verify the units in deploy/systemd)"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq systemd; }
	@command -v strace >/dev/null 2>&1 || { \
		echo "installing strace from Debian's packages (a spool test checks the order of a claim's fsyncs)"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq strace; }
	@command -v chromium >/dev/null 2>&1 || { \
		echo "installing Chromium from Debian's packages (the console test drives a real browser)"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium; }
	@[ -d watcher/intake/testdata/tus/node_modules/tus-js-client ] || { \
		echo "installing tus-js-client for the tus tests"; \
		npm ci --prefix watcher/intake/testdata/tus --no-audit --no-fund --silent; }
	@[ -d internal/webhook/testdata/standardwebhooks/node_modules/standardwebhooks ] || { \
		echo "installing standardwebhooks (the reference verifier) for the webhook tests"; \
		npm ci --prefix internal/webhook/testdata/standardwebhooks --no-audit --no-fund --silent; }

build:
	$(GO) build -o bin/dab ./cmd/dab

# dab next to s5cmd and asynq, one table of ratios (bench/pipeline.sh; README
# "Benchmarks"). Flags for the driver: make bench BENCH_FLAGS=-quick
bench: deps
	PATH="$(GOBIN_DIR):$$PATH" ./bench/pipeline.sh $(BENCH_FLAGS)

# Run every fuzz target in the tree for FUZZTIME each (go test runs their
# seeds always); the list is read from the test files, so none is left out.
FUZZTIME ?= 30s
fuzz:
	@grep -rH --include='*_test.go' -E '^func Fuzz[A-Za-z0-9_]+\(' cmd worker watcher internal | \
	sed -E 's#^(.*)/[^/]+_test.go:func (Fuzz[A-Za-z0-9_]+).*#\1 \2#' | sort -u | \
	while read -r pkg name; do \
		echo "fuzz ./$$pkg $$name"; \
		$(GO) test ./$$pkg -run '^$$' -fuzz "^$$name$$" -fuzztime $(FUZZTIME) || exit 1; \
	done
