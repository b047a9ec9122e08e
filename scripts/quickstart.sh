#!/usr/bin/env bash
# Quick start: installs what is needed, builds bulkhead, starts a daemon for the tenant "demo"
# (building the minimal image from busybox-static on first use), creates a node and runs a
# command in it. The daemon keeps running; `scripts/quickstart.sh stop` stops it and deletes
# its nodes.
set -euo pipefail
cd "$(dirname "$0")/.."
run=/run/bulkhead
sock=$run/demo.sock
pidfile=$run/demo.pid

if [ "${1:-}" = "stop" ]; then
  if [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null; then
    while kill -0 "$(cat "$pidfile")" 2>/dev/null; do sleep 0.1; done
    rm -f "$pidfile"
    echo "stopped the demo daemon and deleted its nodes"
  else
    echo "no demo daemon running"
  fi
  exit 0
fi

scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
echo "==> building bulkhead (release)"
cargo build --release --locked -q
bin=target/x86_64-unknown-linux-gnu/release
install -m 0755 "$bin/bulkhead" "$bin/bulkhead-agent" "$bin/bulkhead-supervisor" /usr/local/bin/

mkdir -p "$run" /etc/bulkhead
bulkhead new demo --socket "$sock" > /etc/bulkhead/demo.yaml
if [ -S "$sock" ] && curl -sf --unix-socket "$sock" http://localhost/healthz >/dev/null; then
  echo "==> the demo daemon is already running"
else
  echo "==> starting the daemon for tenant demo (log: $run/demo.log)"
  nohup bulkhead up /etc/bulkhead/demo.yaml >"$run/demo.log" 2>&1 &
  echo $! > "$pidfile"
  for _ in $(seq 300); do
    curl -sf --unix-socket "$sock" http://localhost/healthz >/dev/null 2>&1 && break
    sleep 0.1
  done
fi
echo "==> creating a node"
curl -sf --unix-socket "$sock" -X POST 'http://localhost/hostgroup/demo/nodes?wait=agent' \
  -d '{"tags":["user=alice"]}'
echo
node=$(bulkhead vm list --socket "$sock" --json | sed -n 's/.*"hostname": "\(.*\)".*/\1/p' | tail -1)
echo "==> running a command in $node"
bulkhead vm exec --socket "$sock" "$node" -- sh -c 'echo "hello from $(hostname), uid $(id -u) in here"; uname -sr'
cat <<TXT

Done. Try:
  bulkhead vm list --socket $sock
  bulkhead vm exec --socket $sock $node -- sh -c 'ls /'
  bulkhead vm cp --socket $sock ./README.md $node:/work/README.md
  bulkhead vm delete --socket $sock $node
Stop the daemon (and delete its nodes): scripts/quickstart.sh stop
TXT
