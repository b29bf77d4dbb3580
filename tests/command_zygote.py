"""A warm interpreter that forks the package's commands for the tests (`commands.run`).

Run as `python command_zygote.py FD`, FD one end of a SOCK_SEQPACKET socket pair held by the
test process.  It imports TensorFlow and Keras once, through the package (~4 s on the 2-core
CI machine), then for each request forks a child that becomes the command: the request's
stdin/stdout/stderr (passed as file descriptors), working folder, environment and argv, then
the command's module run as `python -m` runs it (or its `run()` called, as its console script
does).  The child ends as that process would, through the interpreter's own exit.

Nothing runs in this process after the imports but the serving loop: no TensorFlow op, no
thread (the imports leave one, OpenBLAS's, which has fork handlers), so every child starts from
the same state a fresh `python -m tf_backprop.cli.…` reaches after its imports.

Messages (one JSON object each): in, {"argv", "cwd", "env", "module", "console_script"} with
three file descriptors; out, {"ready": true} once (or {"ready": false, "missing": WHAT}, and
the end, where the system lacks what serving needs), {"pid": N} when a child starts and
{"pid": N, "returncode": R} when it ends (R as subprocess reports it: -signal if killed).
The socket's end (the test process gone) ends this process.
"""

import gc  # noqa: I001 - the package's import first, below
import importlib
import json
import os
import runpy
import selectors
import socket
import sys

# What every command imports, and no more: a module imported here would be an attribute of its
# package in every child, hiding a command's missing import of it.  The package first: it
# imports TensorFlow with its start-up lines held back and probes for GPUs, and the children
# inherit the probe (imported first, Keras would import TensorFlow unprobed, and each child's
# first op would print `E0000 … failed call to cuInit` on a machine without a GPU).
import tf_backprop  # noqa: F401
import keras  # noqa: F401

# The imports frozen out of the collector's reach, as a command's own are at its main
# (`tf_backprop.command_started`).  Without it a child that ends before its main (a bad flag)
# walks all of them in its exit's collections, writing to each page it inherited: ~0.9 s of
# copy-on-write per command on the 2-core CI machine, against ~0.2 s frozen.
gc.freeze()

_MESSAGE_BYTES = 1 << 20  # a request: argv and environment, a few kB


def _send(channel: socket.socket, message: dict) -> None:
    channel.send(json.dumps(message).encode())


def serve(channel: socket.socket) -> tuple[dict, list[int]] | None:
    """Serves requests until the channel closes (returns None); in a forked child, returns
    that child's request and file descriptors."""
    children = selectors.DefaultSelector()
    children.register(channel, selectors.EVENT_READ)
    _send(channel, {"ready": True})
    while True:
        for key, _ in children.select():
            if key.fileobj is channel:
                data, fds, _, _ = socket.recv_fds(channel, _MESSAGE_BYTES, 3)
                if not data:
                    return None
                request = json.loads(data)
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    children.close()
                    channel.close()
                    return request, fds
                for fd in fds:
                    os.close(fd)
                children.register(os.pidfd_open(pid), selectors.EVENT_READ, pid)
                _send(channel, {"pid": pid})
            else:
                children.unregister(key.fileobj)
                os.close(key.fd)
                _, status = os.waitpid(key.data, 0)
                _send(channel, {"pid": key.data, "returncode": os.waitstatus_to_exitcode(status)})


def become(request: dict, fds: list[int]) -> None:
    """Turns this forked child into the requested command; returns (or raises SystemExit)
    as the command's main module would."""
    for target, fd in enumerate(fds):  # stdin, stdout, stderr
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    if request["console_script"]:
        sys.argv = request["argv"]
        sys.path[0] = os.path.dirname(request["argv"][0])  # as for a script
        sys.exit(importlib.import_module(request["module"]).run())
    sys.argv = ["-m", *request["argv"][1:]]
    sys.path[0] = os.getcwd()  # as `python -m` does
    runpy.run_module(request["module"], run_name="__main__", alter_sys=True)


def missing_support() -> str | None:
    """What this system lacks for serving (None: nothing): a child's end is watched through
    its pidfd (Linux 5.3 and later)."""
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError) as error:
        return f"os.pidfd_open: {error}"
    return None


if __name__ == "__main__":
    _channel = socket.socket(fileno=int(sys.argv[1]))
    _missing = missing_support()
    if _missing is not None:
        _send(_channel, {"ready": False, "missing": _missing})
        sys.exit(0)
    _served = serve(_channel)
    if _served is None:
        sys.exit(0)
    become(*_served)
