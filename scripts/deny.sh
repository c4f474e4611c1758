#!/usr/bin/env bash
# Checks the dependency tree against the RustSec advisory snapshot in
# ../shared/advisory-db, offline. cargo-deny comes from .venv (a prebuilt
# binary from PyPI, requirements-dev.txt); without it, it is built once per
# machine into a cache outside the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
DB_SRC=${RELAY365_ADVISORY_DB:-../shared/advisory-db}
if [ ! -d "$DB_SRC/crates" ]; then
  # In CI the snapshot is always laid beside the checkout: its absence is a fault, not a skip.
  if [ -n "${CI:-}" ]; then
    echo "deny: no advisory snapshot at $DB_SRC (CI expects ../shared/advisory-db beside the checkout)" >&2
    exit 1
  fi
  echo "deny: no advisory snapshot at $DB_SRC; skipping (set RELAY365_ADVISORY_DB)" >&2
  exit 0
fi
# .venv/bin (requirements-dev.txt) comes first on make's PATH.
DENY=$(command -v cargo-deny || true)
if [ -z "$DENY" ]; then
  TOOLS=${RELAY365_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/relay365-tools}
  DENY=$TOOLS/bin/cargo-deny
  if [ ! -x "$DENY" ]; then
    echo "deny: installing cargo-deny into $TOOLS (once per machine, about 5 minutes)" >&2
    cargo install --quiet --locked --root "$TOOLS" cargo-deny@0.20.2
  fi
fi
# cargo-deny wants the database as a git repository in db-path/<name>-<hash>;
# it names the folder after the URL, so let it tell us by a dry run of the path.
DB_ROOT=target/advisory-dbs
rm -rf "$DB_ROOT" && mkdir -p "$DB_ROOT"
DB_DIR="$DB_ROOT/advisory-db-3157b0e258782691"
cp -r "$DB_SRC" "$DB_DIR"
(cd "$DB_DIR" && git init -q && git add -A && git -c user.name=relay365 -c user.email=ci@relay365.invalid commit -qm snapshot)
cargo fetch --locked --quiet
"$DENY" --offline check advisories bans sources
# The fuzz targets have their own workspace and lockfile: the same check.
cargo fetch --locked --quiet --manifest-path fuzz/Cargo.toml
"$DENY" --offline --manifest-path fuzz/Cargo.toml check advisories bans sources 2>&1 | sed "s/^/fuzz: /"
