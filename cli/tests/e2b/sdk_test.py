"""E2B's Python SDK, unmodified (PyPI e2b 2.64.0, scripts/e2b-sdks), against
a running wrenn: the SDK's documented examples, case by case.

Run by cli/tests/e2b.rs with the virtualenv's python and:

    E2B_API_URL=http://<control>  E2B_SANDBOX_URL=http://<proxy>
    E2B_DOMAIN=localhost:<proxy port>  E2B_API_KEY=<admin key>

(docs/e2b-sdk.md: the SDK then reaches envd through the proxy with the
`E2b-Sandbox-Id`/`E2b-Sandbox-Port` headers). Every case runs, whatever
failed before it; each prints `=== RUN group/name`, then `--- PASS` or
`--- FAIL` with the error and its traceback; the last line is the summary,
and the exit code is 1 if any case failed. Arguments (or E2B_SDK_TEST_ONLY,
comma-separated) select cases by substring of `group/name`.

Every sandbox a case creates carries the metadata `suite=<run id>`; at the
end all of them are killed and `Sandbox.list` filtered on that metadata must
come back empty (case `cleanup/nothing_left`).

Groups: rest (the control plane's E2B API), errors (bad input → the SDK's
exception types), commands, files, pty, host (get_host through the proxy),
lifecycle (pause/resume/connect with state kept), envd_auth (raw HTTP to
the envd port: RPCs and /files refused without the sandbox's own access
token, /health open as envd's is). The test gives two more keys:
WRENN_E2B_SECOND_KEY (active) and WRENN_E2B_REVOKED_KEY (used once, then
revoked before the run). code: `run_code` (e2b-code-interpreter 2.11.5)
in the SDK's default template `code-interpreter-v1`, which the test builds
from conf/templates/code-interpreter.
"""

import http.client
import json
import os
import signal
import sys
import threading
import time
import traceback
import urllib.parse
import uuid
from datetime import datetime, timedelta, timezone

from e2b import (
    AuthenticationException,
    CommandExitException,
    FileNotFoundException,
    FilesystemEventType,
    FileType,
    NotFoundException,
    PtySize,
    Sandbox,
    SandboxException,
    SandboxNotFoundException,
    SandboxQuery,
    SandboxState,
)

# Per case, so that one hanging call does not take the whole run's time.
CASE_TIMEOUT = 120
RUN = uuid.uuid4().hex[:12]
API_URL = os.environ["E2B_API_URL"]
SANDBOX_URL = os.environ["E2B_SANDBOX_URL"]
PROXY = urllib.parse.urlsplit(SANDBOX_URL)
ENVD_PORT = 49983
# A well-formed sandbox id that no sandbox has.
NO_SUCH_ID = "i00000000000000000000"

CASES = []
CREATED = []
_shared = {}


def case(group):
    def register(fn):
        CASES.append((f"{group}/{fn.__name__}", fn))
        return fn

    return register


# ---------------------------------------------------------------- helpers


def new_sandbox(**kw):
    """Sandbox.create with this run's metadata; killed at the end."""
    meta = {"suite": RUN}
    meta.update(kw.pop("metadata", {}))
    sbx = Sandbox.create(metadata=meta, **kw)
    CREATED.append(sbx.sandbox_id)
    return sbx


def shared():
    """One sandbox for the commands, files, pty and host cases."""
    if "sbx" not in _shared:
        _shared["sbx"] = new_sandbox(
            template="base", timeout=900, envs={"SUITE_ENV": "from-create"}
        )
    return _shared["sbx"]


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def eq(got, want, what):
    if got != want:
        raise AssertionError(f"{what}: got {got!r}, want {want!r}")


def raises(exc_type, fn, *args, **kw):
    try:
        got = fn(*args, **kw)
    except exc_type as e:
        return e
    except Exception as e:
        raise AssertionError(
            f"expected {exc_type.__name__}, got {type(e).__name__}: {e}"
        ) from e
    raise AssertionError(f"expected {exc_type.__name__}, got a result: {got!r}")


def eventually(fn, what, timeout=20.0, interval=0.1):
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            v = fn()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 — kept for the message
            last = e
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what}"
                + (f" (last error: {type(last).__name__}: {last})" if last else "")
            )
        time.sleep(interval)


def raw(method, path, headers, body=None, host=None):
    """One HTTP/1.1 request to the proxy; (status, headers, body bytes)."""
    conn = http.client.HTTPConnection(PROXY.hostname, PROXY.port, timeout=30)
    try:
        h = dict(headers)
        if host is not None:
            h["Host"] = host
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


def near(t, want, slack, what):
    delta = abs((t - want).total_seconds())
    check(delta <= slack, f"{what}: {t} is {delta:.1f}s from {want} (slack {slack}s)")


def now():
    return datetime.now(timezone.utc)


# ---------------------------------------------------------------- rest


@case("rest")
def create_get_info_kill():
    sbx = new_sandbox(template="base", timeout=120, metadata={"case": "create"})
    info = sbx.get_info()
    eq(info.sandbox_id, sbx.sandbox_id, "get_info().sandbox_id")
    eq(info.template_id, "base", "template_id")
    eq(info.state, SandboxState.RUNNING, "state")
    eq(info.metadata, {"suite": RUN, "case": "create"}, "metadata")
    span = (info.end_at - info.started_at).total_seconds()
    check(115 <= span <= 125, f"end_at - started_at = {span}s, want about 120")
    check(info.cpu_count >= 1 and info.memory_mb > 0, f"resources {info}")
    same = Sandbox.get_info(sbx.sandbox_id)
    eq(same.sandbox_id, sbx.sandbox_id, "Sandbox.get_info(id)")
    eq(sbx.kill(), True, "kill()")
    eq(Sandbox.kill(sbx.sandbox_id), False, "Sandbox.kill(id) of a killed sandbox")
    raises(SandboxNotFoundException, Sandbox.get_info, sbx.sandbox_id)


@case("rest")
def create_returns_envd_access_token():
    sbx = new_sandbox(timeout=60)
    check(
        sbx._envd_access_token,
        "the create response has no envdAccessToken: the SDK sends no "
        "X-Access-Token to envd",
    )
    headers = sbx.connection_config.sandbox_headers
    eq(headers.get("E2b-Sandbox-Id"), sbx.sandbox_id, "E2b-Sandbox-Id header")
    eq(headers.get("E2b-Sandbox-Port"), str(ENVD_PORT), "E2b-Sandbox-Port header")
    eq(headers.get("X-Access-Token"), sbx._envd_access_token, "X-Access-Token header")
    sbx.kill()


@case("rest")
def list_by_metadata_and_state():
    tag = uuid.uuid4().hex[:8]
    a = new_sandbox(timeout=120, metadata={"list": tag})
    b = new_sandbox(timeout=120, metadata={"list": tag})
    pager = Sandbox.list(query=SandboxQuery(metadata={"suite": RUN, "list": tag}))
    got = []
    while pager.has_next:
        got.extend(pager.next_items())
    eq(sorted(s.sandbox_id for s in got), sorted([a.sandbox_id, b.sandbox_id]), "listed ids")
    for s in got:
        eq(s.state, SandboxState.RUNNING, f"state of {s.sandbox_id}")
        eq(s.metadata.get("list"), tag, "listed metadata")
    # Pages of one.
    pager = Sandbox.list(query=SandboxQuery(metadata={"list": tag}), limit=1)
    pages = []
    while pager.has_next:
        pages.append([s.sandbox_id for s in pager.next_items()])
    eq(len([p for p in pages if p]), 2, f"pages of limit=1: {pages}")
    # State filter: paused only finds nothing of these.
    pager = Sandbox.list(
        query=SandboxQuery(metadata={"list": tag}, state=[SandboxState.PAUSED])
    )
    eq(pager.next_items(), [], "paused sandboxes with this tag")
    a.kill()
    b.kill()


@case("rest")
def set_timeout_moves_end_at():
    sbx = new_sandbox(timeout=60)
    sbx.set_timeout(600)
    near(sbx.get_info().end_at, now() + timedelta(seconds=600), 15, "end_at after set_timeout(600)")
    Sandbox.set_timeout(sbx.sandbox_id, 30)
    near(sbx.get_info().end_at, now() + timedelta(seconds=30), 15, "end_at after Sandbox.set_timeout(id, 30)")
    sbx.kill()


@case("rest")
def pause_and_connect():
    sbx = new_sandbox(timeout=300)
    eq(sbx.pause(), True, "pause()")
    eq(sbx.get_info().state, SandboxState.PAUSED, "state after pause")
    eq(sbx.pause(), False, "pause() of a paused sandbox")
    again = Sandbox.connect(sbx.sandbox_id, timeout=300)
    eq(again.sandbox_id, sbx.sandbox_id, "connect().sandbox_id")
    eq(again.get_info().state, SandboxState.RUNNING, "state after connect")
    # Connecting to a running sandbox is fine too.
    Sandbox.connect(sbx.sandbox_id)
    sbx.kill()


@case("rest")
def metrics():
    sbx = new_sandbox(timeout=120)
    # The SDK checks envdVersion >= 0.1.5 before asking.
    sbx.get_metrics()
    sbx.kill()


# ---------------------------------------------------------------- errors


@case("errors")
def unknown_template():
    e = raises(SandboxException, Sandbox.create, template="no-such-template-" + RUN)
    eq(getattr(e, "status_code", None), 404, f"status of create with an unknown template ({e})")


@case("errors")
def bad_timeout():
    e = raises(SandboxException, Sandbox.create, timeout=-1)
    eq(getattr(e, "status_code", None), 400, f"status of create with timeout=-1 ({e})")
    sbx = new_sandbox(timeout=60)
    e = raises(SandboxException, sbx.set_timeout, -5)
    eq(getattr(e, "status_code", None), 400, f"status of set_timeout(-5) ({e})")
    sbx.kill()


@case("errors")
def nonexistent_sandbox():
    raises(SandboxNotFoundException, Sandbox.get_info, NO_SUCH_ID)
    raises(SandboxNotFoundException, Sandbox.set_timeout, NO_SUCH_ID, 60)
    raises(SandboxNotFoundException, Sandbox.connect, NO_SUCH_ID)
    raises(SandboxNotFoundException, Sandbox.pause, NO_SUCH_ID)
    eq(Sandbox.kill(NO_SUCH_ID), False, "Sandbox.kill of a nonexistent id")


@case("errors")
def wrong_api_key():
    bad = {"api_key": "e2b_" + "0" * 40}
    raises(AuthenticationException, Sandbox.create, **bad)
    raises(AuthenticationException, lambda: Sandbox.list(**bad).next_items())
    raises(AuthenticationException, Sandbox.get_info, NO_SUCH_ID, **bad)
    raises(AuthenticationException, Sandbox.kill, NO_SUCH_ID, **bad)


@case("errors")
def revoked_key():
    key = os.environ.get("WRENN_E2B_REVOKED_KEY")
    check(key, "no revoked key given (WRENN_E2B_REVOKED_KEY): `wrenn key create`/`key rm` failed, see the test's output")
    raises(AuthenticationException, Sandbox.create, api_key=key)
    raises(AuthenticationException, lambda: Sandbox.list(api_key=key).next_items())


@case("rest")
def another_key_works():
    key = os.environ.get("WRENN_E2B_SECOND_KEY")
    check(key, "no second key given (WRENN_E2B_SECOND_KEY): `wrenn key create` failed, see the test's output")
    sbx = Sandbox.create(timeout=60, metadata={"suite": RUN}, api_key=key)
    CREATED.append(sbx.sandbox_id)
    eq(Sandbox.get_info(sbx.sandbox_id).sandbox_id, sbx.sandbox_id, "seen with the admin key")
    eq(Sandbox.kill(sbx.sandbox_id, api_key=key), True, "kill with the second key")


# ---------------------------------------------------------------- commands


@case("commands")
def run_foreground():
    sbx = shared()
    seen = []
    r = sbx.commands.run("echo hello; echo oops >&2", on_stdout=seen.append)
    eq(r.exit_code, 0, "exit_code")
    eq(r.stdout, "hello\n", "stdout")
    eq(r.stderr, "oops\n", "stderr")
    eq("".join(seen), "hello\n", "on_stdout chunks")


@case("commands")
def exit_code_raises():
    e = raises(CommandExitException, shared().commands.run, "echo bad >&2; exit 3")
    eq(e.exit_code, 3, "exit_code")
    eq(e.stderr, "bad\n", "stderr")


@case("commands")
def background_and_wait():
    h = shared().commands.run("sleep 0.5; echo done", background=True)
    check(h.pid > 0, f"pid {h.pid}")
    r = h.wait()
    eq((r.exit_code, r.stdout), (0, "done\n"), "result")


@case("commands")
def env_vars():
    sbx = shared()
    eq(sbx.commands.run("echo $SUITE_ENV").stdout, "from-create\n", "envs given at create")
    r = sbx.commands.run('echo "$FOO $SUITE_ENV"', envs={"FOO": "bar", "SUITE_ENV": "override"})
    eq(r.stdout, "bar override\n", "envs given to run")


@case("commands")
def cwd():
    sbx = shared()
    eq(sbx.commands.run("pwd", cwd="/tmp").stdout, "/tmp\n", "pwd with cwd=/tmp")
    eq(sbx.commands.run("pwd").stdout, "/home/user\n", "default cwd")


@case("commands")
def users():
    sbx = shared()
    eq(sbx.commands.run("whoami").stdout, "user\n", "default user")
    eq(sbx.commands.run("whoami", user="root").stdout, "root\n", "user=root")
    eq(sbx.commands.run("whoami", user="user").stdout, "user\n", "user=user")
    eq(sbx.commands.run("echo $HOME").stdout, "/home/user\n", "HOME of the default user")
    eq(sbx.commands.run("sudo -n whoami").stdout, "root\n", "passwordless sudo")
    eq(sbx.commands.run("python --version && python3 --version").exit_code, 0, "python and python3")


@case("commands")
def stdin_send_and_close():
    sbx = shared()
    h = sbx.commands.run("cat", background=True, stdin=True)
    h.send_stdin("hello ")
    sbx.commands.send_stdin(h.pid, b"world\n")
    h.close_stdin()
    r = h.wait()
    eq(r.stdout, "hello world\n", "cat's output")


@case("commands")
def stream_input():
    # Python only: the client-streaming StreamInput RPC (chunked request body).
    sbx = shared()
    h = sbx.commands.run("cat", background=True, stdin=True)
    sbx.commands.stream_input(h.pid, iter([b"one ", "two", b"\n"]))
    h.close_stdin()
    eq(h.wait().stdout, "one two\n", "cat's output")


@case("commands")
def kill_process():
    sbx = shared()
    h = sbx.commands.run("sleep 600", background=True)
    eq(sbx.commands.kill(h.pid), True, "commands.kill")
    e = raises(CommandExitException, h.wait)
    check(e.exit_code != 0, f"exit code after SIGKILL: {e.exit_code}")
    eq(sbx.commands.kill(h.pid), False, "commands.kill of a gone pid")
    h2 = sbx.commands.run("sleep 600", background=True)
    eq(h2.kill(), True, "handle.kill")
    raises(CommandExitException, h2.wait)


@case("commands")
def connect_by_pid():
    sbx = shared()
    h = sbx.commands.run("sleep 1; echo after", background=True)
    pid = h.pid
    h.disconnect()
    again = sbx.commands.connect(pid)
    eq(again.pid, pid, "pid of the connected handle")
    r = again.wait()
    eq((r.exit_code, r.stdout), (0, "after\n"), "result through connect")


@case("commands")
def list_processes():
    sbx = shared()
    h = sbx.commands.run("sleep 600", background=True, envs={"LISTED": "1"}, cwd="/tmp")
    try:
        procs = {p.pid: p for p in sbx.commands.list()}
        check(h.pid in procs, f"pid {h.pid} not in {sorted(procs)}")
        p = procs[h.pid]
        eq(p.cmd, "/bin/bash", "cmd")
        eq(p.args, ["-l", "-c", "sleep 600"], "args")
        eq(p.envs.get("LISTED"), "1", "envs")
        eq(p.cwd, "/tmp", "cwd")
    finally:
        h.kill()


# ---------------------------------------------------------------- files

DIR = "/home/user/e2b-files"


@case("files")
def write_read_text():
    f = shared().files
    info = f.write(f"{DIR}/hello.txt", "hello world\n")
    eq((info.name, info.path, info.type), ("hello.txt", f"{DIR}/hello.txt", FileType.FILE), "WriteInfo")
    eq(f.read(f"{DIR}/hello.txt"), "hello world\n", "read back")
    f.write(f"{DIR}/hello.txt", "replaced")
    eq(f.read(f"{DIR}/hello.txt"), "replaced", "read after overwrite")


@case("files")
def write_read_bytes():
    f = shared().files
    data = bytes(range(256)) * 64
    f.write(f"{DIR}/bytes.bin", data)
    eq(bytes(f.read(f"{DIR}/bytes.bin", format="bytes")), data, "bytes read back")
    eq(f.get_info(f"{DIR}/bytes.bin").size, len(data), "size")


@case("files")
def write_many():
    f = shared().files
    infos = f.write_files(
        [
            {"path": f"{DIR}/many/a.txt", "data": "A"},
            {"path": f"{DIR}/many/b.bin", "data": b"\x00B"},
            {"path": f"{DIR}/many/deep/c.txt", "data": "C"},
        ]
    )
    eq(sorted(i.path for i in infos), sorted([f"{DIR}/many/a.txt", f"{DIR}/many/b.bin", f"{DIR}/many/deep/c.txt"]), "written paths")
    eq(f.read(f"{DIR}/many/a.txt"), "A", "a.txt")
    eq(bytes(f.read(f"{DIR}/many/b.bin", format="bytes")), b"\x00B", "b.bin")
    eq(f.read(f"{DIR}/many/deep/c.txt"), "C", "deep/c.txt")


@case("files")
def list_dir():
    f = shared().files
    f.write(f"{DIR}/list/one.txt", "1")
    f.make_dir(f"{DIR}/list/sub")
    f.write(f"{DIR}/list/sub/two.txt", "2")
    entries = {e.name: e for e in f.list(f"{DIR}/list")}
    eq(sorted(entries), ["one.txt", "sub"], "depth 1")
    eq(entries["one.txt"].type, FileType.FILE, "one.txt type")
    eq(entries["sub"].type, FileType.DIR, "sub type")
    eq(entries["one.txt"].path, f"{DIR}/list/one.txt", "one.txt path")
    deep = sorted(e.path for e in f.list(f"{DIR}/list", depth=2))
    eq(deep, [f"{DIR}/list/one.txt", f"{DIR}/list/sub", f"{DIR}/list/sub/two.txt"], "depth 2")
    raises(FileNotFoundException, f.list, f"{DIR}/no-such-dir")


@case("files")
def make_dir():
    f = shared().files
    eq(f.make_dir(f"{DIR}/made/a/b"), True, "make_dir of a new path")
    eq(f.make_dir(f"{DIR}/made/a/b"), False, "make_dir of an existing one")
    eq(f.get_info(f"{DIR}/made/a").type, FileType.DIR, "parents made")


@case("files")
def rename_remove_exists():
    f = shared().files
    f.write(f"{DIR}/mv/old.txt", "x")
    info = f.rename(f"{DIR}/mv/old.txt", f"{DIR}/mv/new.txt")
    eq((info.name, info.path), ("new.txt", f"{DIR}/mv/new.txt"), "rename's EntryInfo")
    eq(f.exists(f"{DIR}/mv/old.txt"), False, "old path exists")
    eq(f.exists(f"{DIR}/mv/new.txt"), True, "new path exists")
    f.remove(f"{DIR}/mv/new.txt")
    eq(f.exists(f"{DIR}/mv/new.txt"), False, "exists after remove")
    f.remove(f"{DIR}/mv")
    eq(f.exists(f"{DIR}/mv"), False, "a removed directory")


@case("files")
def get_info_and_owner():
    sbx = shared()
    f = sbx.files
    f.write(f"{DIR}/info.txt", "12345")
    e = f.get_info(f"{DIR}/info.txt")
    eq((e.name, e.path, e.type, e.size), ("info.txt", f"{DIR}/info.txt", FileType.FILE, 5), "EntryInfo")
    eq((e.owner, e.group), ("user", "user"), "owner of a file the default user wrote")
    check(e.permissions.startswith("-rw"), f"permissions {e.permissions!r}")
    near(e.modified_time, now(), 120, "modified_time")
    f.write("/root/e2b-root.txt", "r", user="root")
    eq(f.get_info("/root/e2b-root.txt", user="root").owner, "root", "owner of a file root wrote")
    raises(FileNotFoundException, f.get_info, f"{DIR}/no-such-file")
    raises(FileNotFoundException, f.read, f"{DIR}/no-such-file")
    raises(NotFoundException, f.read, f"{DIR}/no-such-file")


@case("files")
def signed_urls():
    # download_url/upload_url are signed with the envd access token and need
    # no token header: the URL the SDK gives, sent through the proxy with the
    # Host get_host(49983) names (with E2B_SANDBOX_URL the URL's own host
    # carries no sandbox).
    sbx = shared()
    host = sbx.get_host(ENVD_PORT)
    sbx.files.write(f"{DIR}/signed.txt", "signed content")
    url = urllib.parse.urlsplit(sbx.download_url(f"{DIR}/signed.txt", use_signature_expiration=120))
    check("signature=" in url.query, f"download_url has no signature: {url.geturl()}")
    target = f"{url.path}?{url.query}"
    status, _, body = raw("GET", target, {}, host=host)
    eq((status, body), (200, b"signed content"), f"GET {target}")
    status, _, body = raw("GET", target.replace("signature=v1_", "signature=v1_A"), {}, host=host)
    check(status in (401, 403), f"a tampered signature: {status} {body[:200]!r}")
    url = urllib.parse.urlsplit(sbx.upload_url(f"{DIR}/uploaded.txt"))
    boundary = "e2btestboundary"
    form = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{DIR}/uploaded.txt\"\r\n"
        f"Content-Type: application/octet-stream\r\n\r\nuploaded content\r\n--{boundary}--\r\n"
    ).encode()
    status, _, body = raw(
        "POST",
        f"{url.path}?{url.query}",
        {"Content-Type": f"multipart/form-data; boundary={boundary}"},
        body=form,
        host=host,
    )
    check(200 <= status < 300, f"POST to upload_url: {status} {body[:200]!r}")
    eq(sbx.files.read(f"{DIR}/uploaded.txt"), "uploaded content", "the uploaded file")


@case("files")
def watch_dir():
    f = shared().files
    d = f"{DIR}/watched"
    f.make_dir(d)
    w = f.watch_dir(d)
    try:
        f.write(f"{d}/w.txt", "data")
        seen = []

        def got():
            seen.extend(w.get_new_events())
            return [e for e in seen if e.name == "w.txt"]

        eventually(got, "an event for w.txt")
        types = {e.type for e in seen if e.name == "w.txt"}
        check(
            types & {FilesystemEventType.CREATE, FilesystemEventType.WRITE},
            f"event types for w.txt: {types}",
        )
        f.remove(f"{d}/w.txt")
        eventually(
            lambda: (seen.extend(w.get_new_events()) or True)
            and any(e.type == FilesystemEventType.REMOVE for e in seen),
            "a remove event",
        )
    finally:
        w.stop()
    raises(SandboxException, w.get_new_events)


# ---------------------------------------------------------------- pty


class PtyReader:
    """Waits on a PTY handle in a thread, collecting its output."""

    def __init__(self, handle):
        self.handle = handle
        self.buf = bytearray()
        self.lock = threading.Lock()
        self.result = None
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            self.result = self.handle.wait(on_pty=self._data)
        except Exception as e:  # noqa: BLE001 — reported by the case
            self.error = e

    def _data(self, chunk):
        with self.lock:
            self.buf.extend(chunk)

    def text(self):
        with self.lock:
            return self.buf.decode("utf-8", "replace")

    def wait_for(self, needle, what):
        eventually(lambda: needle in self.text(), f"{what} ({needle!r}); output so far: {self.text()[-300:]!r}")

    def join(self, timeout=20):
        self.thread.join(timeout)
        check(not self.thread.is_alive(), "the PTY's stream did not end")


@case("pty")
def create_input_resize_kill():
    sbx = shared()
    h = sbx.pty.create(PtySize(rows=24, cols=80))
    r = PtyReader(h)
    sbx.pty.send_stdin(h.pid, b"echo $((6*7))x\n")
    r.wait_for("42x", "echo's output")
    sbx.pty.send_stdin(h.pid, b"stty size; whoami\n")
    r.wait_for("24 80", "the created size")
    r.wait_for("user", "the default user")
    sbx.pty.resize(h.pid, PtySize(rows=30, cols=100))
    sbx.pty.send_stdin(h.pid, b"stty size\n")
    r.wait_for("30 100", "the size after resize")
    eq(sbx.pty.kill(h.pid), True, "pty.kill")
    r.join()
    check(isinstance(r.error, CommandExitException), f"wait() after kill: {r.error!r} / {r.result!r}")


@case("pty")
def exit_code_and_user():
    sbx = shared()
    h = sbx.pty.create(PtySize(rows=24, cols=80), user="root", cwd="/tmp", envs={"PTYVAR": "v"})
    r = PtyReader(h)
    sbx.pty.send_stdin(h.pid, b"echo \"$(whoami) $(pwd) $PTYVAR $TERM\"; exit 7\n")
    r.wait_for("root /tmp v xterm-256color", "whoami, pwd, env")
    r.join()
    check(isinstance(r.error, CommandExitException), f"wait(): {r.error!r}")
    eq(r.error.exit_code, 7, "exit code of the shell")


# ---------------------------------------------------------------- host


@case("host")
def get_host_http_server():
    sbx = shared()
    host = sbx.get_host(8000)
    eq(host, f"8000-{sbx.sandbox_id}.{os.environ['E2B_DOMAIN']}", "get_host(8000)")
    sbx.files.write("/home/user/www/marker.txt", "served by http.server\n")
    srv = sbx.commands.run("python3 -m http.server 8000", background=True, cwd="/home/user/www")
    try:
        # The Host get_host() gives (subdomain form).
        def by_host():
            status, _, body = raw("GET", "/marker.txt", {}, host=host)
            return status == 200 and body == b"served by http.server\n"

        eventually(by_host, f"GET /marker.txt with Host: {host}", timeout=30)
        # The header form the SDK itself uses for envd.
        status, _, body = raw(
            "GET",
            "/marker.txt",
            {"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": "8000"},
        )
        eq((status, body), (200, b"served by http.server\n"), "GET through the routing headers")
    finally:
        srv.kill()


# ---------------------------------------------------------------- lifecycle


@case("lifecycle")
def pause_resume_keeps_state():
    sbx = new_sandbox(timeout=300)
    sbx.files.write("/home/user/kept.txt", "before pause")
    h = sbx.commands.run("sleep 600", background=True)
    eq(sbx.pause(), True, "pause()")
    same = Sandbox.connect(sbx.sandbox_id)
    eq(same.files.read("/home/user/kept.txt"), "before pause", "file after resume")
    pids = [p.pid for p in same.commands.list()]
    check(h.pid in pids, f"background process {h.pid} after resume: {pids}")
    eq(same.commands.run("echo alive").stdout, "alive\n", "a command after resume")
    eq(same.is_running(), True, "is_running()")
    same.kill()
    eq(same.is_running(), False, "is_running() after kill (/health answers 502)")


# ---------------------------------------------------------------- envd_auth


@case("envd_auth")
def envd_port_needs_the_access_token():
    sbx = new_sandbox(timeout=120)
    token = sbx._envd_access_token
    check(token, "no envdAccessToken in the create response")
    route = {"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": str(ENVD_PORT)}
    rpc = {"Content-Type": "application/json", "Connect-Protocol-Version": "1"}
    wrong = ("x" if token[0] != "x" else "y") + token[1:]
    for label, extra in (("no token", {}), ("a wrong token", {"X-Access-Token": wrong})):
        # GET /health needs no token (as envd's): is_running() asks it.
        status, _, body = raw("GET", "/health", {**route, **extra})
        check(200 <= status < 300, f"GET /health with {label}: {status} {body[:200]!r}")
        status, _, body = raw("POST", "/process.Process/List", {**route, **rpc, **extra}, body=b"{}")
        check(status in (401, 403), f"List with {label}: {status} {body[:200]!r}")
        status, _, body = raw("GET", "/files?path=/etc/hostname", {**route, **extra})
        check(status in (401, 403), f"GET /files with {label}: {status} {body[:200]!r}")
    status, _, body = raw("GET", "/health", {**route, "X-Access-Token": token})
    check(200 <= status < 300, f"GET /health with the token: {status} {body[:200]!r}")
    status, headers, body = raw("POST", "/process.Process/List", {**route, **rpc, "X-Access-Token": token}, body=b"{}")
    eq(status, 200, f"List with the token ({body[:200]!r})")
    check(headers.get("Content-Type", headers.get("content-type", "")).startswith("application/json"), f"List's content type {headers}")
    check("processes" in json.loads(body) or json.loads(body) == {}, f"List's body {body[:200]!r}")
    # Another sandbox's token does not open this one.
    other = new_sandbox(timeout=60)
    status, _, body = raw("POST", "/process.Process/List", {**route, **rpc, "X-Access-Token": other._envd_access_token}, body=b"{}")
    check(status in (401, 403), f"List with another sandbox's token: {status} {body[:200]!r}")
    other.kill()
    sbx.kill()


# ---------------------------------------------------------------- code


def code_sandbox():
    """One code-interpreter sandbox (the SDK's default template,
    code-interpreter-v1, which the test built from
    conf/templates/code-interpreter)."""
    if "code" not in _shared:
        from e2b_code_interpreter import Sandbox as CodeSandbox

        sbx = CodeSandbox.create(timeout=900, metadata={"suite": RUN})
        CREATED.append(sbx.sandbox_id)
        _shared["code"] = sbx
    return _shared["code"]


@case("code")
def run_code_prints_and_returns():
    out = []
    e = code_sandbox().run_code("print('hello'); 6 * 7", on_stdout=lambda m: out.append(m.line))
    eq(e.logs.stdout, ["hello\n"], "stdout")
    eq(e.text, "42", "the cell's value")
    eq(out, ["hello\n"], "on_stdout")
    check(e.execution_count and e.execution_count >= 1, f"execution_count {e.execution_count}")
    check(e.error is None, f"error {e.error}")


@case("code")
def run_code_error_with_traceback():
    e = code_sandbox().run_code("def f():\n    return 1 / 0\nf()")
    check(e.error is not None, "no error")
    eq(e.error.name, "ZeroDivisionError", "error name")
    eq(e.error.value, "division by zero", "error value")
    check("f()" in e.error.traceback, f"traceback {e.error.traceback[:300]!r}")


@case("code")
def run_code_matplotlib_png():
    e = code_sandbox().run_code(
        "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()"
    )
    pngs = [r.png for r in e.results if r.png]
    check(pngs, f"no PNG result: {e.results}")
    import base64

    check(base64.b64decode(pngs[0])[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG")


@case("code")
def run_code_keeps_variables_and_contexts_are_separate():
    sbx = code_sandbox()
    sbx.run_code("x = 41")
    eq(sbx.run_code("x + 1").text, "42", "a variable across calls")
    ctx = sbx.create_code_context()
    sbx.run_code("y = 'ctx'", context=ctx)
    eq(sbx.run_code("y", context=ctx).text, "'ctx'", "a variable in the context")
    eq(sbx.run_code("'y' in globals()").text, "False", "the default context does not see it")
    check(ctx.id in [c.id for c in sbx.list_code_contexts()], "list_code_contexts")
    sbx.restart_code_context(ctx)
    eq(sbx.run_code("'y' in globals()", context=ctx).text, "False", "after restart")
    sbx.remove_code_context(ctx)
    check(ctx.id not in [c.id for c in sbx.list_code_contexts()], "removed")


@case("code")
def run_code_env_and_timeout():
    sbx = code_sandbox()
    e = sbx.run_code("import os; os.environ.get('GREETING')", envs={"GREETING": "hi"})
    eq(e.text, "'hi'", "envs for one run")
    eq(sbx.run_code("import os; os.environ.get('GREETING')").text, None, "envs are per run")
    from e2b import TimeoutException

    raises(TimeoutException, sbx.run_code, "import time\nwhile True: time.sleep(0.05)", timeout=2)
    eq(sbx.run_code("1 + 1").text, "2", "the kernel answers after a timed-out run")


# ---------------------------------------------------------------- driver


@case("cleanup")
def nothing_left():
    problems = []
    for sid in CREATED:
        try:
            Sandbox.kill(sid)
        except Exception as e:  # noqa: BLE001
            problems.append(f"kill {sid}: {type(e).__name__}: {e}")
    pager = Sandbox.list(query=SandboxQuery(metadata={"suite": RUN}))
    left = []
    while pager.has_next:
        left.extend(s.sandbox_id for s in pager.next_items())
    check(not left and not problems, f"left: {left}; {problems}")


class CaseTimeout(Exception):
    pass


def on_alarm(signum, frame):
    raise CaseTimeout(f"the case ran over {CASE_TIMEOUT}s")


def main():
    only = [s for s in sys.argv[1:] + os.environ.get("E2B_SDK_TEST_ONLY", "").split(",") if s]
    signal.signal(signal.SIGALRM, on_alarm)
    print(f"python: e2b SDK run {RUN} against {API_URL} (sandboxes through {SANDBOX_URL})", flush=True)
    passed, failed = [], []
    for name, fn in CASES:
        if only and name != "cleanup/nothing_left" and not any(s in name for s in only):
            continue
        print(f"=== RUN  {name}", flush=True)
        started = time.monotonic()
        signal.alarm(CASE_TIMEOUT)
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 — every case runs
            signal.alarm(0)
            took = time.monotonic() - started
            failed.append(name)
            print(f"--- FAIL {name} ({took:.2f}s): {type(e).__name__}: {e}", flush=True)
            tb = "".join(traceback.format_exception(e))
            print("    " + tb.rstrip().replace("\n", "\n    "), flush=True)
            if isinstance(e, KeyboardInterrupt):
                break
        else:
            signal.alarm(0)
            took = time.monotonic() - started
            passed.append(name)
            print(f"--- PASS {name} ({took:.2f}s)", flush=True)
    print(
        f"python: {len(passed)} passed, {len(failed)} failed"
        + (f": {', '.join(failed)}" if failed else ""),
        flush=True,
    )
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
