# hako calibration: runs once per zygote, in a run child like any program. It is Dify's
# template with a trivial `main` (decode inputs, call main, print the JSON result) and the
# loader's epilogue, and nothing more, so that the pages it writes are those a run of the
# template writes. Then it lists the pages it has written and waits: later children copy
# those pages before their run instead of faulting on them. It reads its own page map: its
# supervisor may not read another uid's (root without CAP_SYS_PTRACE, as in a container).
import json
from base64 import b64decode


def main(arg1: str, arg2: str) -> dict:
    return {"result": arg1 + arg2}


inputs_obj = json.loads(b64decode("eyJhcmcxIjogIkhlbGxvIiwgImFyZzIiOiAiV29ybGQifQ==").decode("utf-8"))
output_obj = main(**inputs_obj)
output_json = json.dumps(output_obj, indent=4)
result = f"""<<RESULT>>{output_json}<<RESULT>>"""
print(result)

# The operator's warm-up (hako.python_warmup), set by the helper above this program.
if WARMUP.strip():
    try:
        exec(compile(WARMUP, "<hako.python_warmup>", "exec"), {"__name__": "__hako_warmup__"})
    except BaseException:
        pass

# What the loader does after every program (without reporting an exit: the zygote does that).
import atexit
import os
import select
import sys

threading = sys.modules.get("threading")
if threading is not None:
    threading._shutdown()
atexit._run_exitfuncs()
sys.stdout.flush()
sys.stderr.flush()


# The pages written since the fork, listed by the zygote library (zygote/written.rs), whose
# buffers leave this process's heaps alone; LIBRARY is set by the helper above this program.
import ctypes

ctypes.CDLL(LIBRARY).hako_list_written_pages(1)
os.write(1, b"calibrated\n")
select.select([], [], [], 30)
