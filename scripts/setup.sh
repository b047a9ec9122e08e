#!/usr/bin/env bash
# Installs what bulkhead needs on Debian 12 (idempotent) and checks the Rust toolchain.
# Used by scripts/quickstart.sh and scripts/test.sh; safe to run on its own.
set -euo pipefail

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "bulkhead setup: run as root (sudo $0): it installs packages, and bulkhead creates namespaces and cgroups" >&2
    exit 1
  fi
}
need_root

# busybox-static: the default image. util-linux: unshare (tests run the daemon in a network
# namespace of its own). iproute2: loopback up in that namespace, tc. nftables: network rules.
# procps: pgrep in leftover checks. bubblewrap: the benchmark baseline. qemu-system-x86,
# e2fsprogs, xz-utils: microVM nodes (QEMU, node disks, the guest kernel's payload).
packages=(busybox-static util-linux procps iproute2 nftables bubblewrap curl ca-certificates gcc libc6-dev
          qemu-system-x86 e2fsprogs xz-utils)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "bulkhead setup: installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The microVM guest kernel comes from Debian's kernel package, fetched here (not installed:
# the host's boot is not touched) so that `bulkhead image build kernel` and daemons in
# network namespaces without a route out find it locally.
cache=/var/cache/bulkhead
if ! ls "$cache"/linux-image-*.deb >/dev/null 2>&1; then
  pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}')
  if [ -n "$pkg" ]; then
    echo "bulkhead setup: fetching $pkg (the microVM guest kernel)" >&2
    mkdir -p "$cache"
    (cd "$cache" && apt-get download -qq "$pkg" 2>/dev/null) || echo "bulkhead setup: could not fetch $pkg; microVM nodes need it" >&2
  fi
fi

if ! command -v cargo >/dev/null 2>&1; then
  for d in "$HOME/.cargo/bin" /usr/local/cargo/bin; do
    [ -x "$d/cargo" ] && export PATH="$d:$PATH"
  done
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "bulkhead setup: no Rust toolchain found; install Rust 1.85 or newer (rustup) and run again" >&2
  exit 1
fi
ver=$(cargo --version | awk '{print $2}')
if [ "$(printf '%s\n1.85.0\n' "$ver" | sort -V | head -1)" != "1.85.0" ]; then
  echo "bulkhead setup: cargo $ver is too old; bulkhead needs Rust 1.85 or newer" >&2
  exit 1
fi
