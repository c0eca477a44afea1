# The two commands of the README, plus their parts.
.PHONY: up test setup build unit clean-state bench

## Run the whole system locally (MLflow, the edge API in workerd, an agent); Ctrl-C stops it.
up:
	@scripts/up.sh

## Set up a fresh machine and run every test (unit, property, and integration against real services).
test:
	@scripts/test.sh

setup:
	@scripts/setup.sh --with-browser

build:
	@scripts/build.sh

## Unit and property tests of core/ only (no services).
unit:
	@cargo test -p concurrent-core

## Forget local runs, templates and MLflow data of `make up`.
clean-state:
	rm -rf .state

## Benchmarks on the real stack; prints a table and writes bench/RESULTS.md (takes ~15 min).
bench:
	@scripts/bench.sh $(ARGS)
