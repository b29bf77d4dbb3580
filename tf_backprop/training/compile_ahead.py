"""A compiled function's XLA compilation on a second thread, while this one goes on tracing.

The engine's first call is traced (Python, one core: ~1.1 s of the default run's start-up on a
slower 2-core CI machine) and then XLA compiles its step loop (C++, ~1 s, mostly one core); the
call does them one after the other.  So the engine traces the step loop first and has it
launched, for no steps, on a second thread while the rest of the call is traced and started
(`Engine._step_loop_compiled_meanwhile`); the call's own launch of the step loop then waits for
that compilation in TensorFlow's XLA cache, which serializes requests for one program, instead
of compiling it again.

The launch goes through a graph (`tf.function`), as the call's does: an eager launch of a
`jit_compile` function has another XLA cache key and would compile the program twice.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence

import tensorflow as tf
from absl import logging


@contextlib.contextmanager
def compiled_meanwhile(function: Callable, args: Sequence[tf.Tensor], device: str) -> Iterator[None]:
    """Runs function(*args) from a graph on a second thread, on `device`, while the block runs;
    joins that thread when the block ends.

    function: a `jit_compile` function, or one that calls it, whose run with `args` changes
    nothing (the engine's step loop for no steps), so only its compilation matters.  It is
    traced here, on this thread, before the block: tracing is Python and would contend with the
    block's.  Should the launch fail, the failure is only logged (at debug level): the caller's
    own launch of the same program compiles it again and reports its error there.
    """
    launch = tf.function(function, autograph=False).get_concrete_function(*args)
    compiling = threading.Thread(target=_launch_quietly, args=(launch, args, device), daemon=True)
    compiling.start()
    try:
        yield
    finally:
        compiling.join()


def _launch_quietly(launch: Callable, args: Sequence[tf.Tensor], device: str) -> None:
    """launch(*args) on `device`; any failure is logged, never raised: a thread's exception
    would print a traceback beside the run's own lines and change nothing else."""
    try:
        with tf.device(device):
            launch(*args)
    except Exception as error:  # any: see the docstring
        logging.debug("compiling ahead of the call failed: %s", error, exc_info=True)
