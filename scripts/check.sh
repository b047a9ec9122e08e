#!/usr/bin/env bash
# Everything a contributor runs before pushing: format, lints, then the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
scripts/test.sh
