# hako zygote: imports the preload modules once, then forks one child per run.
# Runs inside the jail with namespace capabilities only. It never touches request data:
# each child is confined by the hako library (Rust) before it reads the program.
#
# Protocol: the control messages are hako-wire's `control::Message` (crates/hako-wire/src/
# control.rs), its only specification: one SEQPACKET datagram per message, first byte the
# message's name, then its body; descriptors as SCM_RIGHTS. This file speaks SETTINGS ("W",
# received once, first) and ZYGOTE_READY ("Z"); the library's loop (crates/hako-jail/src/
# zygote/forker.rs) speaks the rest: FORK ("F", 4 descriptors), FORKED ("P", pidfds of the
# child and of its pid namespace's reaper), WORKER ("A", 1 descriptor: fork a worker zygote
# that speaks on it; it says ZYGOTE_READY with a pidfd of itself), ERROR ("E") and EXITED
# ("X", sent after wait4 of the child and the end of its reaper). A run child's program
# never holds a control socket.
import atexit
import builtins
import ctypes
import json
import linecache
import os
import resource
import socket
import struct
import sys
import traceback
import types
# Not imported here: threading and random. Each registers a fork handler that every run child
# would pay for (about 100 page copies for threading) before its program starts; a program
# that uses them imports them itself.

LIBRARY = os.environ.pop("HAKO_ZYGOTE_LIBRARY")
PROGRAM_PATH = "/sandbox/main.py"

MSG_SETTINGS, MSG_ZYGOTE_READY = b"W", b"Z"

_control = socket.socket(fileno=3)

_hako = ctypes.PyDLL(LIBRARY)
_hako.hako_serve.restype = ctypes.c_int
_hako.hako_serve.argtypes = [ctypes.c_int]
_hako.hako_can_serve.restype = ctypes.c_int



def _settings():
    # The operator's preload list and warm-up code (hako-wire's `zygote::ZygoteSettings`)
    # arrive on the control socket, never in the environment: run children inherit this
    # process's memory and environment block, and close the socket before their program.
    message = _control.recv(1 << 20)
    if message[:1] != MSG_SETTINGS:
        raise SystemExit("hako zygote: expected the settings message first")
    return json.loads(message[1:])


def _warm(settings):
    skipped = []
    for name in settings.get("preload", []):
        try:
            __import__(name)
        except BaseException as e:  # a module that fails to import is skipped and reported
            skipped.append("%s: %s: %s" % (name, type(e).__name__, e))
    # The operator's warm-up code (hako.python_warmup): what it touches is warm for every run.
    warmup = settings.get("warmup", "")
    if warmup.strip():
        stdout = sys.stdout
        try:
            sys.stdout = open(os.devnull, "w")
            exec(compile(warmup, "<hako.python_warmup>", "exec"), {"__name__": "__hako_warmup__"})
        except BaseException as e:
            skipped.append("hako.python_warmup: %s: %s" % (type(e).__name__, e))
        finally:
            sys.stdout = stdout
    # No name of this module keeps the settings: runs see this module's globals. (The freed
    # memory is not scrubbed: warm-up code must hold no secret; see docs/security.md.)
    settings.clear()
    return skipped


def _warm_the_loader():
    # Runs a Dify-shaped program of hako's own through the path every run takes (compile,
    # exec, json, base64, print), so that what Python sets up on first use (the compiler's
    # AST types, the encoder) is set up here once instead of in every child.
    source = (
        "import json\n"
        "from base64 import b64decode, b64encode\n"
        "def main(arg1: str, arg2: str) -> dict:\n"
        "    return {'result': arg1 + arg2, 'items': [1, 2.5, None, True]}\n"
        "inputs_obj = json.loads(b64decode(b64encode(b'{\"arg1\": \"a\", \"arg2\": \"b\"}')).decode('utf-8'))\n"
        "output_json = json.dumps(main(**inputs_obj), indent=4)\n"
        "print(f'''<<RESULT>>{output_json}<<RESULT>>''')\n"
    )
    namespace = {"__name__": "__hako_warm__", "__builtins__": builtins}
    stdout = sys.stdout
    try:
        with open(os.devnull, "w") as sys.stdout:
            exec(compile(source, PROGRAM_PATH, "exec"), namespace)
    except BaseException:  # only a saving: runs work without it
        pass
    finally:
        sys.stdout = stdout
        namespace.clear()


_skipped = _warm(_settings())
_warm_the_loader()
# Move everything imported so far out of the garbage collector's reach: children then do
# not touch (and copy) those pages when they collect.
import gc
gc.collect()
gc.freeze()
if _hako.hako_can_serve() != 0:
    raise SystemExit("hako zygote: this interpreter cannot serve runs (see above)")
_control.sendall(MSG_ZYGOTE_READY + json.dumps(_skipped).encode())
del _skipped
sys.stdout.flush()
sys.stderr.flush()


def _reseed():
    # Anything that drew entropy in the zygote gets fresh entropy in every child.
    for name in ("random", "numpy.random"):
        module = sys.modules.get(name)
        if module is not None:
            module.seed()


def _run_program(source):
    linecache.cache[PROGRAM_PATH] = (len(source), None, source.splitlines(True), PROGRAM_PATH)
    main = types.ModuleType("__main__")
    main.__file__ = PROGRAM_PATH
    main.__builtins__ = builtins
    sys.modules["__main__"] = main
    sys.argv = [PROGRAM_PATH]
    status = 0
    try:
        exec(compile(source, PROGRAM_PATH, "exec"), main.__dict__)
    except SystemExit as e:
        status = _exit_status(e)  # exit_status.py, sent in front of this file
    except BaseException as e:
        # Like the interpreter: the traceback starts at the program, not at this loader.
        tb = e.__traceback__.tb_next if e.__traceback__ is not None else None
        traceback.print_exception(type(e), e, tb)
        status = 1
    try:
        # Like the interpreter at exit: wait for threads only if threading was imported.
        threading = sys.modules.get("threading")
        if threading is not None:
            threading._shutdown()
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:
                pass
    # The end is reported by the zygote after wait4: nothing this process says is trusted.
    os._exit(status & 0xFF)


def _run_child(program):
    # A run child, confined by the library and given its run; it holds no channel to its
    # supervisor. Only now is the request read (u32 length, environment JSON, program).
    _control.detach()  # the library closed fd 3; Python must not close it again later
    chunks = []
    while True:
        chunk = os.read(program, 1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(program)
    data = b"".join(chunks)
    (env_len,) = struct.unpack_from("<I", data)
    env = dict(json.loads(data[4:4 + env_len]))
    if env and env != os.environ:
        os.environ.clear()
        os.environ.update(env)
    _reseed()
    _run_program(data[4 + env_len:].decode("utf-8", "surrogateescape"))


# The loop (fork, reap, report; workers too) is the library's: between runs this interpreter
# runs no bytecode, so it writes none of the pages it shares with its children. It returns
# in a run child only.
_program = _hako.hako_serve(_control.fileno())
try:
    if _program >= 0:
        _run_child(_program)
finally:
    # Whatever escapes the program's own handling (an exception raised during the
    # interpreter's epilogue) ends it here, quietly, as it ended before this loader existed.
    os._exit(126)
