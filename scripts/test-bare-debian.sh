#!/usr/bin/env bash
# Proves the quick start's set-up on a bare Debian 12: debootstraps a minimal bookworm into a
# throwaway directory from the host's own Debian mirror, copies the repository in (tracked and
# new files, never target/), and in a chroot without the host's toolchain runs scripts/setup.sh
# (which must install Debian's Rust toolchain) and then builds the workspace with it, checking
# that the binaries are static and run. Crates come from crates.io over the host's network.
# Needs root. Every mount and the directory go away at the end, on failure too.
#
# Cached between runs under /var/cache/bulkhead/bare-debian (a fresh machine fills it): the
# debootstrap packages and the chroot's apt archives. Nothing Rust-related is cached.
# shellcheck disable=SC2016 # the scripts given to in_chroot expand inside the chroot
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
say() { echo "==> bare Debian 12: $*"; }
start=$(date +%s)

if [ "$(id -u)" -ne 0 ]; then
  echo "test-bare-debian: run as root: it debootstraps, mounts and chroots" >&2
  exit 1
fi
# The mounts live in a private mount namespace of this script's own: the host never sees them
# (none propagates to /dev/pts on a shared /), and they die with it even if it is killed.
if [ -z "${BULKHEAD_BARE_DEBIAN_NS:-}" ]; then
  exec unshare --mount --propagation private env BULKHEAD_BARE_DEBIAN_NS=1 "$repo/scripts/test-bare-debian.sh" "$@"
fi

# The mirror the host uses for bookworm (deb822 .sources or one-line .list), and its security
# archive; Debian's own addresses when the host names none.
apt_uris() { # $1: suite; prints the URIs that serve it, one a line
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk -v s="$1" '$1 == "deb" { u = ""
        for (i = 2; i <= NF; i++) {
          if ($i ~ /^\[/) { while (i < NF && $i !~ /\]$/) i++; continue }
          if (u == "") { u = $i; continue }
          if ($i == s) print u
          break } }' "$f"
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v s="$1" 'function words(line) { sub(/^[A-Za-z-]+:/, "", line); line = " " line " "
                                           gsub(/[ \t]+/, " ", line); return line }
      BEGIN { RS = ""; FS = "\n" } {
        types = ""; uris = ""; suites = ""; off = 0
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^Types:/) types = words($i)
          if ($i ~ /^URIs:/) uris = words($i)
          if ($i ~ /^Suites:/) suites = words($i)
          if ($i ~ /^Enabled:[ \t]*no/) off = 1
        }
        if (!off && index(types, " deb ") && index(suites, " " s " ")) { split(uris, u, " "); print u[1] } }' "$f"
  done
}
mirror=$(apt_uris bookworm | head -1)
mirror=${mirror:-http://deb.debian.org/debian}
security=$(apt_uris bookworm-security | head -1)
security=${security:-http://deb.debian.org/debian-security}

if ! command -v debootstrap >/dev/null 2>&1; then
  say "installing debootstrap"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi

cache=/var/cache/bulkhead/bare-debian
mkdir -p "$cache/debs" "$cache/apt-archives/partial"
dir=$(mktemp -d /var/tmp/bulkhead-bare-debian.XXXXXX)
chmod 0755 "$dir" # the chroot's /: apt's sandbox user must get through it
mounts=()

cleanup() {
  local rc=$? m i pid
  # Anything still running inside the chroot was started by this script.
  for pid in /proc/[0-9]*; do
    if [ "$(readlink "$pid/root" 2>/dev/null)" = "$dir" ]; then
      kill -9 "${pid#/proc/}" 2>/dev/null || true
    fi
  done
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
    m=${mounts[$i]}
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || echo "test-bare-debian: could not unmount $m" >&2
  done
  # A bind mount of the same file system would not stop rm --one-file-system: remove the
  # directory only when nothing is mounted under it any more.
  if findmnt -rn -o TARGET | grep -q "^$dir\(/\|$\)"; then
    echo "test-bare-debian: mounts left under $dir; not removing it:" >&2
    findmnt -rn -o TARGET | grep "^$dir" >&2
    rc=1
  else
    rm -rf --one-file-system "$dir"
  fi
  echo "==> bare Debian 12: took $(( $(date +%s) - start ))s" >&2
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mnt() { # mount ARGS... TARGET, remembered for cleanup
  mount "$@"
  mounts+=("${!#}")
}

say "debootstrap bookworm (minbase) from $mirror into $dir"
debootstrap --variant=minbase --cache-dir="$cache/debs" bookworm "$dir" "$mirror" >"$cache/debootstrap.log" 2>&1 || {
  tail -20 "$cache/debootstrap.log" >&2
  exit 1
}

# What Debian's installer writes: the release, its updates and security suites.
cat >"$dir/etc/apt/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb $security bookworm-security main
EOF
cp -L /etc/resolv.conf "$dir/etc/resolv.conf"
# The chroot uses the host's network, so it takes the local CAs the host's administrator added
# for it (a TLS-inspecting egress proxy, say); ca-certificates picks them up when setup.sh
# installs it. Debian's own CAs and nothing else come from the package.
if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
  mkdir -p "$dir/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$dir/usr/local/share/ca-certificates/"
fi
# Package scripts must not start services in the chroot.
printf '#!/bin/sh\nexit 101\n' >"$dir/usr/sbin/policy-rc.d"
chmod 0755 "$dir/usr/sbin/policy-rc.d"

mkdir -p "$dir/src"
if git -C "$repo" rev-parse --git-dir >/dev/null 2>&1; then
  git -C "$repo" ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
    tar -C "$repo" --null -T - -cf - | tar -C "$dir/src" -xf -
else
  tar -C "$repo" --exclude=./target --exclude=./.git -cf - . | tar -C "$dir/src" -xf -
fi
[ -e "$dir/src/target" ] && { echo "test-bare-debian: target/ was copied in" >&2; exit 1; }

mnt -t proc proc "$dir/proc"
mnt -t sysfs sysfs "$dir/sys"
mnt --bind /dev "$dir/dev"
mnt --bind /dev/pts "$dir/dev/pts"
mnt --bind "$cache/apt-archives" "$dir/var/cache/apt/archives"

in_chroot() {
  chroot "$dir" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    /bin/bash -euo pipefail -c "$1"
}

in_chroot '[ ! -e /root/.cargo ] && ! command -v cargo >/dev/null' || {
  echo "test-bare-debian: the chroot is not bare: it has a cargo" >&2
  exit 1
}

say "scripts/setup.sh"
t=$(date +%s)
in_chroot 'cd /src && scripts/setup.sh'
say "set-up took $(( $(date +%s) - t ))s"

in_chroot '
  c=$(command -v cargo)
  [ "$c" = /usr/bin/cargo ] || { echo "cargo is $c, not Debian'\''s /usr/bin/cargo" >&2; exit 1; }
  echo "==> bare Debian 12: toolchain $(dpkg -S /usr/bin/cargo | cut -d: -f1) $(cargo --version), $(rustc --version)"'

say "cargo build --workspace --locked (Debian's toolchain, crates from crates.io)"
t=$(date +%s)
in_chroot 'cd /src && cargo build --workspace --locked -q'
say "build took $(( $(date +%s) - t ))s"

in_chroot '
  cd /src/target/x86_64-unknown-linux-gnu/debug
  for b in bulkhead bulkhead-agent bulkhead-supervisor; do
    [ -x "$b" ] || { echo "$b was not built" >&2; exit 1; }
    if readelf -lW "$b" | grep -q INTERP || readelf -d "$b" | grep -q NEEDED; then
      echo "$b is not a static binary" >&2; exit 1
    fi
  done
  ./bulkhead --version'

say "ok: setup.sh installed Debian's Rust toolchain on a bare bookworm and it built static binaries"
