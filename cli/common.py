"""What every entry point shares: one-line errors and the exit codes.

Exit codes: 0 success; 1 a failure while running (training diverged, a check failed);
2 a usage or input error (bad flag, bad config, bad data).  Expected errors print one line
to stderr, never a traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from absl import app, flags, logging

from tf_backprop import text

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
        os._exit(code)
    sys.exit(code)


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's parser, but a bad flag exits 2 with one line (absl's own exits 1)."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        fail(str(error), EXIT_USAGE)


def run(
    main: Callable[[list[str]], int | None],
    failures: tuple[type[Exception], ...] = (),
    at_once: tuple[type[Exception], ...] = (),
) -> None:
    """app.run(main) mapping expected errors to one line and an exit code.

    ValueError (the library's input errors: ConfigError, DataError, ...) exits 2;
    `failures` (e.g. TrainingError) exit 1, those of them in `at_once` through fail(at_once=True).
    """

    # --help lists the main module's flags; under a console script that is the wrapper script.
    module = sys.modules[main.__module__].__name__
    for flag in flags.FLAGS.get_flags_for_module(module):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)

    def guarded(argv: list[str]) -> int | None:
        if len(argv) > 1:
            fail(f"unexpected arguments {argv[1:]}; every option is a --flag", EXIT_USAGE)
        try:
            return main(argv)
        except failures as error:
            logging.debug("failure", exc_info=True)
            fail(str(error), EXIT_FAILURE, at_once=isinstance(error, at_once))
        except ValueError as error:
            logging.debug("usage error", exc_info=True)
            fail(str(error), EXIT_USAGE)

    app.run(guarded, flags_parser=_parse_flags)


def parse_int_list(flag: str, text: str | None) -> tuple[int, ...] | None:
    """'2,3,3,1' -> (2, 3, 3, 1); UsageError naming the flag otherwise."""
    if text is None:
        return None
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise UsageError(f"--{flag}: expected comma-separated integers like 2,3,3,1, got {text!r}") from None
