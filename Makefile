# hsmfs. `make demo` runs hsmfs on a demo directory; `make test` runs every
# test (unit and end-to-end, with the race detector).
export PATH := $(PATH):/usr/local/go/bin
GO      ?= go
BIN     := bin/hsmfs
VERSION := $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
LDFLAGS := -X main.version=$(VERSION)

.PHONY: all build test unit e2e demo bench bench-short crashtest posixtest stormtest lint deps clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/hsmfs

deps:
	@bash scripts/deps.sh

# Unit tests, then the end-to-end tests against real FUSE mounts, all
# with -race. The e2e tests include the short crash tests.
test: deps
	$(GO) vet ./...
	$(GO) test -race -short -count=1 -timeout 15m ./checkpoint/ ./journal/ ./fs/ ./internal/... ./cmd/...
	HSMFS_RACE=1 $(GO) test -race -count=1 -timeout 15m ./e2e/

unit:
	$(GO) test -race -count=1 ./checkpoint/ ./journal/ ./fs/ ./internal/... ./cmd/...

e2e: deps
	HSMFS_RACE=1 $(GO) test -race -count=1 -timeout 15m ./e2e/

demo: build
	@bash scripts/demo.sh $(BIN)

# The long crash tests: CRASHES=N (kill mode) and POWERCUTS=N (power mode).
crashtest: deps build
	HSMFS_CRASH_LONG=1 $(GO) test -count=1 -timeout 60m -run 'Crash|Power|Fault' -v ./e2e/

# The long POSIX tests: go-fuse's posixtest, and the differential test of
# the mount against a plain directory at 200,000 steps (4 seeds x 50,000,
# passthrough on and off). POSIXDIFF_SEED picks the first seed.
POSIXDIFF_SEED ?= 1
posixtest: deps
	HSMFS_POSIXDIFF_STEPS=50000 HSMFS_POSIXDIFF_SEEDS=4 HSMFS_POSIXDIFF_SEED=$(POSIXDIFF_SEED) \
		$(GO) test -count=1 -timeout 60m -run 'TestPosix' -v ./e2e/

# The rename storm at the bounded-answers target: 4 writers x 2,000
# operations x 3 rounds, answers within 4 x (entries + operations), and
# an exact copy by rsync every round. It fails today: the target is not
# met yet (docs/performance.md).
stormtest: deps
	HSMFS_STORM_WRITERS=4 HSMFS_STORM_FACTOR=4 $(GO) test -count=1 -timeout 30m -run 'TestRenameStorm' -v ./e2e/

bench: deps build
	@bash scripts/bench.sh

bench-short: deps build
	@bash scripts/bench.sh --short

lint:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@if command -v staticcheck >/dev/null; then staticcheck ./...; else echo "staticcheck not installed; skipped"; fi

clean:
	rm -rf bin
