# relay365: the two commands are `make demo` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed-v1
export PATH := $(CURDIR)/$(VENV)/bin:$(CURDIR)/.tools/bin:$(PATH)
export RELAY365_MOTO_SERVER := $(CURDIR)/$(VENV)/bin/moto_server

.PHONY: test tests e2e venv unit fmt clippy size-rule deny demo cli bench bench-fleet check-template lint-template build-venv release e2e-release cold-check nextest fuzz chaos build-tests

FUNCTIONS := connections oauth-callback mail-webhook mail-dispatch send-mail
TARGET_DIR := $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)
# One command for every release build (demo, bench, e2e-release), so all share
# one set of compiled dependencies.
RELEASE_BUILD := cargo build --release --locked $(addprefix -p ,$(FUNCTIONS))

## Everything CI checks: formatting, lints, every test. The binary end-to-end
## tests run on the debug builds of the five functions here (build-tests builds
## them with the tests, on the same compiled dependencies); `make e2e-release`
## runs them on the release binaries, which would add about 12 minutes of build.
test: venv fmt clippy size-rule tests lint-template deny

## The five functions as they deploy (release profile), for the demo, the benchmarks and e2e-release.
release:
	$(RELEASE_BUILD)

## The binary end-to-end tests and the walk-through on the release binaries:
## the demo's own tests and the system tests that run the demo stack, but
## for the CLI's (cli.rs), which runs the debug relay365 binary.
E2E_RELEASE_TESTS := package(relay365-demo) | (package(relay365-system-tests) & (binary(binaries) | binary(demo_connect) | binary(large_mail)))
e2e-release: venv nextest release build-tests
	RELAY365_BIN_DIR=$(TARGET_DIR)/release cargo nextest run --workspace --locked --no-fail-fast -E '$(E2E_RELEASE_TESTS)'

## The Python tools tests need (moto's AWS server), in a project-local virtualenv.
venv: $(STAMP)
$(STAMP): requirements-dev.txt
	python3 -m venv $(VENV)
	$(PIP) install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

fmt:
	cargo fmt --all -- --check

clippy:
	cargo clippy --workspace --all-targets --locked -- -D warnings

## No file in shared/src or functions/*/src over 700 lines, no production
## function over 120 (scripts/size_rule.py says how it counts and which lookup tables
## are exempt).
size-rule:
	python3 scripts/size_rule.py

## cargo-nextest comes with this machine kind; elsewhere it is built once into .tools/.
nextest:
	@command -v cargo-nextest >/dev/null || cargo install --locked --root $(CURDIR)/.tools cargo-nextest@0.9.143

## The debug build of every binary and every test. The system tests
## (tests/system) run the functions' binaries (RELAY365_BIN_DIR) and the
## `relay365` CLI from it; cargo builds no binary of another crate for a test.
build-tests:
	cargo build --workspace --bins --tests --locked

## Every test: the unit layer and the end-to-end tests (moto, the simulator, the binaries).
tests: venv nextest build-tests
	RELAY365_BIN_DIR=$(TARGET_DIR)/debug cargo nextest run --workspace --locked --no-fail-fast

## The unit layer alone: the tests inside each crate's src/, on fixtures
## (tests/fixtures), with secrets and state in memory; no server is started.
unit: nextest
	cargo nextest run --workspace --lib --locked --no-fail-fast

## The end-to-end tests alone (each crate's tests/ folder, and tests/system).
e2e: venv nextest build-tests
	RELAY365_BIN_DIR=$(TARGET_DIR)/debug cargo nextest run --workspace --tests --locked --no-fail-fast -E 'kind(test)'

SAM_ENV := AWS_DEFAULT_REGION=us-east-1 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test SAM_CLI_TELEMETRY=0

## template.yaml: cfn-lint, sam validate --lint, and the drift/policy checks (offline).
lint-template: venv
	$(SAM_ENV) $(VENV)/bin/cfn-lint template.yaml
	$(SAM_ENV) $(VENV)/bin/sam validate --lint
	$(VENV)/bin/python tests/template/check_template.py

## lint-template, then sam build: every function cross-compiled for arm64 (about 10 minutes cold).
check-template: lint-template build-venv
	$(SAM_ENV) $(VENV)/bin/sam build
	@for f in .aws-sam/build/*Function; do \
	  (cd $$f && zip -q -9 ../$$(basename $$f).zip bootstrap && printf '%s %s bytes bootstrap, %s bytes zip\n' "$$(basename $$f)" "$$(stat -c %s bootstrap)" "$$(stat -c %s ../$$(basename $$f).zip)"); \
	done

build-venv: $(VENV)/.build-installed
$(VENV)/.build-installed: requirements-build.txt $(STAMP)
	$(PIP) install --quiet --disable-pip-version-check -r requirements-build.txt
	touch $@

## Offline RustSec check against ../shared/advisory-db (needs cargo-deny; see docs/development.md).
deny:
	scripts/deny.sh

## Criterion benchmarks, cold starts of the release binaries, and the cold
## path over TLS at Lambda's CPU shares with the Python baseline
## (relay365-coldpath: cgroups need root, and the table says when they were
## not applied); writes BENCHMARKS.md. COLDPATH_ARGS="--reps 1" for a quick run.
COLDPATH_ARGS ?=
bench: venv
	$(PIP) install --quiet --disable-pip-version-check -r requirements-bench.txt
	$(RELEASE_BUILD)
	cargo build --locked -p relay365-demo --bin relay365-coldpath
	$(PY) scripts/coldstart.py --out BENCHMARKS.coldstart.md
	$(TARGET_DIR)/debug/relay365-coldpath --bin-dir $(TARGET_DIR)/release --python $(CURDIR)/$(PY) --out BENCHMARKS.coldpath.md $(COLDPATH_ARGS)
	python3 scripts/bench.py

## The fleet benchmark: FLEET mailboxes (default 1000; half app-only, half
## delegated, one tenant) connected through the admin API, every subscription
## renewed and swept by scheduled runs until nothing is left, a storm of mail
## (20 a second for 300 s), Graph 150 ms away, and a mailbox's month at AWS
## list prices; on the release binaries (relay365-fleet, demo/src/fleet.rs).
## Writes BENCHMARKS.fleet.md and its section of BENCHMARKS.md. FLEET_ARGS
## passes options (e.g. FLEET_ARGS="--storm-seconds 60 --tenants 4").
## FLEET_SCALE_FROM names sizes measured before (their figures are in
## target/fleet/fleet-N.json): the report extrapolates from them and this
## run to 10,000 mailboxes (e.g. `make bench-fleet FLEET=3000` first, then
## `make bench-fleet FLEET_SCALE_FROM=3000`).
FLEET ?= 1000
FLEET_ARGS ?=
FLEET_SCALE_FROM ?=
bench-fleet: venv
	$(RELEASE_BUILD)
	cargo build --locked -p relay365-demo --bin relay365-fleet
	FLEET=$(FLEET) $(TARGET_DIR)/debug/relay365-fleet --bin-dir $(TARGET_DIR)/release --out BENCHMARKS.fleet.md --work-dir $(TARGET_DIR)/fleet $(foreach n,$(FLEET_SCALE_FROM),--scale-from $(TARGET_DIR)/fleet/fleet-$(n).json) $(FLEET_ARGS)
	python3 scripts/bench.py --section BENCHMARKS.fleet.md

## The whole stack on this machine: moto, the Microsoft simulator, the five
## function binaries under a local Lambda Runtime API, an API Gateway front, the
## SQS event source, the renewal schedule and a flow receiver. Ctrl-C stops it all.
## The functions are built with the dev profile (unoptimised but for aws-lc's
## crypto: the same build `make test` uses, so either command makes the other
## one fast); `make demo PROFILE=release` runs the deploy build instead.
## DEMO_ARGS passes options (e.g. DEMO_ARGS="--verbose --api-port 8080").
PROFILE ?= dev
DEMO_BIN_DIR := $(TARGET_DIR)/$(if $(filter dev,$(PROFILE)),debug,$(PROFILE))
demo: venv
	@case "$(PROFILE)" in dev|release) ;; *) echo "PROFILE must be dev or release, not $(PROFILE)" >&2; exit 2;; esac
	cargo build --locked -p relay365-demo -p relay365-cli $(if $(filter dev,$(PROFILE)),$(addprefix -p ,$(FUNCTIONS)))
	$(if $(filter dev,$(PROFILE)),,$(RELEASE_BUILD))
	$(TARGET_DIR)/debug/relay365-demo --bin-dir $(DEMO_BIN_DIR) $(DEMO_ARGS)

## The operator CLI, optimised: target/release/relay365 (or `cargo install --locked --path cli`).
cli:
	cargo build --release --locked -p relay365-cli

## The fault-injection suite, long: CHAOS_MAILS mails (default 400) for four
## mailboxes through every fault at once (make test runs it with 48).
CHAOS_MAILS ?= 400
chaos: venv nextest
	RELAY365_CHAOS_MAILS=$(CHAOS_MAILS) cargo nextest run -p relay365-system-tests --test pipeline --locked --no-capture -E 'test(chaos)'

## Coverage-guided fuzzing (libFuzzer through cargo-fuzz) of every parser of
## outside input, FUZZ_SECONDS per target (default 60), seeds from
## tests/fixtures; prints executions per target (see RELIABILITY.md).
fuzz:
	scripts/fuzz.sh

## Proves `make test` and `make demo` on a cold machine: a fresh clone in a new
## folder with empty CARGO_HOME and target directory and a new .venv (see
## docs/development.md). COLD_DIR keeps the clone; WARM_CARGO_HOME=1 reuses
## this machine's package cache for the demo timing.
cold-check:
	scripts/cold-check.sh
