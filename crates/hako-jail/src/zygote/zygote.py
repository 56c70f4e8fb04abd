# hako zygote: imports the preload modules once, then forks one child per run.
# Runs inside the jail with namespace capabilities only. It never touches request data:
# each child confines itself through the hako library (Rust) before reading the program.
#
# Protocol: the control messages are hako-wire's `control::Message` (crates/hako-wire/src/
# control.rs), its only specification: one SEQPACKET datagram per message, first byte the
# message's name, then its body; descriptors as SCM_RIGHTS. This file speaks SETTINGS ("W",
# received once, first), ZYGOTE_READY ("Z"), FORK ("F", 4 descriptors), FORKED ("P", pidfds
# of the child and of its pid namespace's reaper), WORKER ("A", 1 descriptor: fork a worker
# zygote that speaks on it; it says ZYGOTE_READY with a pidfd of itself), ERROR ("E") and
# EXITED ("X", i32 code, i32 signal, u64 cpu_ms, u64 max_rss_bytes, little-endian, sent after
# wait4 of the child and the end of its reaper). A run child's program never holds a control
# socket.
import atexit
import builtins
import ctypes
import json
import linecache
import os
import resource
import select
import signal
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

MSG_SETTINGS, MSG_ZYGOTE_READY, MSG_FORK, MSG_FORKED, MSG_ERROR, MSG_EXITED, MSG_WORKER = (
    b"W", b"Z", b"F", b"P", b"E", b"X", b"A")

_control = socket.socket(fileno=3)

_hako = ctypes.PyDLL(LIBRARY)
_hako.hako_prepare_fork.restype = ctypes.c_int
_hako.hako_end_pid_namespace.restype = None
_hako.hako_end_pid_namespace.argtypes = [ctypes.c_int]
_hako.hako_confine.restype = ctypes.c_int
_hako.hako_confine.argtypes = [
    ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int,
]



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


def _child(params, fds):
    run_ctl, out, err, program = fds
    _control.detach()  # the Rust side closes fd 3; Python must not close it again later
    # Confines this process, waits until the run is handed over, and closes run_ctl: from
    # here on this process holds no channel to its supervisor.
    if _hako.hako_confine(params, len(params), run_ctl, out, err, program) != 0:
        os._exit(126)
    del run_ctl
    # Confined: only now is the request read (u32 length, environment JSON, program).
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


def _worker(fd):
    # A worker zygote: a copy of this preloaded process (its pages shared copy-on-write) that
    # forks run children for a helper of its own, on the socket `fd`.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # workers are reaped by the kernel
    if os.fork() != 0:
        os.close(fd)
        return
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # a worker reaps its run children itself
    os.dup2(fd, _control.fileno())  # its own socket replaces the parent's
    os.close(fd)
    pidfd = os.pidfd_open(os.getpid())
    _control.sendmsg([MSG_ZYGOTE_READY + b"[]"],
                     [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", pidfd))])
    os.close(pidfd)


def _fork(poller, children):
    fd_size = struct.calcsize("i")
    message, ancillary, _flags, _addr = _control.recvmsg(1 << 20, socket.CMSG_SPACE(4 * fd_size))
    if not message:
        os._exit(0)
    fds = []
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(data) - len(data) % fd_size
            fds.extend(struct.unpack("%di" % (usable // fd_size), data[:usable]))
    if message == MSG_WORKER and len(fds) == 1 and not children:
        _worker(fds[0])
        return
    if message[:1] != MSG_FORK or len(fds) != 4:
        for fd in fds:
            os.close(fd)
        _control.sendall(MSG_ERROR + b"bad fork request")
        return
    # The child is pid 2 of a fresh pid namespace; pid 1 is a reaper, ended after the child.
    reaper = _hako.hako_prepare_fork()
    if reaper < 0:
        for fd in fds:
            os.close(fd)
        _control.sendall(MSG_ERROR + b"cannot prepare a pid namespace")
        return
    try:
        pid = os.fork()
    except OSError as e:  # e.g. the run in progress holds the group's last pid
        _hako.hako_end_pid_namespace(reaper)
        for fd in fds:
            os.close(fd)
        _control.sendall(MSG_ERROR + b"cannot fork: %s" % str(e).encode())
        return
    if pid == 0:
        try:
            _child(message[1:], fds)
        finally:
            os._exit(126)
    for fd in fds[1:]:
        os.close(fd)
    # Prepared at the lowest priority (before the helper can restore it when a run waits for
    # this child), so preparing never slows the run in progress.
    try:
        os.setpriority(os.PRIO_PROCESS, pid, 19)
    except OSError:
        pass
    # Keep the child's control socket: its end is reported there after reaping.
    pidfd = os.pidfd_open(pid)
    children[pidfd] = (pid, fds[0], reaper)
    poller.register(pidfd, select.POLLIN)
    reaper_fd = os.pidfd_open(reaper)
    _control.sendmsg([MSG_FORKED], [
        (socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("2i", pidfd, reaper_fd))])
    os.close(reaper_fd)


def _reap(poller, children, pidfd):
    pid, run_ctl, reaper = children.pop(pidfd)
    poller.unregister(pidfd)
    os.close(pidfd)
    # Whatever the run left behind dies with its pid 1, before its end is reported. The
    # reaper is told first, so that it dies while the child is reaped.
    os.kill(reaper, signal.SIGKILL)
    _, status, usage = os.wait4(pid, 0)
    _hako.hako_end_pid_namespace(reaper)
    if os.WIFSIGNALED(status):
        code, signo = 0, os.WTERMSIG(status)
    else:
        code, signo = os.WEXITSTATUS(status), 0
    cpu_ms = int((usage.ru_utime + usage.ru_stime) * 1000)
    try:
        os.write(run_ctl, MSG_EXITED + struct.pack("<iiQQ", code, signo, cpu_ms, usage.ru_maxrss * 1024))
    except OSError:
        pass
    os.close(run_ctl)


def _serve():
    # Children run (and are prepared) while the zygote waits for the next fork request.
    poller = select.poll()
    poller.register(_control.fileno(), select.POLLIN)
    children = {}
    while True:
        for fd, _events in poller.poll():
            if fd in children:
                _reap(poller, children, fd)
            else:
                _fork(poller, children)


_serve()
