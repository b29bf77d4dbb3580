"""What every entry point shares: one-line errors and the exit codes.

Exit codes: 0 success; 1 a failure while running (training diverged, a check failed);
2 a usage or input error (bad flag, bad config, bad data).  Expected errors print one line
to stderr, never a traceback.
"""

from __future__ import annotations

import logging as std_logging
import math
import os
import re
import signal
import sys
from collections.abc import Callable

from absl import app, flags, logging

import tf_backprop
from tf_backprop import arguments, names, text

EXIT_FAILURE = 1
EXIT_USAGE = 2


class UsageError(ValueError):
    """A flag value the library never sees (e.g. an unparsable list)."""


def program_name() -> str:
    """tf-backprop-train, also under `python -m tf_backprop.cli.train` (argv[0] is train.py)."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if name.endswith(".py"):
        return f"tf-backprop-{name[: -len('.py')]}"
    return name or "tf-backprop"


def fail(message: str, code: int, at_once: bool = False) -> None:
    """Prints `prog: error: message` as one line and exits with `code`.

    at_once: end the process without Python's and TensorFlow's exit handlers (os._exit), for a
    runtime left in an error state, whose shutdown would log below the line, or wait on peers.
    """
    sys.stderr.write(f"{program_name()}: error: {text.one_line(message)}\n")
    if at_once:
        logging.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        remove_autograph_sources()
        os._exit(code)
    sys.exit(code)


_HELP_FLAGS = ("--help", "-?", "--helpshort", "--helpfull", "--helpxml", "-help", "-helpfull")


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's parser, but a bad flag exits 2 with one line and help exits 0 (absl exits 1 for both).

    --help lists this command's own flags; --helpfull adds absl's (TensorFlow is not imported
    yet: see `run`).
    """
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        fail(flag_error_line(str(error)), EXIT_USAGE)
    except SystemExit:
        if any(arg.split("=", 1)[0] in _HELP_FLAGS for arg in argv[1:]):
            sys.stdout.flush()
            sys.exit(0)
        raise


_EXPECTED = {"int": "an integer", "float": "a number", "bool": "true or false"}


def flag_error_line(message: str) -> str:
    """absl's message for a bad flag value, in the user's terms: "flag --batch_size: expected an
    integer, got 'abc'" for Python's "invalid literal for int() with base 10: 'abc'", "expected
    one of sgd, adam, got 'x'" for "value should be one of <sgd|adam>", "expected a positive
    integer, got '0'" for "0 is not a positive integer", and "flag --input is
    required" for "Flag --input must have a value other than None.".  absl's message for several
    flags (one line each: the command run without its required flags) reads "flags --model and
    --input are required", or the lines joined by "; "."""
    lines = [_one_flag_error_line(part) for part in re.split(r"\n(?=flag --)", message)]
    required = [re.fullmatch(r"flag (--\S+) is required", line) for line in lines]
    if len(lines) > 1 and all(required):
        names = [match[1] for match in required]
        return f"flags {', '.join(names[:-1])} and {names[-1]} are required"
    return "; ".join(lines)


def _one_flag_error_line(message: str) -> str:
    """flag_error_line for one flag's message."""
    flagfile = re.fullmatch(r"ERROR:: Unable to open flagfile: \[Errno \d+\] (.+?): '(.*)'", message, re.S)
    if flagfile is not None:
        return f"flag --flagfile: cannot read {flagfile[2]} ({flagfile[1]})"
    match = re.fullmatch(r"flag --([\w.]+)=(.*?): (.*)", message, re.S)
    if match is None or match[1] not in flags.FLAGS:
        return message.removeprefix("ERROR:: ")
    name, value, reason = match.groups()
    if reason == f"Flag --{name} must have a value other than None.":
        return f"flag --{name} is required"
    bound = re.fullmatch(rf"{re.escape(value)} is not (an? .+)", reason, re.S)  # a bounded number
    if bound is not None:
        return f"flag --{name}: expected {bound[1]}, got {value!r}"
    choices = re.fullmatch(r"value should be one of <(.*)>", reason, re.S)  # an enum flag
    if choices is not None:
        return f"flag --{name}: expected one of {', '.join(choices[1].split('|'))}, got {value!r}"
    expected = _EXPECTED.get(flags.FLAGS[name].flag_type())
    parse_failure = reason.startswith(("invalid literal", "could not convert", "('Non-boolean"))
    return f"flag --{name}: expected {expected}, got {value!r}" if expected and parse_failure else message


EXIT_SIGINT = 128 + 2
EXIT_SIGTERM = 128 + 15
EXIT_SIGPIPE = 128 + 13  # the status of a filter killed by SIGPIPE: `tf-backprop-predict ... | head`
INTERRUPTED = "SIGINT: stopped; no output was replaced or left half-written (each is written whole)"


def run(
    main: Callable[[list[str]], int | None],
    failures: tuple[type[Exception], ...] | Callable[[], tuple[type[Exception], ...]] = (),
    at_once: tuple[type[Exception], ...] = (),
    interrupted: str = INTERRUPTED,
    flag_names: dict[str, str] | None = None,
    check_first: Callable[[], object] | None = None,
) -> None:
    """app.run(main) mapping expected errors to one line and an exit code.

    The flags are parsed before TensorFlow is imported (`tf_backprop.import_tensorflow`): a bad
    flag or --help answers without it.  ValueError (the library's input errors: ConfigError,
    DataError, ...) exits 2; `failures` (e.g. TrainingError; or a function returning them, called
    once TensorFlow is loaded, for its error classes) exit 1, those of them in `at_once` through
    fail(at_once=True);
    Ctrl-C (KeyboardInterrupt) exits 130 with the line `interrupted`, not a traceback.
    flag_names: a library argument's name -> the flag that sets it, for error lines that begin
    with the argument ("layer_sizes: ..." reads "--layers: ..."); an argument named as one of
    main's module's flags reads as that flag ("eps: ..." reads "--eps: ...").
    check_first: checks of the flags as a whole that need no TensorFlow (train's config, the
    net's flags), run before it is imported; a ValueError there is a usage error, as in main.
    """

    # --help lists the main module's flags; under a console script that is the wrapper script.
    module = sys.modules[main.__module__].__name__
    own_flags = flags.FLAGS.get_flags_for_module(module)
    for flag in own_flags:
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    flag_names = {**{flag.name: f"--{flag.name}" for flag in own_flags}, **(flag_names or {})}

    def usage_failure(error: ValueError) -> None:
        logging.debug("usage error", exc_info=True)
        fail(_in_flag_terms(str(error), flag_names), EXIT_USAGE)

    def guarded(argv: list[str]) -> int | None:
        quiet_tensorflow()
        if len(argv) > 1:
            fail(f"unexpected arguments {argv[1:]}; every option is a --flag", EXIT_USAGE)
        try:
            if check_first is not None:
                check_first()
        except ValueError as error:
            usage_failure(error)
        tf_backprop.import_tensorflow()
        ending = failures() if callable(failures) else failures
        signal.signal(signal.SIGTERM, _raise_terminated)  # the training loop's own handler replaces it there
        tf_backprop.command_started()  # Ctrl-C is KeyboardInterrupt from here, handled below
        try:
            code = main(argv)
        except BrokenPipeError:  # stdout's reader left (| head): end quietly, as a killed filter does
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush to it
            os._exit(EXIT_SIGPIPE)
        except ending as error:
            logging.debug("failure", exc_info=True)
            fail(failure_line(error), EXIT_FAILURE, at_once=isinstance(error, at_once))
        except ValueError as error:
            usage_failure(error)
        except Terminated:
            logging.debug("terminated", exc_info=True)
            fail(interrupted.replace("SIGINT", "SIGTERM", 1), EXIT_SIGTERM, at_once=True)
        except KeyboardInterrupt:
            logging.debug("interrupted", exc_info=True)
            fail(interrupted, EXIT_SIGINT, at_once=True)  # TensorFlow's teardown may hold it further
        exit_now(code or 0)

    app.run(guarded, flags_parser=_parse_flags)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, as Ctrl-C raises KeyboardInterrupt: what it was
    writing is removed on the way out (a killed predict left its hidden half-written file)."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated


def failure_line(error: Exception) -> str:
    """The error's message; for an OSError from the system, "path: reason" ("…/metrics.json: No
    space left on device"), not Python's "[Errno 28] No space left on device: '…'"."""
    if isinstance(error, OSError) and error.strerror:
        return f"{error.filename}: {error.strerror}" if error.filename else error.strerror
    return str(error)


def _in_flag_terms(message: str, flag_names: dict[str, str]) -> str:
    """message with a leading library argument name replaced by its flag's."""
    name, colon, rest = message.partition(":")
    return f"{flag_names[name]}:{rest}" if colon and name in flag_names else message


def exit_now(code: int) -> None:
    """Flushes the output streams and the log, then ends the process without Python's teardown.

    Every file the command writes is complete and closed by then; what the teardown would do is
    unload TensorFlow (~0.5 s of thread pools and caches) for nothing.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    std_logging.shutdown()
    remove_autograph_sources()
    os._exit(code)


_AUTOGRAPH_MODULE = "__autograph_generated_file"


def remove_autograph_sources() -> None:
    """Deletes the source files AutoGraph wrote to the temp folder for each converted function.

    TensorFlow removes them in atexit handlers, which os._exit skips: without this, every run
    would leave a few dozen __autograph_generated_file*.py files in /tmp. AutoGraph registers
    each such module in sys.modules under its file's base name.
    """
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if name.startswith(_AUTOGRAPH_MODULE) and path:
            try:
                os.remove(path)
            except OSError:
                pass  # already gone (a temp-folder cleaner) or not ours to remove


class _TensorFlowInfo(std_logging.Filter):
    """Drops INFO lines that TensorFlow's and Keras's own modules log through absl."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        internal = (
            f"{os.sep}tensorflow{os.sep}" in record.pathname or f"{os.sep}keras{os.sep}" in record.pathname
        )
        return record.levelno >= std_logging.WARNING or not internal


def quiet_tensorflow() -> None:
    """Keeps TensorFlow's own INFO lines (checkpoint sharding, SavedModel builder) out of the
    log unless --verbosity was given: the log is the run's own."""
    if not flags.FLAGS["verbosity"].present:
        std_logging.getLogger("tensorflow").setLevel(std_logging.WARNING)
        logging.get_absl_logger().addFilter(_TensorFlowInfo())


def parse_int_list(flag: str, text: str | None, example: str = "2,3,3,1") -> tuple[int, ...] | None:
    """'2,3,3,1' -> (2, 3, 3, 1); UsageError naming the flag (and a value it takes) otherwise."""
    if text is None:
        return None
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise UsageError(
            f"--{flag}: expected comma-separated integers like {example}, got {text!r}"
        ) from None


def check_net_flags() -> None:
    """The net's flags of gradcheck, explain and inspect as the model checks them, before
    TensorFlow loads: --layers, and the names of --activation, --output_activation (where the
    command has it) and --initializer; ValueError naming the flag's argument ("layers: …")."""
    FLAGS = flags.FLAGS
    arguments.validate_layer_sizes(parse_int_list("layers", FLAGS.layers), "layers")
    arguments.check_name("activation", FLAGS.activation, names.HIDDEN_ACTIVATIONS)
    if "output_activation" in FLAGS:
        arguments.check_name("output_activation", FLAGS.output_activation, names.OUTPUT_ACTIVATIONS)
    arguments.check_name("initializer", FLAGS.initializer, names.INITIALIZERS)


def parse_float_list(flag: str, text: str | None) -> tuple[float, ...] | None:
    """'0.5,-1.2' -> (0.5, -1.2); UsageError naming the flag for anything but finite numbers."""
    if text is None:
        return None
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        values = None
    if values is None or not all(math.isfinite(v) for v in values):
        raise UsageError(f"--{flag}: expected comma-separated finite numbers like 0.5,-1.2, got {text!r}")
    return values
