# hako session driver (agent API): one long-lived Python interpreter. Requests arrive on
# fd 4 and replies leave on the original fd 1, each as a u32 LE length and a JSON object.
# The code's own stdout and stderr go to pipes that two threads collect per exec.
import ast as _ast
import base64 as _b64
import io as _io
import json as _json
import linecache as _linecache
import os as _os
import sys as _sys
import threading as _threading
import traceback as _traceback

_REQ_FD = 4
_CAP = int(_os.environ.pop("HAKO_SESSION_OUTPUT_BYTES", "1048576"))
_FILE_CAP = int(_os.environ.pop("HAKO_SESSION_FILE_BYTES", "16777216"))
_SENTINEL = b"\0hako-" + _os.urandom(16).hex().encode() + b"\0"
_REPLY_FD = _os.dup(1)
_os.set_inheritable(_REPLY_FD, False)


class _Collector:
    def __init__(self, target):
        r, w = _os.pipe()
        _os.dup2(w, target)
        _os.close(w)
        self.fd = r
        self.target = target
        self.buf = bytearray()
        self.truncated = False
        self.marks = 0
        self.cond = _threading.Condition()
        _threading.Thread(target=self._run, daemon=True).start()

    def _add(self, data):
        room = _CAP - len(self.buf)
        if len(data) > room:
            data = data[: max(room, 0)]
            if not self.truncated:
                self.truncated = True
                self.buf += data
                _output_limited()
                return
        self.buf += data

    def _run(self):
        pending = b""
        keep = len(_SENTINEL) - 1
        while True:
            data = _os.read(self.fd, 65536)
            if not data:
                return
            pending += data
            while True:
                i = pending.find(_SENTINEL)
                if i < 0:
                    break
                self._add(pending[:i])
                pending = pending[i + len(_SENTINEL):]
                with self.cond:
                    self.marks += 1
                    self.cond.notify_all()
            if len(pending) > keep:
                self._add(pending[:-keep])
                pending = pending[-keep:]

    def take(self):
        """Everything written before now; empty if the code closed the stream."""
        with self.cond:
            target = self.marks + 1
        try:
            _os.write(self.target, _SENTINEL)
        except OSError:
            return "", False
        with self.cond:
            while self.marks < target:
                self.cond.wait()
        text = bytes(self.buf).decode("utf-8", "replace")
        truncated = self.truncated
        self.buf = bytearray()
        self.truncated = False
        return text, truncated


_out = _Collector(1)
_err = _Collector(2)
_scope = {"__name__": "__main__", "__builtins__": __builtins__}
_count = 0


_reply_lock = _threading.Lock()


def _reply(obj):
    data = _json.dumps(obj).encode()
    view = memoryview(len(data).to_bytes(4, "little") + data)
    with _reply_lock:
        while view:
            n = _os.write(_REPLY_FD, view)
            view = view[n:]


def _output_limited():
    # The code wrote more than the cap: the session ends here, as a run would.
    _reply({"output_limited": True,
            "stdout": bytes(_out.buf).decode("utf-8", "replace"),
            "stderr": bytes(_err.buf).decode("utf-8", "replace")})


def _read_exact(n):
    out = bytearray()
    while len(out) < n:
        chunk = _os.read(_REQ_FD, n - len(out))
        if not chunk:
            return None
        out += chunk
    return bytes(out)


def _format_exception(e, name):
    tb = e.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != name:
        tb = tb.tb_next
    return "".join(_traceback.format_exception(type(e), e, tb))


def _figures():
    plt = _sys.modules.get("matplotlib.pyplot")
    if plt is None:
        return []
    images = []
    for num in plt.get_fignums():
        try:
            buf = _io.BytesIO()
            plt.figure(num).savefig(buf, format="png")
            images.append({"mime": "image/png", "base64": _b64.b64encode(buf.getvalue()).decode()})
        except Exception as e:
            print(f"hako: cannot render figure {num}: {e}", file=_sys.stderr)
    plt.close("all")
    return images


def _exec(code):
    global _count
    _count += 1
    name = f"<exec-{_count}>"
    _linecache.cache[name] = (len(code), None, code.splitlines(True), name)
    value, error = None, None
    try:
        tree = _ast.parse(code, name, "exec")
        last = None
        if tree.body and isinstance(tree.body[-1], _ast.Expr):
            last = _ast.Expression(tree.body.pop().value)
        exec(compile(tree, name, "exec"), _scope)
        if last is not None:
            result = eval(compile(last, name, "eval"), _scope)
            if result is not None:
                value = repr(result)
    except SystemExit as e:
        error = f"SystemExit: {e.code}\n"
    except BaseException as e:
        error = _format_exception(e, name)
        print(error, file=_sys.stderr, end="")
    images = _figures()
    for stream in (_sys.stdout, _sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    stdout, out_cut = _out.take()
    stderr, err_cut = _err.take()
    return {"stdout": stdout, "stderr": stderr, "value": value, "images": images,
            "error": error, "truncated": out_cut or err_cut}


def _path(rel):
    full = _os.path.normpath(_os.path.join("/tmp", rel))
    if not full.startswith("/tmp/"):
        raise ValueError(f"path {rel!r} is outside the workspace")
    return full


def _files():
    listing = []
    for root, dirs, names in _os.walk("/tmp"):
        dirs.sort()
        for name in sorted(names):
            full = _os.path.join(root, name)
            if _os.path.isfile(full) and not _os.path.islink(full):
                listing.append({"path": full[5:], "size": _os.path.getsize(full)})
    return listing


def _handle(req):
    op = req.get("op")
    if op == "exec":
        return _exec(req["code"])
    try:
        if op == "put":
            full = _path(req["path"])
            _os.makedirs(_os.path.dirname(full), exist_ok=True)
            with open(full, "wb") as f:
                f.write(_b64.b64decode(req["data"]))
            return {"ok": True}
        if op == "get":
            full = _path(req["path"])
            if not _os.path.isfile(full):
                return {"missing": True}
            with open(full, "rb") as f:
                data = f.read(_FILE_CAP + 1)
            if len(data) > _FILE_CAP:
                return {"failed": f"file is larger than {_FILE_CAP} bytes"}
            return {"data": _b64.b64encode(data).decode()}
        if op == "list":
            return {"files": _files()}
    except Exception as e:
        return {"failed": str(e)}
    return {"failed": f"unknown operation {op!r}"}


def _serve():
    _os.chdir("/tmp")
    _reply({"ready": True})
    while True:
        head = _read_exact(4)
        if head is None:
            return
        body = _read_exact(int.from_bytes(head, "little"))
        if body is None:
            return
        _reply(_handle(_json.loads(body)))


_serve()
_os._exit(0)
