# hako one-shot run driver (agent API). Runs inside the jail as the program: reads the
# request (JSON) from fd 4, writes the input files into /tmp, runs the code as __main__,
# then appends the returned files to stdout after a per-run marker.
import base64 as _b64
import json as _json
import linecache as _linecache
import os as _os
import re as _re
import sys as _sys


def _read_all(fd):
    chunks = []
    while True:
        chunk = _os.read(fd, 1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
    _os.close(fd)
    return b"".join(chunks)


def _glob_regex(pattern):
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        out.append("[^/]*" if c == "*" else "[^/]" if c == "?" else _re.escape(c))
        i += 1
    return _re.compile("".join(out) + r"\Z")


def _collect(patterns, limit):
    regexes = [_glob_regex(p) for p in patterns]
    files, skipped, total = {}, [], 0
    for root, dirs, names in _os.walk(".", followlinks=False):
        dirs.sort()
        for name in sorted(names):
            rel = _os.path.join(root, name)[2:]
            if not any(r.match(rel) for r in regexes):
                continue
            if _os.path.islink(rel) or not _os.path.isfile(rel):
                continue
            size = _os.path.getsize(rel)
            if total + size > limit:
                skipped.append(rel)
                continue
            with open(rel, "rb") as f:
                data = f.read(limit - total + 1)
            if total + len(data) > limit:
                skipped.append(rel)
                continue
            total += len(data)
            files[rel] = _b64.b64encode(data).decode()
    return files, skipped


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        n = _os.write(fd, view)
        view = view[n:]


def _main():
    req = _json.loads(_read_all(4))
    _os.chdir("/tmp")
    for rel, data in req.get("files", {}).items():
        folder = _os.path.dirname(rel)
        if folder:
            _os.makedirs(folder, exist_ok=True)
        with open(rel, "wb") as f:
            f.write(_b64.b64decode(data))
    if req.get("stdin") is not None:
        path = "/tmp/.hako-stdin"
        with open(path, "wb") as f:
            f.write(_b64.b64decode(req["stdin"]))
        fd = _os.open(path, _os.O_RDONLY)
        _os.unlink(path)
        _os.dup2(fd, 0)
        _os.close(fd)
    code = req["code"]
    name = "/tmp/main.py"
    _linecache.cache[name] = (len(code), None, code.splitlines(True), name)
    status = 0
    scope = {"__name__": "__main__", "__builtins__": __builtins__, "__file__": name}
    try:
        exec(compile(code, name, "exec"), scope)
    except SystemExit as e:
        status = _exit_status(e)  # exit_status.py, sent in front of this file
    except BaseException as e:
        import traceback
        tb = e.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != name:
            tb = tb.tb_next
        traceback.print_exception(type(e), e, tb)
        status = 1
    for stream in (_sys.stdout, _sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    if req.get("return"):
        try:
            _os.chdir("/tmp")
            files, skipped = _collect(req["return"], req["limit"])
            trailer = _json.dumps({"files": files, "skipped": skipped})
            _write_all(1, req["marker"].encode() + trailer.encode())
        except BaseException as e:
            print(f"hako: cannot return files: {e}", file=_sys.stderr)
    _os._exit(status & 0xFF)


_main()
