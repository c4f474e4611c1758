#!/usr/bin/env bash
# Proves the two commands on a cold machine without a second machine: a fresh
# clone of the committed HEAD in a new folder (with ../shared beside it, as CI
# lays it out), an empty CARGO_HOME, an empty target directory and a new .venv;
# then `make test`, then `make demo` until it prints its walk-through.
#
#   scripts/cold-check.sh                 # both steps, everything cold
#   COLD_STEPS=demo scripts/cold-check.sh # only the demo timing
#   WARM_CARGO_HOME=1 ...                 # reuse this machine's package cache
#   COLD_DIR=/tmp/x ...                   # where to clone (the clone and logs are kept)
#   COLD_KEEP=1 ...                       # keep the target dir and CARGO_HOME too
#   DEMO_PROFILE=release ...              # time the deploy build of the demo
#
# Prints the wall time of each step and leaves the logs in $COLD_DIR.
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
DIR=${COLD_DIR:-$(mktemp -d /tmp/relay365-cold.XXXXXX)}
STEPS=${COLD_STEPS:-test demo}
mkdir -p "$DIR"
if [ -n "$(git -C "$SRC" status --porcelain --untracked-files=no)" ]; then
  echo "cold-check: $SRC has uncommitted changes; the check clones the committed HEAD only" >&2
fi
rm -rf "$DIR/main"
git clone --quiet "$SRC" "$DIR/main"
if [ -d "$SRC/../shared" ] && [ ! -e "$DIR/shared" ]; then
  cp -r "$SRC/../shared" "$DIR/shared"
fi
if [ "${WARM_CARGO_HOME:-0}" = 1 ]; then
  export CARGO_HOME=${CARGO_HOME:-$HOME/.cargo}
else
  rm -rf "$DIR/cargo-home" && mkdir -p "$DIR/cargo-home"
  export CARGO_HOME=$DIR/cargo-home
fi
# rustup's proxies find the toolchain through RUSTUP_HOME, not CARGO_HOME.
export RUSTUP_HOME=${RUSTUP_HOME:-$HOME/.rustup}
export CARGO_TARGET_DIR=$DIR/target
rm -rf "$CARGO_TARGET_DIR"
# Nothing of this machine's project settings may leak in.
for v in $(env | grep -o '^RELAY365_[A-Z_]*' || true); do unset "$v"; done
export CI=true
cd "$DIR/main"
echo "cold-check: clone $DIR/main, CARGO_HOME=$CARGO_HOME, CARGO_TARGET_DIR=$CARGO_TARGET_DIR"

status=0
if [[ " $STEPS " == *" test "* ]]; then
  start=$(date +%s)
  if make test </dev/null >"$DIR/make-test.log" 2>&1; then result=passed; else result=FAILED; status=1; fi
  echo "cold-check: make test $result in $(( $(date +%s) - start )) s (log: $DIR/make-test.log)"
  grep -E '^ +Summary|tests? run:|[0-9]+ passed' "$DIR/make-test.log" | tail -3 || true
fi

if [[ " $STEPS " == *" demo "* ]]; then
  # The demo's own timing starts from an empty target directory too.
  rm -rf "$CARGO_TARGET_DIR"
  start=$(date +%s)
  log=$DIR/make-demo.log
  : >"$log"
  # Free ports, so a demo already running on this machine does not clash.
  args="--api-port 19365 --sim-port 19366 --receiver-port 19367"
  setsid make demo PROFILE="${DEMO_PROFILE:-dev}" DEMO_ARGS="$args" </dev/null >"$log" 2>&1 &
  pid=$!
  result=FAILED
  # Bounded: a cold build may take a while, but never this long.
  for _ in $(seq 1 1800); do
    if grep -q 'relay365 demo: ready in' "$log"; then result=ready; break; fi
    if ! kill -0 "$pid" 2>/dev/null; then break; fi
    sleep 1
  done
  took=$(( $(date +%s) - start ))
  kill -INT -- "-$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  echo "cold-check: make demo (PROFILE=${DEMO_PROFILE:-dev}) $result: walk-through after $took s (log: $log)"
  [ "$result" = ready ] || status=1
fi
# The build is gigabytes; the logs are what the check leaves (COLD_KEEP=1 keeps all).
if [ "${COLD_KEEP:-0}" != 1 ]; then
  rm -rf "$CARGO_TARGET_DIR"
  [ "${WARM_CARGO_HOME:-0}" = 1 ] || rm -rf "$DIR/cargo-home"
fi
exit $status
