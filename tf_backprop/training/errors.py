"""The errors a training run raises, in one place so every layer can name them.

ValueError subclasses are input errors (the CLIs exit 2); RuntimeError subclasses are failures
while running (exit 1); `Interrupted` carries its own exit code.
"""

from __future__ import annotations

import re
import signal


class ConfigError(ValueError):
    """A config field is out of range or inconsistent; the message names the field."""


class ConfigMismatchError(ValueError):
    """The workdir holds a run whose model or data differ from the given config."""


class WorkdirError(ValueError):
    """The run folder cannot be used: not a run folder, in use by another run, not writable,
    or an output path is taken by something else.  Nothing was written to it."""


class CheckpointError(RuntimeError):
    """No usable checkpoint where one was expected, or one could not be written (a full disk)."""


def write_failure_reason(error: Exception) -> str:
    """Why a write failed, in the system's words: an OSError's strerror ("No space left on
    device"), or the last clause of a TensorFlow op error's first line ("{{function_node …}}
    …/part-00000…tempstate123; No space left on device [Op:SaveV2]"; a summary writer's adds
    lines of its own after it)."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    lines = (getattr(error, "message", None) or str(error)).strip().splitlines() or [""]
    reason = re.sub(r"\s*\[Op:\w+\]$", "", lines[0].rsplit("; ", 1)[-1]).strip()
    return reason or type(error).__name__


class TrainingError(RuntimeError):
    """Training failed (non-finite loss or gradient, tape/manual disagreement)."""


class WorkerLostError(TrainingError):
    """A collective failed: another worker died or became unreachable."""


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived; a checkpoint was written first.  exit_code is 128 + signum."""

    def __init__(self, signum: int, step: int, workdir: str):
        self.signum, self.step, self.exit_code = signum, step, 128 + signum
        name = signal.Signals(signum).name
        super().__init__(
            f"{name} at step {step}: checkpoint written to {workdir}/ckpt; rerun the same command to resume"
        )
