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
# qemu-utils: qemu-img, which makes a persistent microVM's LUKS-encrypted disk (#13).
# debootstrap: `bulkhead image build debian`; skopeo, umoci: `bulkhead image import` of OCI
# layouts and archives (#15, ADR 0039).
# The containerd shim's tests (#16) need containerd, runc, the CNI plugins and protoc:
# scripts/test.sh installs them (without starting a host containerd); the quick start does not.
packages=(busybox-static util-linux procps iproute2 nftables bubblewrap curl ca-certificates gcc libc6-dev
          qemu-system-x86 qemu-utils e2fsprogs xz-utils debootstrap skopeo umoci)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "bulkhead setup: installing ${missing[*]}" >&2
  apt-get update -qq
  updated=1
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

# Rust: the workspace's rust-version or newer. A cargo on PATH or in ~/.cargo/bin (rustup) is
# used when it is new enough. With none, Debian 12's own toolchain is installed from the Debian
# mirror: rustc-web and cargo-web (/usr/bin/rustc, /usr/bin/cargo; 1.85 in bookworm, newer in
# bookworm-security). With libc6-dev (above) it links the static binaries .cargo/config.toml asks for.
root=$(cd "$(dirname "$0")/.." && pwd)
rust_min=$(sed -n 's/^rust-version *= *"\(.*\)"/\1/p' "$root/Cargo.toml")
rust_min=${rust_min:-1.85}
new_enough() { [ "$(printf '%s\n%s\n' "$1" "$rust_min" | sort -V | head -1)" = "$rust_min" ]; }
cargo_version() { cargo --version 2>/dev/null | awk '{print $2}'; }

if ! command -v cargo >/dev/null 2>&1; then
  for d in "$HOME/.cargo/bin" /usr/local/cargo/bin; do
    [ -x "$d/cargo" ] && export PATH="$d:$PATH"
  done
fi
if command -v cargo >/dev/null 2>&1 && ! new_enough "$(cargo_version)"; then
  found=$(command -v cargo)
  # Debian's own older rustc/cargo packages are replaced below; anything else is the
  # operator's to update, not ours to shadow.
  if ! dpkg -S "$(readlink -f "$found")" >/dev/null 2>&1; then
    echo "bulkhead setup: $found is cargo $(cargo_version); bulkhead needs Rust $rust_min or newer:" \
      "update it (rustup update stable) or remove it, and setup will install Debian's toolchain" >&2
    exit 1
  fi
fi
if ! command -v cargo >/dev/null 2>&1 || ! new_enough "$(cargo_version)"; then
  echo "bulkhead setup: no Rust $rust_min or newer found; installing Debian's toolchain" \
    "(rustc-web, cargo-web: /usr/bin/rustc, /usr/bin/cargo; they replace Debian's older rustc/cargo packages)" >&2
  [ -n "${updated:-}" ] || apt-get update -qq
  cand=$(apt-cache policy cargo-web 2>/dev/null | awk '/Candidate:/ {print $2}')
  if [ -z "$cand" ] || [ "$cand" = "(none)" ]; then
    echo "bulkhead setup: the Debian mirror offers no cargo-web: check that /etc/apt/sources.list*" \
      "carry bookworm main (and bookworm-security), or install Rust $rust_min or newer with rustup" >&2
    exit 1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends rustc-web cargo-web >/dev/null
  hash -r
fi
ver=$(cargo_version)
if ! new_enough "$ver"; then
  echo "bulkhead setup: cargo $ver ($(command -v cargo)) is too old; bulkhead needs Rust $rust_min or newer:" \
    "enable bookworm-security (http://deb.debian.org/debian-security) in /etc/apt/sources.list* and run again," \
    "or install a newer toolchain with rustup" >&2
  exit 1
fi
echo "bulkhead setup: using cargo $ver ($(command -v cargo))" >&2
