# The entry point for people and CI alike: CI runs `make test` through .ci/run.
GO        ?= go
BIN       ?= bin
PKGS      ?= ./...
# Postgres-backed packages each start one throw-away cluster; keep two at a time on 2 cores.
TESTFLAGS ?= -count=1 -timeout 15m -p 2

.PHONY: all build test bench chaos fuzz lint fmt demo clean

all: build

# The version -version prints and ledgerd_build_info exports: git describe
# when this is a git checkout, else what the Go toolchain records.
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null)
LDFLAGS   := $(if $(VERSION),-X github.com/ledgerd/ledgerd/internal/version.Version=$(VERSION))

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/ledgerd ./tools/inspect

test:
	$(GO) vet $(PKGS)
	$(GO) test $(TESTFLAGS) $(PKGS)

# The whole story on a throw-away local Postgres: consumers stream, one dies,
# the slot is pinned, the reconciler evicts it, the slot moves, inspect explains.
demo: build
	$(GO) build -o $(BIN)/example ./client/example
	$(GO) run ./tools/demo -bin $(BIN)

# Benchmarks compare ratios within one run; see README for the figures.
bench:
	$(GO) test -run '^$$' -bench . -benchmem -timeout 60m $(PKGS)

# Long soaks and crash loops that do not fit in `make test`.
chaos:
	LEDGERD_CHAOS=1 $(GO) test -count=1 -timeout 60m -run 'Chaos|Crash' $(PKGS)

# Native Go fuzzing of every parser of outside input, each target in turn for
# FUZZTIME (make test runs their seed corpora). A failing input is saved under
# the package's testdata/fuzz/ and replayed by go test from then on. Add new
# targets here. Minimizing each new interesting input may otherwise take a
# minute of the run, during which nothing is fuzzed.
FUZZTIME ?= 60s
FUZZMINIMIZETIME ?= 5s
FUZZ_TARGETS = \
	./ledger:FuzzParseLSN \
	./ledger:FuzzDecodeShape \
	./ledger:FuzzDecodeConsumer \
	./ledger:FuzzDecodeTombstone \
	./ledger:FuzzDecodeEvent \
	./ledger:FuzzUnseal \
	./ledger:FuzzCheckBoltHeader \
	./stream:FuzzDecode \
	./route:FuzzRouteFilter \
	./api:FuzzRequestBodies \
	./cmd/ledgerd:FuzzParseSize

fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "== $$name ($$pkg, $(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) $$pkg; \
	done

lint:
	$(GO) vet $(PKGS)
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 $(PKGS)

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf $(BIN)
