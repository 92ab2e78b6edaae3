#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what it needs, checks format and lints, builds,
# and runs every test (unit, namespace lab, VM lab on real kernel WireGuard). Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
# A clean run leaves ~3 GB in target/ (every target, the appliance profile, the images); say
# so up front, with room for linking, rather than fail later with "No space left on device".
need_kb=$((6 * 1024 * 1024))
free_kb=$(df -Pk . | awk 'NR == 2 { print $4 }')
if ((free_kb < need_kb)); then
  echo "test: $((free_kb / 1024 / 1024)) GB free here; the suite needs about 6 GB (target/, images)" >&2
  exit 1
fi
# Incremental artifacts double target/'s size and a one-shot run never reuses them.
export CARGO_INCREMENTAL=0
cargo fmt --all --check
# The end-to-end tests run the meshgate binary, which `cargo test` alone does not rebuild.
cargo build --workspace --all-targets --locked
cargo clippy --workspace --all-targets --locked -- -D warnings
# The appliance binary leaves the coordinator, relay, demo and bench out: lint that cut too.
cargo clippy -p meshgate --no-default-features --all-targets --locked -- -D warnings
cargo test --workspace --locked
