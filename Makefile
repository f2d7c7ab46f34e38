# Everything a fresh Debian machine needs: `make demo`, `make test`.
GO       ?= go
BIN      := $(CURDIR)/bin
CRIU_DIR ?= /opt/mig/criu
APT_PKGS := openssh-server openssh-client iproute2 nftables util-linux busybox-static runc curl redis-server nginx-light mariadb-server memcached haproxy gunicorn openjdk-17-jdk-headless nodejs

export PATH := $(BIN):$(PATH)

.PHONY: all build deps deps-apt deps-criu host-setup test test-short demo demo-container bench faults soak clean

all: build

build:
	$(GO) build -o $(BIN)/mig ./cmd/mig
	CGO_ENABLED=0 $(GO) build -o $(BIN)/counter ./cmd/counter

# deps installs the system packages the lab and tests use and CRIU into a
# private prefix. Both steps are quick when already done.
deps: deps-apt deps-criu

# host-setup raises the pipe limits that CRIU's lazy pages need.
host-setup: build
	$(BIN)/mig doctor -fix >/dev/null

deps-apt:
	@missing=$$(for p in $(APT_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

deps-criu:
	steps/criu/install-criu.sh $(CRIU_DIR)

# One package at a time: the CRIU tests lock this machine's network with
# nftables while they dump, which other packages' loopback tests would feel.
test: deps build host-setup
	$(GO) test -p 1 -count=1 -timeout 45m ./...

test-short: build
	$(GO) test -short -count=1 ./...

demo: deps build host-setup
	workflows/demo.sh

demo-container: deps build host-setup
	workflows/demo-container.sh

bench: deps build host-setup
	$(GO) test -run '^$$' -bench Migrate -benchtime 5x -timeout 60m ./workflows

# The whole fault matrix (make test runs a representative subset): every
# fault at every phase of every strategy, on a lab.
faults: deps build host-setup
	MIG_FAULTS=all $(GO) test -count=1 -timeout 90m -run TestFaults -v ./workflows

# 100 back-and-forth moves of the counter under load, alternating strategies.
soak: deps build host-setup
	MIG_SOAK=100 $(GO) test -count=1 -timeout 60m -run TestSoak -v ./workflows

clean:
	rm -rf $(BIN)
