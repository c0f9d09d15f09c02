# Ferry — see README.md. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash

# A cargo target dir outside the clone, so fresh clones (CI) build warm on a machine that has
# built Ferry before. Override with CARGO_TARGET_DIR=...
ifeq ($(shell id -u),0)
CACHE_DIR ?= /var/cache/ferry
else
CACHE_DIR ?= $(HOME)/.cache/ferry
endif
export CARGO_TARGET_DIR ?= $(CACHE_DIR)/target
export FERRY_CACHE ?= $(CACHE_DIR)
BED_DIR ?= /tmp/ferry-bed

.PHONY: test ci setup lint unit schema validate-examples bed-up bed-down bed-status demo bench bench-scale bench-cutover sam-build deploy-check deploy image rds-bundle

## test: install what is missing, fmt check, clippy -D warnings, start the bed, run all tests
test:
	bash tests/run.sh

## ci: exactly what .ci/run runs
ci: test

## setup: install the test bed's prerequisites (apt, Python venv, PostgreSQL binaries)
setup:
	bash tests/setup.sh

## lint: fmt check and clippy only
lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

## unit: the tests that need no test bed (spec, state, CLI, replicator and step helpers)
unit:
	cargo nextest run -p ferry-core -p ferry-pg -p ferry-aws -p ferry-heroku -p ferry-cli -p ferry-replicator -p ferry-steps

## schema: regenerate examples/migration.schema.json from the spec types
schema:
	cargo run -q -p ferry-cli -- schema > examples/migration.schema.json

## validate-examples: run `ferry validate` on every example
validate-examples:
	for f in examples/*.json; do [[ $$f == *schema.json ]] || cargo run -q -p ferry-cli -- validate $$f; done

## bed-up / bed-down / bed-status: the local test bed, for running tests by hand
bed-up: setup
	FERRY_BED_DIR=$(BED_DIR) python3 tests/bed/bed.py up
bed-down:
	FERRY_BED_DIR=$(BED_DIR) python3 tests/bed/bed.py down
bed-status:
	FERRY_BED_DIR=$(BED_DIR) python3 tests/bed/bed.py status

## bench: copy speed vs pg_dump/pg_restore and pgcopydb on an integer-keyed and a uuid-keyed
## dataset (each tool twice, the second round in reverse order, its faster run reported; both
## servers with FERRY_BED_SHARED_BUFFERS=1GB), the app's write latency during the copy with and without BENCH_THROTTLE_MB=40,
## each run's CPU per side, pgbench tps under no/empty/insert-only/Ferry triggers (four rounds,
## the order turned each round), lag under pgbench in both capture
## modes from the source's and the target's PostgreSQL, peak RSS; writes docs/benchmarks.md
## (BENCH_GB=2, BENCH_SECONDS=30, BENCH_OUT, FERRY_SOURCE_PG / FERRY_TARGET_PG pick the
## versions); then the Redis part (copy of
## BENCH_REDIS_MB=1024 MB of mixed keys beside redis-cli --rdb, live-sync lag under 2,000
## writes/s, the switch's Redis freeze) -> docs/benchmarks-redis.md. Not in CI.
bench:
	bash tests/bench/run.sh

## bench-scale: Ferry's copy alone on one large dataset (BENCH_GB=20, BENCH_SHAPE=uuid|int):
## time and peak RSS -> docs/benchmarks-scale.md. Needs about 2.5 x BENCH_GB + 5 GB free disk
## (checked first). Not in CI.
bench-scale:
	BENCH_SCALE=1 bash tests/bench/run.sh

## demo: the local rehearsal: a whole migration through the real state machine, functions and
## worker while a sample app writes; report in target/ferry-report/ (DEMO_ROWS, DEMO_WRITES_PER_SECOND).
## With SOURCE_URL=postgres://… (a fork or restored snapshot of production): `ferry rehearse` from
## it into a scratch PostgreSQL, report in target/ferry-rehearsal.md (REHEARSE_ARGS adds options).
ifdef SOURCE_URL
# Handed to ferry through the environment, never on a command line make echoes.
export FERRY_REHEARSE_SOURCE_URL := $(SOURCE_URL)
endif
demo:
ifdef SOURCE_URL
	@bash tests/setup.sh >/dev/null
	@cargo build -q -p ferry-cli
	@FERRY_PG_BIN=$${FERRY_PG_BIN:-$(FERRY_CACHE)/pg/17/bin} $(CARGO_TARGET_DIR)/debug/ferry rehearse \
		--out target/ferry-rehearsal.md $(REHEARSE_ARGS)
else
	bash tests/demo.sh
endif

## bench-cutover: at DEMO_ROWS (1.5 M) rows with Redis (BENCH_REDIS=off), the happy path
## BENCH_RUNS (10) times with the floor at each cutover gate, BENCH_ROLLBACK_RUNS (3) rollbacks
## and BENCH_REDEPLOY_RUNS (0) redeploy-mode runs under load; paused window, the tasks' hold,
## write freeze p50/max -> docs/benchmarks-cutover.md (BENCH_OUT). Not in CI.
bench-cutover:
	BENCH_RUNS=$${BENCH_RUNS:-10} bash tests/demo.sh

## rds-bundle: refresh the RDS CA bundle Ferry ships (crates/pg/certs/rds-global-bundle.pem)
## from AWS's trust store; needs the internet. Commit the result.
RDS_BUNDLE_URL ?= https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem
rds-bundle:
	curl -fsSL --proto '=https' "$(RDS_BUNDLE_URL)" -o crates/pg/certs/rds-global-bundle.pem.new
	@n=$$(grep -c 'BEGIN CERTIFICATE' crates/pg/certs/rds-global-bundle.pem.new); \
	if [ "$$n" -lt 60 ]; then echo "[rds-bundle] only $$n certificates downloaded; kept the old bundle"; rm -f crates/pg/certs/rds-global-bundle.pem.new; exit 1; fi; \
	mv crates/pg/certs/rds-global-bundle.pem.new crates/pg/certs/rds-global-bundle.pem; \
	echo "[rds-bundle] $$n certificates in crates/pg/certs/rds-global-bundle.pem"

## image: the replication worker's image (needs a container engine; push it to ECR for deploy).
## IMAGE=ferry-worker, PLATFORM=linux/arm64 (the template's default architecture)
image:
	docker build --platform $${PLATFORM:-linux/arm64} -t $${IMAGE:-ferry-worker} .

## sam-build: build every function with cargo-lambda through the SAM CLI, as deploy does
## (--beta-features: SAM's rust-cargolambda build method is still a beta feature)
## (ARCH=arm64 by default, which needs the aarch64 Rust target; ARCH=x86_64 needs nothing more).
ARCH ?= arm64
sam-build:
	cd infra && PATH="$(FERRY_CACHE)/venv/bin:$(FERRY_CACHE)/sam-venv/bin:$$PATH" SAM_CLI_TELEMETRY=0 \
		sam build --beta-features --template-file template.yaml --parameter-overrides Architecture=$(ARCH)

## deploy-check: the deploy's dry run: sam-build, then the built (packaged) template checked
## with cfn-lint and `sam validate --lint`, as make test checks the source template. Needs no
## AWS account.
deploy-check: sam-build
	cd infra && PATH="$(FERRY_CACHE)/venv/bin:$(FERRY_CACHE)/sam-venv/bin:$$PATH" SAM_CLI_TELEMETRY=0 sh -c '\
		cfn-lint .aws-sam/build/template.yaml && \
		sam validate --lint --template .aws-sam/build/template.yaml --region us-east-1 && \
		echo "[deploy-check] the built template passes cfn-lint and sam validate --lint"'

## deploy: sam-build, then deploy the stack (needs an AWS account and a worker image; cannot
## run on the local bed). Asks for the parameters once.
deploy: sam-build
	cd infra && PATH="$(FERRY_CACHE)/sam-venv/bin:$$PATH" SAM_CLI_TELEMETRY=0 \
		sam deploy --guided --parameter-overrides Architecture=$(ARCH)
