#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets) for FUZZ_SECONDS each (default
# 60), starting from seeds made from tests/fixtures, and prints one row per
# target: executions, seconds, and the crash file if one was found.
#
#   make fuzz                                   # every target, 60 s each
#   FUZZ_SECONDS=900 make fuzz                  # a long run
#   FUZZ_TARGETS="retry_after pfx" make fuzz    # some targets
#   FUZZ_JOBS=2 make fuzz                       # two targets at a time
#   FUZZ_SECONDS_oauth_callback=900 make fuzz   # one target longer
#
# cargo-fuzz drives libFuzzer through rustc flags that stable Rust accepts
# with RUSTC_BOOTSTRAP=1. The targets build without a sanitizer (the code
# forbids unsafe) but with debug assertions, so an overflow is a crash too.
# The corpus grows in fuzz/corpus/<target>; crashes land in fuzz/artifacts.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SECONDS_EACH=${FUZZ_SECONDS:-60}
export PATH="$ROOT/.tools/bin:$PATH"
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || cargo install --locked --root "$ROOT/.tools" cargo-fuzz@0.13.2
TARGETS=${FUZZ_TARGETS:-$(cd fuzz && cargo fuzz list)}
python3 scripts/fuzz-seeds.py fuzz/seeds
(cd fuzz && cargo fuzz build -s none --debug-assertions)
BIN=fuzz/target/x86_64-unknown-linux-gnu/release
mkdir -p fuzz/logs fuzz/artifacts
SUMMARY=fuzz/logs/summary.md
{
  echo "| target | executions | seconds | result |"
  echo "| --- | ---: | ---: | --- |"
} > "$SUMMARY"
run_one() {
  t=$1
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  log="fuzz/logs/$t.log"
  secs_var="FUZZ_SECONDS_$t"
  secs_each=${!secs_var:-$SECONDS_EACH}
  set +e
  "$BIN/$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -artifact_prefix="fuzz/artifacts/$t/" \
    -max_total_time="$secs_each" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1
  rc=$?
  set -e
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1 || true)
  secs=$(grep -o 'Done [0-9]* runs in [0-9]* second' "$log" | grep -o '[0-9]* second' | grep -o '[0-9]*' | tail -1 || true)
  if [ "$rc" = 0 ]; then
    result=ok
  else
    result="crash: $(ls -t "fuzz/artifacts/$t" | head -1) (see $log)"
  fi
  printf '| %s | %s | %s | %s |\n' "$t" "${execs:-?}" "${secs:-$secs_each}" "$result" | tee -a "$SUMMARY"
}
export -f run_one
export BIN SUMMARY SECONDS_EACH
# shellcheck disable=SC2086
printf '%s\n' $TARGETS | xargs -P "${FUZZ_JOBS:-1}" -I{} bash -c 'set -euo pipefail; run_one {}'
failed=0
grep -q '| crash:' "$SUMMARY" && failed=1
echo "summary: $SUMMARY"
exit $failed
