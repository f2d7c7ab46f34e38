# Everything a fresh Debian machine needs: `make demo`, `make test`.
GO       ?= go
BIN      := $(CURDIR)/bin
CRIU_DIR ?= /opt/mig/criu
APT_PKGS := openssh-server openssh-client iproute2 nftables tini util-linux zstd busybox-static runc curl

export PATH := $(BIN):$(PATH)

.PHONY: all build deps deps-apt deps-criu test test-short demo clean

all: build

build:
	$(GO) build -o $(BIN)/mig ./cmd/mig
	CGO_ENABLED=0 $(GO) build -o $(BIN)/counter ./cmd/counter

# deps installs the system packages the lab and tests use and CRIU into a
# private prefix. Both steps are quick when already done.
deps: deps-apt deps-criu

deps-apt:
	@missing=$$(for p in $(APT_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

deps-criu:
	steps/criu/install-criu.sh $(CRIU_DIR)

test: deps build
	$(GO) test -count=1 -timeout 45m ./...

test-short: build
	$(GO) test -short -count=1 ./...

demo: deps build
	workflows/demo.sh

clean:
	rm -rf $(BIN)
