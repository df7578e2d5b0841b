"""The code interpreter E2B's `e2b-code-interpreter` SDKs talk to, on port
49999: `run_code` as `POST /execute`, and code contexts (`/contexts`).

Each context is one Jupyter kernel (ipykernel, driven with jupyter_client);
the protocol the SDKs read is written here:

- `POST /execute` `{"code", "context_id"?, "language"?, "env_vars"?}` answers
  a stream of JSON lines: `stdout`/`stderr` (`text`, `timestamp`), `result`
  (one per display or the cell's value: `text`, `html`, `markdown`, `svg`,
  `png`, `jpeg`, `pdf`, `latex`, `json`, `javascript`, `extra`,
  `is_main_result`), `error` (`name`, `value`, `traceback`),
  `number_of_executions` (`execution_count`), and last `end_of_execution`.
  A client that goes away interrupts the kernel.
- `POST /contexts` `{"language"?, "cwd"?}`, `GET /contexts`,
  `DELETE /contexts/<id>`, `POST /contexts/<id>/restart`.
- `GET /health`.

Executions in one context run one at a time (a second waits); contexts run
in parallel. Only Python kernels are installed: another `language` is a
400 naming the ones there are.

Standard library plus jupyter_client only; run with the template's venv.
"""

import datetime
import json
import os
import select
import socket
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from queue import Empty

from jupyter_client.manager import KernelManager

PORT = int(os.environ.get("CODE_INTERPRETER_PORT", "49999"))
LANGUAGES = {"python": "python3"}
DEFAULT_LANGUAGE = "python"
# MIME type -> the SDK's Result field.
FORMATS = {
    "text/plain": "text",
    "text/html": "html",
    "text/markdown": "markdown",
    "image/svg+xml": "svg",
    "image/png": "png",
    "image/jpeg": "jpeg",
    "application/pdf": "pdf",
    "text/latex": "latex",
    "application/json": "json",
    "application/javascript": "javascript",
}


def now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


class Context:
    """One kernel and the lock that serializes its executions."""

    def __init__(self, language, cwd):
        self.id = str(uuid.uuid4())
        self.language = language
        self.cwd = cwd
        self.lock = threading.Lock()
        self.km = KernelManager(kernel_name=LANGUAGES[language])
        self.km.start_kernel(cwd=cwd)
        self.client = self.km.blocking_client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)
        if language == "python":
            # Figures come back as PNG results, as in a notebook.
            self.run_silently("%matplotlib inline")

    def describe(self):
        return {"id": self.id, "language": self.language, "cwd": self.cwd}

    def run_silently(self, code):
        msg_id = self.client.execute(code, silent=True, store_history=False)
        self.client.get_shell_msg(timeout=60)
        # Drain that execution's iopub messages up to its idle status.
        while True:
            msg = self.client.get_iopub_msg(timeout=60)
            if (
                msg["parent_header"].get("msg_id") == msg_id
                and msg["msg_type"] == "status"
                and msg["content"]["execution_state"] == "idle"
            ):
                return

    def wait_idle(self, msg_id, timeout):
        """Reads iopub until execution `msg_id` is over (or `timeout`)."""
        if msg_id is None:
            return
        deadline = datetime.datetime.now() + datetime.timedelta(seconds=timeout)
        while datetime.datetime.now() < deadline:
            try:
                msg = self.client.get_iopub_msg(timeout=0.5)
            except Empty:
                continue
            if (
                msg["parent_header"].get("msg_id") == msg_id
                and msg["msg_type"] == "status"
                and msg["content"]["execution_state"] == "idle"
            ):
                return

    def restart(self):
        with self.lock:
            self.km.restart_kernel(now=True)
            self.client.stop_channels()
            self.client = self.km.blocking_client()
            self.client.start_channels()
            self.client.wait_for_ready(timeout=60)
            if self.language == "python":
                self.run_silently("%matplotlib inline")

    def shutdown(self):
        try:
            self.client.stop_channels()
        finally:
            self.km.shutdown_kernel(now=True)


class Contexts:
    def __init__(self):
        self.lock = threading.Lock()
        self.by_id = {}
        self.defaults = {}

    def create(self, language, cwd):
        context = Context(language, cwd)
        with self.lock:
            self.by_id[context.id] = context
        return context

    def default(self, language):
        with self.lock:
            context = self.defaults.get(language)
        if context is None:
            context = Context(language, os.path.expanduser("~"))
            with self.lock:
                # Another request may have made it meanwhile: keep the first.
                if language in self.defaults:
                    context.shutdown()
                    context = self.defaults[language]
                else:
                    self.defaults[language] = context
                    self.by_id[context.id] = context
        return context

    def get(self, context_id):
        with self.lock:
            return self.by_id.get(context_id)

    def remove(self, context_id):
        with self.lock:
            context = self.by_id.pop(context_id, None)
            for language, c in list(self.defaults.items()):
                if c is context:
                    del self.defaults[language]
        if context is not None:
            context.shutdown()
        return context is not None

    def all(self):
        with self.lock:
            return list(self.by_id.values())


CONTEXTS = Contexts()


class ClientGone(Exception):
    def __init__(self, msg_id=None):
        super().__init__("the client went away")
        self.msg_id = msg_id


def result_line(content, main):
    line = {"type": "result", "is_main_result": main}
    extra = {}
    for mime, value in content.get("data", {}).items():
        field = FORMATS.get(mime)
        if field:
            line[field] = value
        else:
            extra[mime] = value
    if extra:
        line["extra"] = extra
    return line


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "wrenn-code-interpreter"

    def setup(self):
        super().setup()
        # Lines go out as they come: no Nagle delay behind the client's
        # delayed ACK (about 40 ms a request otherwise).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (self.address_string(), fmt % args))

    # ------------------------------------------------------------ helpers

    def body_json(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw.strip():
            return {}
        try:
            value = json.loads(raw)
        except ValueError as e:
            raise BadRequest(f"the body is not JSON: {e}")
        if not isinstance(value, dict):
            raise BadRequest("the body must be a JSON object")
        return value

    def send_json(self, status, value):
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def send_error_json(self, status, message):
        self.send_json(status, {"error": message, "message": message, "code": status})

    def language(self, body):
        language = (body.get("language") or DEFAULT_LANGUAGE).lower()
        if language not in LANGUAGES:
            raise BadRequest(
                f"language {language!r} is not available here (available: "
                + ", ".join(sorted(LANGUAGES))
                + ")"
            )
        return language

    # ------------------------------------------------------------ routes

    def do_GET(self):
        self.route("GET")

    def do_POST(self):
        self.route("POST")

    def do_DELETE(self):
        self.route("DELETE")

    def route(self, method):
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        parts = path.strip("/").split("/")
        try:
            if method == "GET" and path == "/health":
                return self.send_json(200, "OK")
            if method == "POST" and path == "/execute":
                return self.execute(self.body_json())
            if path == "/contexts":
                if method == "POST":
                    body = self.body_json()
                    language = self.language(body)
                    cwd = body.get("cwd") or os.path.expanduser("~")
                    if not os.path.isdir(cwd):
                        raise BadRequest(f"cwd {cwd!r} is not a directory")
                    return self.send_json(200, CONTEXTS.create(language, cwd).describe())
                if method == "GET":
                    return self.send_json(200, [c.describe() for c in CONTEXTS.all()])
            if len(parts) == 2 and parts[0] == "contexts" and method == "DELETE":
                if not CONTEXTS.remove(parts[1]):
                    return self.send_error_json(404, f"context {parts[1]} not found")
                self.send_response(204)
                self.send_header("Content-Length", "0")
                return self.end_headers()
            if len(parts) == 3 and parts[0] == "contexts" and parts[2] == "restart" and method == "POST":
                context = CONTEXTS.get(parts[1])
                if context is None:
                    return self.send_error_json(404, f"context {parts[1]} not found")
                context.restart()
                self.send_response(204)
                self.send_header("Content-Length", "0")
                return self.end_headers()
            self.send_error_json(404, f"{method} {path}: no such endpoint")
        except BadRequest as e:
            self.send_error_json(400, str(e))

    # ------------------------------------------------------------ execute

    def execute(self, body):
        code = body.get("code")
        if not isinstance(code, str):
            raise BadRequest("`code` (a string) is required")
        context_id = body.get("context_id")
        if context_id:
            context = CONTEXTS.get(context_id)
            if context is None:
                return self.send_error_json(404, f"context {context_id} not found")
        else:
            context = CONTEXTS.default(self.language(body))
        env_vars = body.get("env_vars") or {}
        if not isinstance(env_vars, dict):
            raise BadRequest("`env_vars` must be an object of strings")

        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        with context.lock:
            try:
                if env_vars:
                    context.run_silently(set_env_code(env_vars))
                try:
                    self.stream_execution(context, code)
                finally:
                    if env_vars:
                        context.run_silently(restore_env_code())
                self.write_line({"type": "end_of_execution"})
                self.wfile.write(b"0\r\n\r\n")
            except ClientGone as gone:
                # Interrupt the abandoned code and wait until the kernel is
                # idle again, so the next execution does not get the signal.
                context.km.interrupt_kernel()
                context.wait_idle(gone.msg_id, timeout=30)
                self.close_connection = True

    def write_line(self, value):
        data = (json.dumps(value) + "\n").encode()
        try:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        except OSError:
            raise ClientGone(getattr(self, "running", None))

    def client_gone(self):
        sock = self.connection
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable and sock.recv(1, socket.MSG_PEEK) == b"":
                return True
        except OSError:
            return True
        return False

    def stream_execution(self, context, code):
        client = context.client
        msg_id = client.execute(code, store_history=True, allow_stdin=False)
        self.running = msg_id
        while True:
            try:
                msg = client.get_iopub_msg(timeout=0.5)
            except Empty:
                if self.client_gone():
                    raise ClientGone(msg_id)
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                name = "stderr" if content["name"] == "stderr" else "stdout"
                self.write_line({"type": name, "text": content["text"], "timestamp": now()})
            elif kind == "execute_input":
                self.write_line(
                    {"type": "number_of_executions", "execution_count": content["execution_count"]}
                )
            elif kind == "execute_result":
                self.write_line(result_line(content, True))
            elif kind == "display_data":
                self.write_line(result_line(content, False))
            elif kind == "error":
                self.write_line(
                    {
                        "type": "error",
                        "name": content["ename"],
                        "value": content["evalue"],
                        "traceback": "\n".join(content["traceback"]),
                    }
                )
            elif kind == "status" and content["execution_state"] == "idle":
                return


class BadRequest(Exception):
    pass


def set_env_code(env_vars):
    return (
        "import os as __wrenn_os\n"
        "__wrenn_saved_env = dict(__wrenn_os.environ)\n"
        f"__wrenn_os.environ.update({json.dumps({str(k): str(v) for k, v in env_vars.items()})})\n"
    )


def restore_env_code():
    return (
        "__wrenn_os.environ.clear()\n"
        "__wrenn_os.environ.update(__wrenn_saved_env)\n"
        "del __wrenn_saved_env\n"
    )


def main():
    # The default Python kernel starts with the server, so the first
    # run_code does not wait for it (READY waits for /health).
    CONTEXTS.default(DEFAULT_LANGUAGE)
    server = ThreadingHTTPServer(("0.0.0.0", PORT), Handler)
    server.daemon_threads = True
    sys.stderr.write(f"code interpreter listening on :{PORT}\n")
    try:
        server.serve_forever()
    finally:
        for context in CONTEXTS.all():
            context.shutdown()


if __name__ == "__main__":
    main()
