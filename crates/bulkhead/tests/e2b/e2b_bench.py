"""Times E2B's Python SDK from `Sandbox.create()` to the first output of `commands.run` (issue
#15's benchmark), for crates/bulkhead/benches/e2b.rs, which runs it inside the daemon's network
namespace with E2B_API_KEY, E2B_API_URL and E2B_SANDBOX_URL set, and E2BBENCH_TEMPLATE and
E2BBENCH_N. Each sample: create, run `echo hi` until its first stdout chunk arrives (the
sample ends there), then kill (not timed). Prints {"samples_ms": [...], "create_ms": [...]}
on one line (`create_ms`: the part until `Sandbox.create()` returned; `again_ms`: a second
`commands.run` in the same sandbox to its first output, outside the sample).
"""

import json
import os
import time

from e2b import Sandbox

TEMPLATE = os.environ["E2BBENCH_TEMPLATE"]
N = int(os.environ.get("E2BBENCH_N", "10"))


def one():
    first = []
    t0 = time.perf_counter()
    s = Sandbox.create(template=TEMPLATE, timeout=120)
    creates.append((time.perf_counter() - t0) * 1000.0)
    try:
        s.commands.run("echo hi", on_stdout=lambda _: first or first.append(time.perf_counter()))
        if not first:
            raise SystemExit("no stdout from `echo hi`")
        # Not part of the sample: a second command in the same sandbox (connections warm).
        again = []
        t1 = time.perf_counter()
        s.commands.run("echo again", on_stdout=lambda _: again or again.append(time.perf_counter()))
        agains.append((again[0] - t1) * 1000.0)
        return (first[0] - t0) * 1000.0
    finally:
        s.kill()


creates = []
agains = []
samples = [one() for _ in range(N)]
print(json.dumps({"samples_ms": samples, "create_ms": creates, "again_ms": agains}), flush=True)
