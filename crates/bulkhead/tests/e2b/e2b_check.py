"""E2B's official Python SDK (`e2b` from PyPI) against a bulkhead daemon (issue #15).

Run by crates/bulkhead/tests/e2e_e2b_sdk.rs inside the daemon's network namespace, with the
SDK configured only through its documented settings: E2B_API_KEY, E2B_API_URL and
E2B_SANDBOX_URL (the test sets them). The test also passes:
  E2BCHECK_TEMPLATE  a template id of tenant A (its host group)
  E2BCHECK_KEY_B     a key of tenant B (isolation)
  E2BCHECK_KEY_C     a key of tenant C, whose lifecycle rate limit is 1/s, burst 1
  E2BCHECK_RUN       a word unique to this run (metadata filters)

Prints one JSON line per check: {"name", "ok", "detail"}. Every check runs even when one
before it failed; the last line is the check named "done". Nothing here changes the SDK:
everything is a public call with the SDK's own options.
"""

import json
import os
import sys
import time
import traceback

from e2b import (
    AuthenticationException,
    CommandExitException,
    FileNotFoundException,
    FileType,
    FilesystemEventType,
    NotFoundException,
    RateLimitException,
    Sandbox,
    SandboxException,
    SandboxQuery,
    SandboxState,
    TimeoutException,
)

TEMPLATE = os.environ["E2BCHECK_TEMPLATE"]
KEY_B = os.environ["E2BCHECK_KEY_B"]
KEY_C = os.environ["E2BCHECK_KEY_C"]
RUN = os.environ.get("E2BCHECK_RUN", "run")
ONLY = [n for n in os.environ.get("E2BCHECK_ONLY", "").split(",") if n]

state = {}
created = []
CHECKS = []


def emit(name, ok, detail=""):
    print(json.dumps({"name": name, "ok": bool(ok), "detail": str(detail)[:2000]}), flush=True)


class CheckFailed(Exception):
    pass


def expect(cond, msg):
    if not cond:
        raise CheckFailed(msg)


def raises(exc_types, fn, what):
    """Calls fn, which must raise one of exc_types; returns the exception."""
    try:
        v = fn()
    except exc_types as e:
        return e
    except Exception as e:  # the wrong type
        raise CheckFailed(f"{what}: expected {exc_types}, got {type(e).__name__}: {e}")
    raise CheckFailed(f"{what}: expected {exc_types}, returned {v!r}")


def check(name):
    def wrap(fn):
        def run():
            if ONLY and name not in ONLY and not any(name.startswith(o + ".") for o in ONLY):
                return
            try:
                detail = fn()
                emit(name, True, detail or "")
            except CheckFailed as e:
                emit(name, False, e)
            except Exception as e:
                emit(name, False, f"{type(e).__name__}: {e} | {traceback.format_exc(limit=3)}")

        CHECKS.append(run)
        return run

    return wrap


def sbx():
    s = state.get("sbx")
    if s is None:
        raise CheckFailed("no sandbox: `create` failed")
    return s


def make(**kw):
    s = Sandbox.create(**kw)
    created.append(s.sandbox_id)
    return s


def gone(sandbox_id, api_key=None):
    """Whether the control plane says the sandbox does not exist."""
    try:
        Sandbox.get_info(sandbox_id, **({"api_key": api_key} if api_key else {}))
        return False
    except NotFoundException:
        return True


# ---- create ----


@check("create")
def _():
    t0 = time.time()
    s = make(
        template=TEMPLATE,
        timeout=600,
        metadata={"suite": RUN, "role": "main"},
        envs={"SBX_DEFAULT": "from-create"},
    )
    state["sbx"] = s
    expect(s.sandbox_id, "Sandbox.create returned no sandbox_id")
    info = s.get_info()
    expect(info.sandbox_id == s.sandbox_id, f"get_info names another sandbox: {info}")
    expect(info.metadata.get("suite") == RUN and info.metadata.get("role") == "main",
           f"metadata not kept: {info.metadata}")
    expect(info.state == SandboxState.RUNNING, f"state after create: {info.state}")
    expect(info.template_id, f"no template id in get_info: {info}")
    left = info.end_at.timestamp() - t0
    expect(500 < left < 700, f"end_at is not ~600 s after create: {left:.0f} s")
    expect(s.is_running(), "is_running() is False right after create")
    return f"{s.sandbox_id} template {info.template_id} envd {info.envd_version}"


@check("create.default_template")
def _():
    # The SDKs' default template (`base`) is the tenant's first host group.
    s = make(timeout=120)
    r = s.commands.run("echo base")
    expect(r.stdout == "base\n", f"stdout {r.stdout!r}")
    expect(Sandbox.kill(s.sandbox_id), "kill of the base sandbox answered False")
    return s.sandbox_id


# ---- commands ----


@check("run.output")
def _():
    r = sbx().commands.run("echo hello; echo oops >&2")
    expect(r.exit_code == 0, f"exit code {r.exit_code}")
    expect(r.stdout == "hello\n", f"stdout {r.stdout!r}")
    expect(r.stderr == "oops\n", f"stderr {r.stderr!r}")
    seen = []
    sbx().commands.run("echo a; echo b", on_stdout=seen.append)
    expect("".join(seen) == "a\nb\n", f"on_stdout got {seen!r}")


@check("run.exit_code")
def _():
    e = raises(CommandExitException, lambda: sbx().commands.run("echo out; echo err >&2; exit 3"),
               "commands.run('exit 3')")
    expect(e.exit_code == 3, f"CommandExitException.exit_code {e.exit_code}")
    expect(e.stdout == "out\n" and e.stderr == "err\n", f"stdout {e.stdout!r} stderr {e.stderr!r}")


@check("run.env")
def _():
    r = sbx().commands.run('echo "$FOO:$SBX_DEFAULT"', envs={"FOO": "bar"})
    expect(r.stdout == "bar:from-create\n",
           f"request env FOO and the sandbox's default env SBX_DEFAULT: {r.stdout!r}")
    r = sbx().commands.run('echo "$SBX_DEFAULT"', envs={"SBX_DEFAULT": "overridden"})
    expect(r.stdout == "overridden\n", f"request env does not override the default: {r.stdout!r}")


@check("run.cwd")
def _():
    r = sbx().commands.run("pwd", cwd="/tmp")
    expect(r.stdout == "/tmp\n", f"pwd in cwd=/tmp: {r.stdout!r}")
    e = raises((SandboxException,), lambda: sbx().commands.run("pwd", cwd="/no/such/dir"),
               "a cwd that does not exist")
    return f"missing cwd: {type(e).__name__}"


@check("run.user")
def _():
    r = sbx().commands.run("id -u; id -un", user="root")
    expect(r.stdout == "0\nroot\n", f"user=root: {r.stdout!r}")
    r = sbx().commands.run("id -u; id -g; echo $HOME", user="user")
    expect(r.stdout == "1000\n1000\n/home/user\n", f"user=user: {r.stdout!r}")
    r = sbx().commands.run("id -un")
    return f"default user: {r.stdout.strip()}"


@check("run.timeout")
def _():
    t = time.time()
    raises(TimeoutException, lambda: sbx().commands.run("sleep 60", timeout=2),
           "commands.run('sleep 60', timeout=2)")
    took = time.time() - t
    expect(took < 20, f"the timeout took {took:.1f} s")
    return f"{took:.1f} s"


@check("run.background")
def _():
    s = sbx()
    h = s.commands.run("echo ready; read x; echo got:$x; sleep 600", background=True, stdin=True)
    expect(h.pid > 0, f"pid {h.pid}")
    it = iter(h)
    out = ""
    deadline = time.time() + 30
    while "ready" not in out:
        expect(time.time() < deadline, f"no streamed 'ready' within 30 s: {out!r}")
        o, _, _ = next(it)
        out += o or ""
    # The process is still running (it waits for stdin): the output was streamed.
    pids = [p.pid for p in s.commands.list()]
    expect(h.pid in pids, f"commands.list() {pids} lacks the running pid {h.pid}")
    s.commands.send_stdin(h.pid, "ping\n")
    while "got:ping" not in out:
        expect(time.time() < deadline, f"no 'got:ping' after send_stdin: {out!r}")
        o, _, _ = next(it)
        out += o or ""
    expect(s.commands.kill(h.pid), "commands.kill(pid) answered False")
    e = raises(CommandExitException, h.wait, "wait() on a killed command")
    expect(e.exit_code != 0, f"a killed command's exit code {e.exit_code}")
    pids = [p.pid for p in s.commands.list()]
    expect(h.pid not in pids, f"killed pid {h.pid} still listed: {pids}")
    expect(not s.commands.kill(h.pid), "kill of a finished pid answered True")
    return f"pid {h.pid}, exit {e.exit_code}, error {e.error!r}"


@check("run.connect")
def _():
    s = sbx()
    h = s.commands.run("sleep 1; echo later", background=True)
    h2 = s.commands.connect(h.pid)
    r = h2.wait()
    expect(r.stdout.endswith("later\n"), f"connect(pid).wait() stdout {r.stdout!r}")


# ---- files ----

D = "/tmp/e2bcheck"


@check("files.write_read")
def _():
    s = sbx()
    w = s.files.write(f"{D}/hello.txt", "hello world")
    expect(w.path == f"{D}/hello.txt", f"WriteInfo.path {w.path}")
    expect(s.files.read(f"{D}/hello.txt") == "hello world", "read back differs")
    blob = bytes(range(256)) * 4096  # 1 MiB, every byte value
    s.files.write(f"{D}/blob.bin", blob)
    back = s.files.read(f"{D}/blob.bin", format="bytes")
    expect(bytes(back) == blob, f"1 MiB binary read back differs ({len(back)} bytes)")
    r = s.commands.run(f"cat {D}/hello.txt; echo; stat -c %U {D}/hello.txt")
    expect(r.stdout.startswith("hello world"), f"the file seen by a command: {r.stdout!r}")
    raises(FileNotFoundException, lambda: s.files.read(f"{D}/nope.txt"), "read of a missing file")
    return f"owner {r.stdout.split()[-1]}"


@check("files.make_dir")
def _():
    s = sbx()
    expect(s.files.make_dir(f"{D}/sub/deeper") is True, "make_dir answered not True")
    expect(s.files.make_dir(f"{D}/sub/deeper") is False, "make_dir of an existing dir not False")


@check("files.list")
def _():
    s = sbx()
    s.files.write(f"{D}/sub/f.txt", "x")
    entries = {e.name: e for e in s.files.list(f"{D}/sub")}
    expect(set(entries) == {"deeper", "f.txt"}, f"list names: {sorted(entries)}")
    expect(entries["deeper"].type == FileType.DIR, f"deeper is {entries['deeper'].type}")
    expect(entries["f.txt"].type == FileType.FILE and entries["f.txt"].size == 1,
           f"f.txt: {entries['f.txt']}")
    expect(entries["f.txt"].path == f"{D}/sub/f.txt", f"path {entries['f.txt'].path}")
    deep = {e.path for e in s.files.list(D, depth=2)}
    expect(f"{D}/sub/f.txt" in deep, f"depth=2 listing lacks sub/f.txt: {sorted(deep)}")
    raises(FileNotFoundException, lambda: s.files.list(f"{D}/none"), "list of a missing dir")


@check("files.exists_remove")
def _():
    s = sbx()
    s.files.write(f"{D}/gone.txt", "bye")
    expect(s.files.exists(f"{D}/gone.txt"), "exists() False for a written file")
    expect(not s.files.exists(f"{D}/never.txt"), "exists() True for a missing file")
    s.files.remove(f"{D}/gone.txt")
    expect(not s.files.exists(f"{D}/gone.txt"), "exists() True after remove()")
    s.files.remove(f"{D}/sub")
    expect(not s.files.exists(f"{D}/sub"), "a directory survived remove()")


@check("files.rename")
def _():
    s = sbx()
    s.files.write(f"{D}/a.txt", "moved")
    s.files.rename(f"{D}/a.txt", f"{D}/b.txt")
    expect(s.files.read(f"{D}/b.txt") == "moved" and not s.files.exists(f"{D}/a.txt"),
           "rename did not move the file")


@check("files.watch_dir")
def _():
    s = sbx()
    s.files.make_dir(f"{D}/w")
    w = s.files.watch_dir(f"{D}/w")
    try:
        s.files.write(f"{D}/w/new.txt", "event")
        s.commands.run(f"rm {D}/w/new.txt")
        seen = []
        deadline = time.time() + 15
        while time.time() < deadline:
            seen += [(e.name, e.type) for e in w.get_new_events()]
            if ("new.txt", FilesystemEventType.CREATE) in seen and (
                "new.txt", FilesystemEventType.REMOVE) in seen:
                break
            time.sleep(0.2)
        expect(("new.txt", FilesystemEventType.CREATE) in seen, f"no create event: {seen}")
        expect(("new.txt", FilesystemEventType.REMOVE) in seen, f"no remove event: {seen}")
    finally:
        w.stop()
    return f"{len(seen)} events"


# ---- lifetime and listing ----


@check("set_timeout")
def _():
    s = sbx()
    t0 = time.time()
    s.set_timeout(900)
    left = s.get_info().end_at.timestamp() - t0
    expect(850 < left < 950, f"end_at after set_timeout(900): {left:.0f} s ahead")
    return f"{left:.0f} s"


@check("connect.running")
def _():
    # The SDK's contract: connecting to a running sandbox updates its timeout only when the
    # new one is longer.
    s = sbx()
    before = s.get_info().end_at.timestamp()
    again = Sandbox.connect(s.sandbox_id, timeout=60)
    expect(again.sandbox_id == s.sandbox_id, f"connect returned {again.sandbox_id}")
    after = s.get_info().end_at.timestamp()
    expect(after >= before - 5, f"connect(timeout=60) shortened the timeout by {before - after:.0f} s")
    expect(again.commands.run("echo same").stdout == "same\n", "run through the connected handle")


@check("list.metadata")
def _():
    other = make(template=TEMPLATE, timeout=300, metadata={"suite": RUN, "role": "other"})
    state["other"] = other

    def ids(q):
        p = Sandbox.list(query=q)
        out = []
        while p.has_next:
            out += [i.sandbox_id for i in p.next_items()]
        return out

    mine = ids(SandboxQuery(metadata={"suite": RUN, "role": "main"}))
    expect(mine == [sbx().sandbox_id], f"filter role=main: {mine}")
    both = ids(SandboxQuery(metadata={"suite": RUN}))
    expect(sorted(both) == sorted([sbx().sandbox_id, other.sandbox_id]), f"filter suite: {both}")
    none = ids(SandboxQuery(metadata={"suite": RUN, "role": "nobody"}))
    expect(none == [], f"filter matching nothing: {none}")
    running = ids(SandboxQuery(metadata={"suite": RUN}, state=[SandboxState.RUNNING]))
    expect(sorted(running) == sorted(both), f"state=running: {running}")
    p = Sandbox.list(query=SandboxQuery(metadata={"suite": RUN}), limit=1)
    first = p.next_items()
    expect(len(first) == 1 and p.has_next, f"limit=1: {len(first)} items, has_next {p.has_next}")
    second = p.next_items()
    expect(len(second) == 1 and second[0].sandbox_id != first[0].sandbox_id,
           f"second page: {[i.sandbox_id for i in second]}")


@check("pause_resume")
def _():
    o = state.get("other")
    expect(o is not None, "no second sandbox: `list.metadata` failed")
    o.files.write("/tmp/kept.txt", "kept across pause")
    expect(o.pause() is True, "pause() answered not True")
    info = Sandbox.get_info(o.sandbox_id)
    expect(info.state == SandboxState.PAUSED, f"state after pause: {info.state}")
    p = Sandbox.list(query=SandboxQuery(metadata={"suite": RUN}, state=[SandboxState.PAUSED]))
    paused = [i.sandbox_id for i in p.next_items()]
    expect(paused == [o.sandbox_id], f"state=paused listing: {paused}")
    expect(o.beta_pause() is False, "pausing a paused sandbox answered not False")
    r = Sandbox.connect(o.sandbox_id)  # resumes a paused sandbox
    expect(Sandbox.get_info(o.sandbox_id).state == SandboxState.RUNNING, "not running after connect")
    expect(r.files.read("/tmp/kept.txt") == "kept across pause", "file lost across pause/resume")
    out = r.commands.run("echo resumed").stdout
    expect(out == "resumed\n", f"run after resume: {out!r}")


@check("kill")
def _():
    o = state.get("other")
    expect(o is not None, "no second sandbox")
    expect(o.kill() is True, "kill() answered not True")
    expect(gone(o.sandbox_id), "get_info still finds a killed sandbox")
    expect(Sandbox.kill(o.sandbox_id) is False, "kill of a killed sandbox answered not False")
    raises(NotFoundException, lambda: Sandbox.connect(o.sandbox_id), "connect to a killed sandbox")


@check("timeout.expires")
def _():
    s = make(template=TEMPLATE, timeout=3, metadata={"suite": RUN, "role": "short"})
    deadline = time.time() + 60
    while not gone(s.sandbox_id):
        expect(time.time() < deadline, "a sandbox with timeout=3 still exists after 60 s")
        time.sleep(0.5)
    raises((NotFoundException, TimeoutException), lambda: s.commands.run("true", request_timeout=10),
           "commands.run on an expired sandbox")


@check("timeout.auto_pause")
def _():
    s = make(template=TEMPLATE, timeout=3, metadata={"suite": RUN, "role": "autopause"},
             lifecycle={"on_timeout": "pause"})
    deadline = time.time() + 60
    while Sandbox.get_info(s.sandbox_id).state != SandboxState.PAUSED:
        expect(time.time() < deadline, "an autoPause sandbox is not paused 60 s after its timeout")
        time.sleep(0.5)
    r = Sandbox.connect(s.sandbox_id, timeout=60)
    expect(r.commands.run("echo back").stdout == "back\n", "run after resuming an auto-paused sandbox")
    expect(r.kill(), "kill after auto-pause")


# ---- tenants and errors ----


@check("isolation")
def _():
    a = sbx().sandbox_id
    raises(NotFoundException, lambda: Sandbox.get_info(a, api_key=KEY_B), "tenant B: get_info of A's")
    raises(NotFoundException, lambda: Sandbox.connect(a, api_key=KEY_B), "tenant B: connect to A's")
    expect(Sandbox.kill(a, api_key=KEY_B) is False, "tenant B killed A's sandbox")
    raises(NotFoundException, lambda: Sandbox.set_timeout(a, 5, api_key=KEY_B), "tenant B: set_timeout")
    raises(NotFoundException, lambda: Sandbox.pause(a, api_key=KEY_B), "tenant B: pause of A's")
    listed = [i.sandbox_id for i in Sandbox.list(api_key=KEY_B).next_items()]
    expect(a not in listed, f"tenant B lists A's sandbox: {listed}")
    b = Sandbox.create(timeout=120, api_key=KEY_B, metadata={"suite": RUN})
    try:
        raises(NotFoundException, lambda: Sandbox.get_info(b.sandbox_id), "tenant A: get_info of B's")
        mine = [i.sandbox_id for i in Sandbox.list(query=SandboxQuery(metadata={"suite": RUN})).next_items()]
        expect(b.sandbox_id not in mine, f"tenant A lists B's sandbox: {mine}")
        expect(b.commands.run("echo b").stdout == "b\n", "tenant B's own sandbox runs")
        expect(Sandbox.get_info(a).state == SandboxState.RUNNING, "A's sandbox survived B's calls")
    finally:
        b.kill()


@check("errors.not_found")
def _():
    raises(NotFoundException, lambda: Sandbox.get_info("no-such-sandbox"), "get_info of an unknown id")
    raises(NotFoundException, lambda: Sandbox.connect("no-such-sandbox"), "connect to an unknown id")
    expect(Sandbox.kill("no-such-sandbox") is False, "kill of an unknown id answered not False")
    e = raises(SandboxException, lambda: Sandbox.create(template="no-such-template"),
               "create from an unknown template")
    expect(getattr(e, "status_code", None) == 404 or "404" in str(e), f"unknown template: {e}")
    return str(e)


@check("errors.auth")
def _():
    bad = "e2b_" + "0" * 40
    raises(AuthenticationException, lambda: Sandbox.list(api_key=bad).next_items(), "list with a bad key")
    raises(AuthenticationException, lambda: Sandbox.create(api_key=bad), "create with a bad key")
    raises(AuthenticationException, lambda: Sandbox.create(api_key="not-a-key"), "create with garbage")


@check("errors.rate_limit")
def _():
    # Tenant C may do one lifecycle operation a second, one saved up; retries=0 so that the
    # SDK does not wait out Retry-After itself.
    first = Sandbox.create(timeout=60, api_key=KEY_C, retries=0)
    try:
        raises(RateLimitException, lambda: Sandbox.create(timeout=60, api_key=KEY_C, retries=0),
               "a second create at once over a 1/s limit")
    finally:
        time.sleep(1.5)
        Sandbox.kill(first.sandbox_id, api_key=KEY_C)
    # With its default retries the SDK waits out Retry-After and succeeds.
    time.sleep(1.5)
    s = Sandbox.create(timeout=60, api_key=KEY_C)
    s2 = Sandbox.create(timeout=60, api_key=KEY_C)
    time.sleep(1.5)
    Sandbox.kill(s.sandbox_id, api_key=KEY_C)
    time.sleep(1.5)
    Sandbox.kill(s2.sandbox_id, api_key=KEY_C)


@check("keep")
def _():
    # Left running for the Rust side: a sandbox is a node of tenant A, seen by bulkhead's API.
    return sbx().sandbox_id


def main():
    for c in CHECKS:
        c()
    # Clean up what this run made (the kept sandbox stays).
    keep = state.get("sbx")
    for i in created:
        if keep is None or i != keep.sandbox_id:
            try:
                Sandbox.kill(i)
            except Exception:
                pass
    emit("done", True)


if __name__ == "__main__":
    main()
