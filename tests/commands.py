"""Running the package's commands from the tests: `run` is `subprocess.run(args, cwd=…,
capture_output=True, text=True, timeout=…)`, forked from a warm interpreter where it can be.

Each command is still its own process, with its own arguments, working folder, environment,
stdin/stdout/stderr and exit status, and runs the command's module from its start (flags,
main, one-line errors, exit codes).  What it skips is the interpreter's start and TensorFlow's
import (~4 s of CPU on the 2-core CI machine, each of the suite's ~280 commands): a
zygote process (command_zygote.py, one per test process) has imported them once and forks.

A command runs fresh (`subprocess.run`, what a user runs) when:
* fresh=True: its test is about the process's start (TensorFlow's start-up lines held back,
  Ctrl-C while starting) or about what the import reads;
* its environment differs from the zygote's in a variable read while importing (TF_*, XLA_*,
  CUDA*, PYTHON*, KERAS_*, TMPDIR (cached by tempfile), LANG and LC_* (the streams' encoding), ...;
  TF_CONFIG is read by the command);
* it is not one of the package's commands (`python -c`, saved_model_cli, bash);
* TF_BACKPROP_TESTS_FRESH=1 is set: every command fresh, for a run of the suite as users run;
* the system cannot serve forks (no os.pidfd_open: Linux before 5.3); a warning says so.
Commands the tests signal while they run (Ctrl-C, SIGKILL mid-run) use subprocess.Popen.
"""

from __future__ import annotations

import atexit
import io
import json
import locale
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings

FRESH_ENV = "TF_BACKPROP_TESTS_FRESH"
_ZYGOTE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "command_zygote.py")
_BIN = os.path.dirname(sys.executable)
_SCRIPT_PREFIX = "tf-backprop-"
_MODULE_PREFIX = "tf_backprop.cli."
_READ_AT_IMPORT = (  # or at the interpreter's start: the locale decides the streams' encoding
    *("TF_", "XLA_", "CUDA", "PYTHON", "LD_", "OMP_", "KMP_", "MKL", "OPENBLAS", "TMPDIR"),
    "KERAS_",  # KERAS_BACKEND, KERAS_HOME: read as Keras imports
    *("LANG", "LC_"),
)
_READ_BY_THE_COMMAND = ("TF_CONFIG",)
_START_SECONDS = 300  # the zygote's imports: ~4 s alone, much longer on a loaded machine
_KILLED_SECONDS = 60  # a SIGKILLed child's end reported


def run(
    args: list[str],
    *,
    cwd: str,
    timeout: float,
    env: dict[str, str] | None = None,
    fresh: bool = False,
) -> subprocess.CompletedProcess:
    """subprocess.run(args, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True,
    text=True, timeout=timeout), forked from the zygote unless the command must run fresh (above)."""
    env = dict(os.environ if env is None else env)
    module = command_module(args)
    zygote = None if fresh or module is None or not forks_with(env) else _zygote()
    if zygote is None:
        return subprocess.run(
            args,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    return zygote.run(args, module, cwd, env, timeout)


def command_module(args: list[str]) -> str | None:
    """The module of one of the package's commands run as `python -m tf_backprop.cli.NAME` or
    as its console script `<venv>/bin/tf-backprop-NAME`; None for any other command line."""
    if (
        len(args) >= 3
        and args[0] == sys.executable
        and args[1] == "-m"
        and args[2].startswith(_MODULE_PREFIX)
    ):
        return args[2]
    script = os.path.basename(args[0]) if args else ""
    if args and os.path.dirname(args[0]) == _BIN and script.startswith(_SCRIPT_PREFIX):
        return _MODULE_PREFIX + script[len(_SCRIPT_PREFIX) :]
    return None


def forks_with(env: dict[str, str]) -> bool:
    """Whether a command with this environment may be forked: fresh runs not asked for, and
    every variable read while importing as the zygote had it."""
    if os.environ.get(FRESH_ENV, "0") not in ("", "0"):
        return False
    started = _ZygoteProcess.instance
    return _read_at_import(env) == _read_at_import(started.env if started else os.environ)


def _read_at_import(env: dict[str, str]) -> dict[str, str]:
    values = {
        name: value
        for name, value in env.items()
        if name.startswith(_READ_AT_IMPORT) and name not in _READ_BY_THE_COMMAND
    }
    values.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # what the package's import sets, when unset
    return values


class _ZygoteProcess:
    """The zygote of this test process, started on the first forked command."""

    instance: _ZygoteProcess | None = None

    def __init__(self):
        self.env = dict(os.environ)  # what it imports with: a command's environment by default
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.channel = ours
        self.stderr = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [sys.executable, _ZYGOTE, str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            cwd=tempfile.gettempdir(),
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.stderr,
        )
        theirs.close()
        atexit.register(self.close)
        started = self._receive(_START_SECONDS)
        self.missing = started.get("missing")  # what this system lacks: every command runs fresh
        if self.missing is not None:
            warnings.warn(f"the tests' commands run fresh: {self.missing}", RuntimeWarning, stacklevel=3)
        elif started != {"ready": True}:
            raise RuntimeError(f"the command zygote did not start: {started}")

    def _receive(self, timeout: float | None) -> dict:
        self.channel.settimeout(timeout)
        data = self.channel.recv(1 << 16)
        if not data:
            self.stderr.seek(0)
            raise RuntimeError(f"the command zygote ended:\n{self.stderr.read().decode(errors='replace')}")
        return json.loads(data)

    def run(
        self, args: list[str], module: str, cwd: str, env: dict[str, str], timeout: float
    ) -> subprocess.CompletedProcess:
        console_script = args[1:2] != ["-m"]
        request = {
            "argv": list(args) if console_script else list(args[2:]),  # [script or module, flags...]
            "module": module,
            "console_script": console_script,
            "cwd": os.path.abspath(cwd),
            "env": env,
        }
        with (
            open(os.devnull, "rb") as stdin,
            tempfile.TemporaryFile() as out,
            tempfile.TemporaryFile() as err,
        ):
            fds = [stdin.fileno(), out.fileno(), err.fileno()]
            socket.send_fds(self.channel, [json.dumps(request).encode()], fds)
            started = time.monotonic()
            pid = self._receive(_START_SECONDS)["pid"]
            try:
                ended = self._receive(max(timeout - (time.monotonic() - started), 0.001))
            except TimeoutError:
                os.kill(pid, signal.SIGKILL)
                self._receive(_KILLED_SECONDS)
                raise subprocess.TimeoutExpired(args, timeout, _text(out), _text(err)) from None
            return subprocess.CompletedProcess(args, ended["returncode"], _text(out), _text(err))

    def close(self) -> None:
        self.channel.close()  # the zygote ends at its channel's end
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.stderr.close()


def _zygote() -> _ZygoteProcess | None:
    """This test process's zygote, started on first use; None where the system cannot fork
    commands (they run fresh)."""
    if _ZygoteProcess.instance is None:
        _ZygoteProcess.instance = _ZygoteProcess()
    return _ZygoteProcess.instance if _ZygoteProcess.instance.missing is None else None


def _text(file) -> str:
    """What the command wrote to `file`, decoded as subprocess's text=True decodes a pipe."""
    file.seek(0)
    return io.TextIOWrapper(io.BytesIO(file.read()), encoding=locale.getpreferredencoding(False)).read()
