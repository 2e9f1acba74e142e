# parley: the targets a newcomer guesses.
GO          ?= go
STATICCHECK ?= $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS     := -X github.com/parleychat/parley/server.Version=$(VERSION)

.PHONY: build run test lint fmt bench bench-node chaos cluster clean

build: ## the parley binary in ./bin
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/parley .

run: build ## a single node with its data in ./parley-data, on http://127.0.0.1:8080
	./bin/parley serve

test: lint ## everything CI runs: format, vet, staticcheck, all tests (with the short crash and fuzz seeds)
	$(GO) test -count=1 -timeout 15m ./...

lint: ## gofmt, go vet, staticcheck
	@unformatted="$$(gofmt -l $$(git ls-files '*.go'))"; \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

bench: build ## the load suite against a local three-node cluster; writes BENCHMARKS.md (about 8 minutes)
	./scripts/bench.sh

bench-node: ## sends per second through one node with batching on and off (go test -bench)
	$(GO) test -run '^$$' -bench . -benchtime 5s ./channel/

chaos: build ## long fault runs: 50 SIGKILLs of a lone node, 30 of a three-node cluster's nodes, under load
	PARLEY_CRASH_ROUNDS=50 PARLEY_CHAOS_ROUNDS=30 $(GO) test -count=1 -timeout 30m -run 'TestCrash|TestChaos' -v .

cluster: build ## a local three-node cluster on 127.0.0.1-3 in the foreground; Ctrl-C stops it
	./scripts/cluster.sh

clean:
	rm -rf bin parley-data cluster-data bench-results
