# hako calibration: runs once per zygote, in a run child like any program. It does what a
# Dify code node does (decode inputs, call main, print the JSON result), says so, and waits:
# the helper then notes which pages this child has written, and later children copy those
# pages before their run instead of faulting on them while it runs.
import atexit
import contextlib
import io
import json
import os
import resource
import struct
import sys
import time
from base64 import b64decode, b64encode


def main(arg1: str, arg2: str) -> dict:
    return {"result": arg1 + arg2}


with contextlib.redirect_stdout(io.StringIO()):
    inputs = b64encode(json.dumps({"arg1": "Hello", "arg2": "World"}).encode()).decode()
    inputs_obj = json.loads(b64decode(inputs).decode("utf-8"))
    output_obj = main(**inputs_obj)
    output_json = json.dumps(output_obj, indent=4)
    print(f"<<RESULT>>{output_json}<<RESULT>>")
    # The operator's warm-up (hako.python_warmup), set by the helper above this program.
    try:
        exec(compile(WARMUP, "<hako.python_warmup>", "exec"), {"__name__": "__hako_warmup__"})
    except BaseException:
        pass

# What the loader does after every program (without reporting an exit).
threading = sys.modules.get("threading")
if threading is not None:
    threading._shutdown()
atexit._run_exitfuncs()
sys.stdout.flush()
sys.stderr.flush()
usage = resource.getrusage(resource.RUSAGE_SELF)
struct.pack("<iiQQ", 0, 0, int((usage.ru_utime + usage.ru_stime) * 1000), usage.ru_maxrss)

os.write(1, b"calibrated\n")
time.sleep(30)
