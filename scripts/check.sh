#!/usr/bin/env bash
# Everything a contributor runs before pushing: format, lints, then the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
if cargo deny --version >/dev/null 2>&1; then
  cargo deny check licenses bans sources
else
  echo "check: cargo-deny not installed (cargo install cargo-deny); licence check skipped" >&2
fi
scripts/test.sh
