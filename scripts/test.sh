#!/usr/bin/env bash
# The whole test suite: unit tests and the privileged end-to-end suite, which drives the real
# bulkhead binary against the real kernel. Needs root. Leaves the machine as it found it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"

state=$(mktemp -d /tmp/bulkhead-test-state.XXXXXX)
chmod 0711 "$state"
cleanup() { rm -rf "$state"; }
trap cleanup EXIT
export BULKHEAD_E2E_STATE="$state"

cargo test --workspace --locked "$@"
