#!/usr/bin/env bash
# The API benchmark (crates/bulkhead/benches/api/): installs the load tool, oha, with cargo if
# it is missing (into ~/.cargo/bin; not part of setup.sh, since CI does not run benchmarks),
# then runs the benchmark. Needs root: it starts a daemon and 1,000 nodes. Arguments go to the
# benchmark: --quick (shorter rounds), --nodes N (default 1000).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "bench-api: run as root (sudo $0): the benchmark starts a daemon and its nodes" >&2
  exit 1
fi
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v oha >/dev/null 2>&1; then
  echo "bench-api: installing oha (cargo install oha --locked; a few minutes)" >&2
  cargo install oha --locked
fi
exec cargo bench -p bulkhead --bench api -- "$@"
