# pspf-edge — see README.md. `make run` runs the demo, `make test` the suite.
GO       ?= go
BIN      := bin/pspf-edge
RUN_DIR  := .run
# -race on every test run. -timeout is per package (each test binary):
# a hung test fails its package with every goroutine's stack after 10
# minutes instead of eating the CI job. The slowest packages (cmd/pspf-edge,
# scripts/hwlab, sources/kafka) take about 2 minutes on an idle machine, up
# to 5 on a loaded one.
TESTFLAGS ?= -race -timeout 10m
# Stamped into the binary (pspf-edge version), as scripts/cross-build.sh does.
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT   ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
LDFLAGS  := -X main.version=$(VERSION) -X main.commit=$(COMMIT)
# Build tags of the binaries built here (README: Building for boards): the
# PostgreSQL sink and pgx (3.9 MB) and Go's bundled HTTP/2 (0.5 MB; HTTP
# goes as HTTP/1.1) are left out by default; build-full has every connector
# and HTTP/2, as a plain `go build ./cmd/pspf-edge` does.
TAGS     ?= no_postgres,nethttpomithttp2

.PHONY: build build-full run test deps bench bench-e2e bench-flood lint cross clean hwlab package

# Code run at config load or once per TLS handshake, compiled without
# inlining (scripts/cold-packages): 0.1 MB.
GCFLAGS  := $(foreach p,$(shell sed -e '/^\#/d' -e '/^$$/d' scripts/cold-packages),-gcflags=$(p)=-l)

# Static (CGO off) like the release builds: no libc or loader pages in the
# resident set (1.3 MB of them under load; e2e idle RSS 7.3 -> 5.7 MB).
# Stripped and -trimpath, as scripts/cross-build.sh builds what ships.
build:
	CGO_ENABLED=0 $(GO) build -trimpath -buildvcs=false $(GCFLAGS) -tags '$(TAGS)' -ldflags '-s -w $(LDFLAGS)' -o $(BIN) ./cmd/pspf-edge

build-full:
	$(MAKE) build TAGS=

# The demo: simulated sensors -> decode -> filter -> map -> console + file.
# Needs no outside service. Ctrl-C stops it cleanly.
run: build
	mkdir -p $(RUN_DIR)
	$(BIN) run -p pipelines/demo.yaml --data-dir $(RUN_DIR)/data --admin 127.0.0.1:0

# deps first: it installs the Debian packages the tests need (as root with
# apt-get) or stops at once saying which are missing. See scripts/deps.sh.
test: deps lint
	$(GO) test $(TESTFLAGS) ./...

deps:
	@scripts/deps.sh

bench:
	@scripts/deps.sh bench
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 2s ./agent/... ./operators/... ./buffer/... ./state/... ./checkpoint/... ./sinks/... ./sources/...

# End to end: mosquitto -> agent (pipelines/bench) -> Kafka-protocol broker,
# against the mosquitto -> bare subscriber ceiling, plus a Kafka outage and
# the low-rate table (idle; 100, 2,000 and max msg/s at QoS 0 and 1 from one
# and four connections: CPU, wake-ups, fsyncs, disk bytes). A few minutes; prints a table, writes bench-results/. Flags for the harness
# go in E2EFLAGS, e.g. E2EFLAGS="-agent 'other=/path/agent --mqtt {mqtt} --kafka {kafka}'".
E2EFLAGS ?=
bench-e2e: build
	$(GO) build -o bin/kfake-broker ./internal/kafkatest/cmd/kfake-broker
	$(GO) build -o bin/e2ebench ./internal/e2ebench/cmd/e2ebench
	bin/e2ebench -out bench-results $(E2EFLAGS)

# Memory under a flood: 1,000 MQTT messages of 250 KB at QoS 1 with Kafka
# up, then down (into the log) and the drain, then a mixed flood; the agent's
# peak RSS and heap and what it gives back after each burst. About two
# minutes; prints a table, writes bench-results/flood.json.
bench-flood: build
	$(GO) build -o bin/kfake-broker ./internal/kafkatest/cmd/kfake-broker
	$(GO) build -o bin/e2ebench ./internal/e2ebench/cmd/e2ebench
	bin/e2ebench -flood -out bench-results $(E2EFLAGS)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

cross:
	TAGS='$(TAGS)' scripts/cross-build.sh

# Debian packages (armhf with the armv6 binary, arm64, amd64) and tarballs
# (armv6, armv7, arm64, amd64) in dist/, built with nfpm. See docs/install.md.
package:
	packaging/package.sh

# Hardware-in-the-loop lab: the cross-compiled agent in QEMU VMs (arm64 and
# amd64, Debian's stock kernels) with a simulated GPIO chip and real 16550
# UARTs. Installs QEMU if missing; caches under .cache/hwlab. See scripts/hwlab.
hwlab:
	scripts/hwlab/hwlab.sh

clean:
	rm -rf bin dist $(RUN_DIR)
