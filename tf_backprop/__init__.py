"""tf_backprop: backpropagation made visible, verified and fast (TensorFlow 2 / Keras 3).

The top level names the public API, loading each module on first use:

* `MLP`, `MLPSpec` (tf_backprop.model); `backprop` (tape and hand-written gradients);
* `gradcheck` (gradient checking), `testing` (a tf.test assertion);
* `explain(model, x, y, loss)`: one pass's every number and formula (tf_backprop.explaining);
* `train(config)`, `TrainConfig` (tf_backprop.training); `serving` (export, predict).

Importing it imports TensorFlow with its start-up lines held back (`import_tensorflow`):
TensorFlow 2.21 prints its oneDNN and CPU-feature notes, and on a machine without a GPU
`E0000 … failed call to cuInit … (303)`, before its log level can be set.  TF_CPP_MIN_LOG_LEVEL
defaults to 2 (TensorFlow's C++ INFO and WARNING lines off); TF_BACKPROP_VERBOSE_TF=1 leaves
both alone.  If the import fails, what TensorFlow printed is shown after all.  A TensorFlow
imported before this package has printed its lines already.

The package's commands (tf-backprop-…, or `python -m tf_backprop.cli.…`) import TensorFlow the
same way, but only once their flags are parsed: a mistyped flag or --help answers in a fraction of a second, without the
~4 s import.  In a command, a Ctrl-C from the package's import until the command's main runs
(`command_started`), TensorFlow's import included, ends the command with one line (exit 130).

Python's cyclic garbage collector is paused while TensorFlow imports (~360,000 long-lived
objects, which every full collection walks again: on the 2-core CI machine ~0.5-1 s of a
command's start, and ~0.3 s of the default run's tracing).  In the package's commands it stays
paused until `command_started`, which moves everything imported so far out of its reach
(`gc.freeze`) and resumes it.
"""

import gc
import importlib
import os
import signal
import sys
import tempfile

__version__ = "0.1.0"

_LAZY = {
    "MLP": ("tf_backprop.model", "MLP"),
    "MLPSpec": ("tf_backprop.model", "MLPSpec"),
    "TrainConfig": ("tf_backprop.training", "TrainConfig"),
    "explain": ("tf_backprop.explaining", "explain"),
    "train": ("tf_backprop.training", "train"),
}

__all__ = [*_LAZY, "__version__", "command_started", "import_tensorflow"]

VERBOSE_ENV = "TF_BACKPROP_VERBOSE_TF"  # set to 1: TensorFlow's start-up lines are shown


def _pause_garbage_collection() -> bool:
    """Pauses the cyclic garbage collector; True when this paused it (it was running)."""
    running = gc.isenabled()
    gc.disable()
    return running


def import_tensorflow() -> None:
    """Imports TensorFlow and probes for GPUs (cached from then on) with fd 2 captured: what
    importing the package does, and what a command does once its flags are parsed."""
    if os.environ.get(VERBOSE_ENV, "0") not in ("", "0") or "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices("GPU")  # the CUDA probe: its cuInit line, once
        except BaseException as error:
            os.dup2(saved, 2)
            command = _console_script()
            if isinstance(error, KeyboardInterrupt) and command:  # Ctrl-C as a command starts
                sys.stderr.write(
                    f"{command}: error: SIGINT: stopped while importing TensorFlow; nothing was done\n"
                )
                raise SystemExit(130) from None
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _console_script() -> str | None:
    """This process's command when it is one of the package's (tf-backprop-…, or `python -m
    tf_backprop.cli.NAME`, named tf-backprop-NAME), else None: a Ctrl-C during the import then
    ends it with its one line, not a traceback of TensorFlow's."""
    name = os.path.basename(sys.argv[0]) if sys.argv else ""
    return name if name.startswith("tf-backprop-") else _command_module()


def _command_module() -> str | None:
    """tf-backprop-NAME when Python runs `-m tf_backprop.cli.NAME`: sys.argv[0] is "-m" while the
    module's packages import, then the module's path (…/NAME.py); the interpreter's own command
    line (sys.orig_argv) names the module."""
    command_line = getattr(sys, "orig_argv", [])
    if not sys.argv or "-m" not in command_line[1:-1]:
        return None
    module = command_line[command_line.index("-m", 1) + 1]
    name = module.removeprefix(_COMMANDS_PACKAGE)
    if module == name or not name.isidentifier():
        return None
    running = sys.argv[0] == "-m" or os.path.basename(sys.argv[0]) == f"{name}.py"
    return f"tf-backprop-{name}" if running else None


_COMMANDS_PACKAGE = "tf_backprop.cli."


def _stop_while_starting(signum, frame) -> None:
    """SIGINT before a command's main runs: one line, exit 130 (nothing was done yet)."""
    os.write(2, f"{_console_script()}: error: SIGINT: stopped while starting; nothing was done\n".encode())
    os._exit(130)


def _end_commands_at_ctrl_c_while_starting() -> None:
    """In one of the package's commands, Ctrl-C from here until its main runs (parsing the flags,
    importing TensorFlow and the package: ~4 s) ends it with one line, not a traceback through
    whatever was being imported; `command_started` hands SIGINT back to Python there.  A SIGINT
    that the command's parent made it ignore (a background job) stays ignored."""
    if _console_script() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _stop_while_starting)


def command_started() -> None:
    """Called by a command as its main begins: Ctrl-C raises KeyboardInterrupt again, for the
    command's own handling (a checkpoint first, then one line); the garbage collector resumes,
    with the objects imported so far frozen out of its collections (`gc.freeze`: they live as
    long as the process anyway, and walking them again in every full collection cost ~0.3 s of
    the default run's tracing on the 2-core CI machine)."""
    if signal.getsignal(signal.SIGINT) is _stop_while_starting:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    global _resume_garbage_collection
    gc.freeze()
    if _resume_garbage_collection:
        _resume_garbage_collection = False
        gc.enable()


_resume_garbage_collection = _pause_garbage_collection()
if not _console_script():  # a command imports it once its flags are parsed (cli/common.py)
    import_tensorflow()
_end_commands_at_ctrl_c_while_starting()
if _resume_garbage_collection and not _console_script():  # a command resumes it at command_started
    _resume_garbage_collection = False
    gc.enable()


def __getattr__(name):
    if name in _LAZY:
        module, attribute = _LAZY[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'tf_backprop' has no attribute {name!r}")
