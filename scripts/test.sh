#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what it needs, checks format and lints, builds,
# and runs every test (unit, namespace lab, VM lab on real kernel WireGuard). Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
cargo fmt --all --check
# The end-to-end tests run the meshgate binary, which `cargo test` alone does not rebuild.
cargo build --workspace --all-targets --locked
cargo clippy --workspace --all-targets --locked -- -D warnings
# The appliance binary leaves the coordinator, relay, demo and bench out: lint that cut too.
cargo clippy -p meshgate --no-default-features --all-targets --locked -- -D warnings
cargo test --workspace --locked
