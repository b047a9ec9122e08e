#!/usr/bin/env bash
# Installs a real OpenID Connect provider for the OIDC end-to-end test
# (crates/bulkhead/tests/e2e_oidc.rs): panva's oidc-provider from npm into OUT/node_modules, with
# the test's provider script (crates/bulkhead/tests/idp/idp.mjs) beside it. Needs node and npm.
# Usage: scripts/idp-tools.sh OUT. Idempotent: node_modules is kept; the script is copied anew.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:?usage: idp-tools.sh OUT}
mkdir -p "$out"
if [ ! -f "$out/node_modules/oidc-provider/package.json" ]; then
  echo "idp-tools: installing oidc-provider into $out (npm)" >&2
  (cd "$out" && { [ -f package.json ] || echo '{"private": true}' > package.json; } &&
    npm install --no-audit --no-fund --loglevel=error oidc-provider@9.13.3 >/dev/null)
fi
cp "$root/crates/bulkhead/tests/idp/idp.mjs" "$out/"
echo "idp-tools: ready in $out" >&2
