# hako: the exit status Python gives an uncaught SystemExit, shared by the Python run
# drivers (the zygote's zygote.py and the agent API's run_driver.py): the Rust side puts
# this text in front of each of them before it sends them into the jail.
def _exit_status(e):
    if e.code is None:
        return 0
    if isinstance(e.code, int):
        return e.code
    import sys

    print(e.code, file=sys.stderr)
    return 1


