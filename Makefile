# maqet — build, test, demo, benchmark.
#   make demo    boot a demo VM under a systemd --user session and show it (root on a bare machine is fine)
#   make test    the whole test suite: unit tests + integration tests against a real user manager and QEMU
#   make bench   start/QMP/ls timings and runner RSS against bare QEMU, measured in the same run
#   make lint    rustfmt + clippy (warnings are errors)

CARGO ?= cargo

.PHONY: all build test demo bench lint fmt clean

all: build

build:
	$(CARGO) build --release --locked

test:
	bash tests/run.sh

demo:
	bash tests/demo.sh

bench:
	bash tests/bench.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets --features integration -- -D warnings

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
