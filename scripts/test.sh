#!/usr/bin/env bash
# The whole test suite: unit tests and the privileged end-to-end suite, which drives the real
# bulkhead binary against the real kernel. Needs root. Leaves the machine as it found it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"

state=$(mktemp -d /tmp/bulkhead-test-state.XXXXXX)
chmod 0711 "$state"
# The uid range registry is host-wide; remove it only if nothing else holds a range.
cleanup() { rm -rf "$state"; rmdir /run/bulkhead/uid-ranges /run/bulkhead 2>/dev/null || true; }
trap cleanup EXIT
export BULKHEAD_E2E_STATE="$state"

cargo test --workspace --locked "$@"
