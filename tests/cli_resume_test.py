"""Killed, interrupted, diverged and damaged runs of tf-backprop-train, rerun to completion.

Each run is a subprocess (`python -m tf_backprop.cli.train`), as a user or a scheduler would
start it.  A run is interrupted at a random checkpoint without sleeping: the test reads the
child's stderr line by line and signals it once a line reports a checkpoint at step ≥ S.  The
stderr pipe is shrunk to one page and read one byte at a time, so the child is never more than
4 KiB of log lines ahead of the test (each 40-step checkpoint interval logs 120-400 bytes, so at
most ~1400 steps); S < 900 and the runs have 2400 steps, so the signal lands before the run ends.
A watchdog kills any child that outlives _TIMEOUT.

The uninterrupted reference run of each flag set is made once per module and shared by its tests,
alongside the runs that are compared with it (two processes at a time at most).
"""

from __future__ import annotations

import dataclasses
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading

import checkpoint_files
import commands
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tf_backprop import model
from tf_backprop.training import checkpoint

_TIMEOUT = 300  # seconds per run; one takes 5-15 s on a loaded 2-core machine
# 480 training rows: 48 steps per epoch, or 16 with --grad_accum_steps=3; 60 checkpoints, most
# of them mid-epoch; every chunk is 8 steps long (one compiled shape).
_LONG = ("--steps=2400", "--checkpoint_every=40", "--steps_per_call=8", "--n_samples=600", "--batch_size=10")
_KILL_RANGE = (80, 400)  # S - (the step the run started or resumed at) is drawn from here
# Plain SGD at 1.4 overflows at step 74; ckpt-60 is the last good checkpoint, in epoch 2 of 6.
_DIVERGING = (
    "--optimizer=sgd",
    "--epochs=6",
    "--n_samples=400",
    "--checkpoint_every=20",
    "--steps_per_call=10",
    "--workdir=run",
)
_ABSL_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+:\d+\] ")
_CHECKPOINT_LINE = re.compile(r"\] checkpoint \S*ckpt-(\d+)$")
_RESUMING_LINE = re.compile(r"^resuming from (\S*ckpt-(\d+)) at step (\d+), epoch \d+$")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("TF_BACKPROP_VERBOSE_TF", None)
    return env


def _shrink_pipe(stream) -> None:
    """Makes the pipe behind `stream` one page, so a child writing to it cannot run far ahead."""
    try:
        import fcntl

        fcntl.fcntl(stream.fileno(), fcntl.F_SETPIPE_SZ, 4096)
    except (ImportError, AttributeError, OSError):
        pass  # not Linux: no bound, but a run that ends before the signal fails the test


@dataclasses.dataclass
class _Outcome:
    """How a run ended and what it printed."""

    returncode: int
    stdout: str
    lines: list[str]  # stderr
    timed_out: bool

    def describe(self) -> str:
        stderr = "\n".join(self.lines[-40:])
        return f"exit {self.returncode}\n--- stdout:\n{self.stdout}\n--- stderr (end):\n{stderr}"

    def plain_lines(self) -> list[str]:
        """The stderr lines that are not absl log lines."""
        return [line for line in self.lines if not _ABSL_LINE.match(line)]


class _Child:
    """One CLI run in a subprocess; a watchdog kills it after _TIMEOUT seconds."""

    def __init__(self, flags, cwd: str, watch_stderr: bool = False):
        self._stdout = tempfile.TemporaryFile()
        self._stderr = None if watch_stderr else tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tf_backprop.cli.train", *flags],
            cwd=cwd,
            env=_env(),
            stdout=self._stdout,
            stderr=subprocess.PIPE if watch_stderr else self._stderr,
            bufsize=0,  # a raw pipe: readline takes one byte at a time, never reads ahead
        )
        if watch_stderr:
            _shrink_pipe(self.proc.stderr)
        self.lines: list[str] = []
        self.timed_out = False
        self._watchdog = threading.Timer(_TIMEOUT, self._expire)
        self._watchdog.daemon = True
        self._watchdog.start()

    def _expire(self) -> None:
        self.timed_out = True
        self.proc.kill()

    def read_lines(self):
        """Yields the child's stderr lines as it writes them, until it closes stderr."""
        while raw := self.proc.stderr.readline():
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.append(line)
            yield line

    def finish(self) -> _Outcome:
        """Waits for the child to end (the watchdog bounds the wait) and collects its output."""
        if self.proc.stderr is not None:
            for _ in self.read_lines():
                pass
            self.proc.stderr.close()
        try:
            self.proc.wait(timeout=_TIMEOUT + 60)  # the watchdog kills it at _TIMEOUT
        except subprocess.TimeoutExpired:
            self._expire()
            self.proc.wait()
        finally:
            self._watchdog.cancel()
        self._stdout.seek(0)
        stdout = self._stdout.read().decode(errors="replace")
        if self._stderr is not None:
            self._stderr.seek(0)
            self.lines = self._stderr.read().decode(errors="replace").splitlines()
            self._stderr.close()
        self._stdout.close()
        return _Outcome(self.proc.returncode, stdout, self.lines, self.timed_out)


@dataclasses.dataclass
class _Reference:
    """An uninterrupted run: its workdir, final weights and metrics.json."""

    workdir: str
    weights: list[np.ndarray]
    metrics: dict


def _replace(flags, name: str, *new: str) -> tuple[str, ...]:
    """flags without --name=..., followed by `new`."""
    return (*(f for f in flags if not f.startswith(f"--{name}=")), *new)


def _final_weights(workdir: str) -> list[np.ndarray]:
    """The weights of the run's latest checkpoint, loaded as export and predict load them."""
    loaded, *_ = checkpoint.load_model(workdir)
    return loaded.get_weights()


class _References:
    """The uninterrupted runs, one per flag set, shared by every test of the module."""

    def __init__(self):
        self.root: str | None = None
        self.done: dict[tuple[str, ...], _Reference] = {}
        self.started: dict[tuple[str, ...], tuple[_Child, str]] = {}

    def start(self, flags) -> None:
        """Starts the run for `flags` in the background, unless it is done or running."""
        key = tuple(flags)
        if key not in self.done and key not in self.started:
            self.root = self.root or tempfile.mkdtemp(prefix="resume_cli_test_")
            workdir = tempfile.mkdtemp(prefix="reference-", dir=self.root)
            self.started[key] = (_Child((*flags, f"--workdir={workdir}"), self.root), workdir)

    def close(self) -> None:
        """Kills runs a failed test left running; deletes the workdirs (another module sharing
        these helpers starts afresh)."""
        for child, _ in self.started.values():
            child.proc.kill()
            child.finish()
        if self.root:
            shutil.rmtree(self.root, ignore_errors=True)
        self.root, self.done, self.started = None, {}, {}


_REFERENCES = _References()


def tearDownModule():
    _REFERENCES.close()


class ResumeCliTestCase(tf.test.TestCase, parameterized.TestCase):
    """Runs the CLI in a temporary directory; compares with the shared reference runs."""

    def setUp(self):
        super().setUp()
        self.cwd = self.create_tempdir().full_path
        self.workdir = os.path.join(self.cwd, "run")

    # --- running --------------------------------------------------------------------
    def run_cli(self, *flags: str) -> _Outcome:
        """Runs the CLI in self.cwd to its end (forked from a warm interpreter: commands.run)."""
        command = [sys.executable, "-m", "tf_backprop.cli.train", *flags]
        try:
            result = commands.run(command, cwd=self.cwd, env=_env(), timeout=_TIMEOUT)
        except subprocess.TimeoutExpired as expired:
            self.fail(f"{expired}\n--- stderr:\n{expired.stderr}")
        return _Outcome(result.returncode, result.stdout, result.stderr.splitlines(), timed_out=False)

    def run_ok(self, *flags: str) -> _Outcome:
        outcome = self.run_cli(*flags)
        self.assertEqual(outcome.returncode, 0, outcome.describe())
        return outcome

    def interrupt(self, flags, at_step: int, signum: int) -> tuple[_Outcome, int]:
        """Runs the CLI; sends `signum` once it logs a checkpoint at step ≥ at_step.

        Returns the outcome and the step of that checkpoint.  Fails if the run ended first.
        """
        child = _Child(flags, self.cwd, watch_stderr=True)
        seen = None
        for line in child.read_lines():
            match = _CHECKPOINT_LINE.search(line)
            if match and int(match[1]) >= at_step:
                seen = int(match[1])
                child.proc.send_signal(signum)
                break
        outcome = child.finish()
        self.assertFalse(outcome.timed_out, outcome.describe())
        self.assertIsNotNone(
            seen, f"no checkpoint at step ≥ {at_step} before the run ended\n{outcome.describe()}"
        )
        return outcome, seen

    def reference(self, flags) -> _Reference:
        """The uninterrupted run for `flags`: made once per module, or waited for if started."""
        key = tuple(flags)
        if key not in _REFERENCES.done:
            _REFERENCES.start(flags)
            child, workdir = _REFERENCES.started.pop(key)
            outcome = child.finish()
            self.assertFalse(outcome.timed_out, outcome.describe())
            self.assertEqual(outcome.returncode, 0, outcome.describe())
            weights = _final_weights(workdir)
            self.assert_trained(workdir, weights)
            _REFERENCES.done[key] = _Reference(
                workdir, weights, checkpoint_files.read_json(workdir, "metrics.json")
            )
        return _REFERENCES.done[key]

    def copy_of_reference(self, flags) -> str:
        """A copy of the reference run's workdir at self.workdir."""
        shutil.copytree(self.reference(flags).workdir, self.workdir)
        return self.workdir

    # --- checks ---------------------------------------------------------------------
    def assert_trained(self, workdir: str, weights) -> None:
        """The loaded weights are not the initial ones (a comparison of them means something)."""
        config = checkpoint_files.read_json(workdir, "config.json")
        data = checkpoint_files.read_json(workdir, "data.json")
        sizes = (len(data["feature_names"]), *(config["hidden"] or (3, 3)), 1)
        initial = model.MLP(sizes, seed=config["seed"]).get_weights()
        self.assertFalse(
            all(np.array_equal(a, b) for a, b in zip(weights, initial)),
            f"load_model({workdir}) returned the initial weights",
        )

    def assert_same_as_reference(self, workdir: str, flags) -> None:
        """Bit-identical final weights, and the same history, final metrics and step count."""
        reference = self.reference(flags)
        weights = _final_weights(workdir)
        self.assertEqual(len(weights), len(reference.weights))
        for actual, expected in zip(weights, reference.weights):
            np.testing.assert_array_equal(actual, expected)
        metrics = checkpoint_files.read_json(workdir, "metrics.json")
        for key in ("history", "final", "steps", "stopped_early"):
            self.assertEqual(metrics[key], reference.metrics[key], key)

    def resumed_step(self, outcome: _Outcome) -> tuple[str, int]:
        """(checkpoint path, step) of the run's one "resuming from ... at step N" line."""
        matches = [m for m in map(_RESUMING_LINE.match, outcome.lines) if m]
        self.assertLen(matches, 1, outcome.describe())
        self.assertEqual(matches[0][2], matches[0][3])  # ckpt-N holds step N
        return matches[0][1], int(matches[0][3])

    def assert_error_line(self, outcome: _Outcome, code: int, pattern: str) -> re.Match:
        """Exit `code`; the only stderr line besides absl log lines is `prog: error: <pattern>`."""
        self.assertEqual(outcome.returncode, code, outcome.describe())
        self.assertLen(outcome.plain_lines(), 1, outcome.describe())
        self.assertNotIn("Traceback", "\n".join(outcome.lines))
        match = re.search(rf"^\S+: error: {pattern}", outcome.plain_lines()[0])
        self.assertIsNotNone(match, outcome.describe())
        return match

    def assert_index_names_whole_checkpoints(self, workdir: str) -> None:
        """ckpt/checkpoint names a latest checkpoint whose files are all there.

        The older ones too, except possibly the oldest: tf.train.CheckpointManager writes the
        index naming the new checkpoint, deletes the oldest, then rewrites the index, so a kill
        between those leaves the oldest named with its files gone (restore never reaches it
        while a newer one reads).
        """
        state = tf.train.get_checkpoint_state(os.path.join(workdir, "ckpt"))
        self.assertIsNotNone(state)
        named = list(state.all_model_checkpoint_paths)
        self.assertEqual(named[-1], state.model_checkpoint_path)
        keep = checkpoint_files.read_json(workdir, "config.json")["keep_checkpoints"]
        for path in named[1:] if len(named) > keep else named:
            self.assertTrue(tf.io.gfile.exists(path + ".index"), path)
            self.assertTrue(tf.io.gfile.exists(path + ".data-00000-of-00001"), path)


def _flags(source: str, accum: int) -> tuple[str, ...]:
    return (*_LONG, f"--grad_source={source}", f"--grad_accum_steps={accum}")


class InterruptResumeTest(ResumeCliTestCase):
    """Runs stopped at random checkpoints and rerun, each time, end as if never stopped.

    Both gradient sources, with and without accumulation; SIGKILL, and SIGTERM / SIGINT (which
    checkpoint at the next chunk boundary and exit 128 + signal) followed by a SIGKILL of the
    resumed run.
    """

    @parameterized.named_parameters(
        ("tape_sigterm_sigkill", "tape", 1, (signal.SIGTERM, signal.SIGKILL)),
        ("tape_accumulating_sigkill", "tape", 3, (signal.SIGKILL,)),
        ("manual_sigkill", "manual", 1, (signal.SIGKILL,)),
        ("manual_accumulating_sigint_sigkill", "manual", 3, (signal.SIGINT, signal.SIGKILL)),
    )
    def test_interrupted_and_rerun_ends_bit_identical(self, source, accum, signums):
        flags = _flags(source, accum)
        rng = random.Random(f"{source}-{accum}")
        _REFERENCES.start(flags)  # runs alongside the runs compared with it
        resume_at = None
        for signum in signums:
            at_step = (resume_at or 0) + rng.randrange(*_KILL_RANGE)
            outcome, seen = self.interrupt((*flags, "--workdir=run"), at_step, signum)
            if resume_at is not None:
                self.assertEqual(self.resumed_step(outcome)[1], resume_at)
            if signum == signal.SIGKILL:
                resume_at = self.assert_killed(outcome, seen)
            else:
                resume_at = self.assert_stopped(outcome, signum, seen)
        final = self.run_ok(*flags, "--workdir=run")
        self.assertEqual(self.resumed_step(final)[1], resume_at)
        self.assert_same_as_reference(self.workdir, flags)

    def assert_killed(self, outcome: _Outcome, seen: int) -> int:
        """The run died of SIGKILL, losing at most the interval after `seen`; returns the latest step."""
        self.assertEqual(outcome.returncode, -signal.SIGKILL, outcome.describe())
        self.assert_index_names_whole_checkpoints(self.workdir)
        latest = self.latest_step()
        self.assertBetween(latest, seen, 2399)
        return latest

    def assert_stopped(self, outcome: _Outcome, signum: int, seen: int) -> int:
        """One line naming the signal and the step, whose checkpoint is the latest; returns the step."""
        name = signal.Signals(signum).name
        match = self.assert_error_line(
            outcome,
            128 + signum,
            rf"{name} at step (\d+): checkpoint written to \S+; rerun the same command to resume",
        )
        step = int(match[1])
        self.assertBetween(step, seen, 2399)
        self.assertLen(checkpoint_files.ckpt_files(self.workdir, step), 2)  # .index and one data shard
        self.assertEqual(self.latest_step(), step)
        return step

    def latest_step(self) -> int:
        """The step of the checkpoint ckpt/checkpoint names as the latest."""
        state = tf.train.get_checkpoint_state(os.path.join(self.workdir, "ckpt"))
        return int(state.model_checkpoint_path.rsplit("-", 1)[1])


class ConfigChangeTest(ResumeCliTestCase):
    """A rerun with other flags: refused if they change the model or data, logged otherwise."""

    def test_model_and_loss_changes_exit_2_naming_both(self):
        flags = _flags("tape", 3)
        self.copy_of_reference(flags)
        before = checkpoint_files.file_states(os.path.join(self.workdir, "ckpt"))
        outcome = self.run_cli(*flags, "--workdir=run", "--hidden=4", "--loss=half_mse")
        line = self.assert_error_line(outcome, 2, ".*").string
        self.assertRegex(line, r"\bhidden: saved the default \[3, 3\], given \[4\]")
        self.assertRegex(line, r"\bloss: saved the default \(by task\), given 'half_mse'")
        self.assertIn("--restart", line)
        self.assertEqual(checkpoint_files.file_states(os.path.join(self.workdir, "ckpt")), before)

    def test_more_epochs_and_another_learning_rate_resume(self):
        flags = _flags("tape", 3)  # 2400 steps = 150 epochs of 16
        self.copy_of_reference(flags)
        changed = _replace(flags, "steps", "--epochs=151", "--learning_rate=0.005", "--workdir=run")
        outcome = self.run_ok(*changed)
        self.assertEqual(self.resumed_step(outcome)[1], 2400)
        log = "\n".join(outcome.lines)
        self.assertIn("resume with changed epochs: unset (60 unless --steps) -> 151", log)
        self.assertIn("resume with changed steps: 2400 -> unset (--epochs decides)", log)
        self.assertIn("resume with changed learning_rate: 0.01 -> 0.005", log)
        metrics = checkpoint_files.read_json(self.workdir, "metrics.json")
        self.assertEqual(metrics["steps"], 2416)
        self.assertEqual(metrics["history"][:150], self.reference(flags).metrics["history"])
        self.assertLen(metrics["history"], 151)


class DamagedCheckpointTest(ResumeCliTestCase):
    """Truncated checkpoint files: fall back past them, or exit 1 when none is readable."""

    def test_truncated_latest_falls_back_and_ends_bit_identical(self):
        flags = _flags("tape", 1)
        self.copy_of_reference(flags)
        checkpoint_files.truncate_checkpoint(self.workdir, 2400, "data")
        outcome = self.run_ok(*flags, "--workdir=run")
        warnings = [line for line in outcome.lines if line.startswith("W") and "unreadable" in line]
        self.assertLen(warnings, 1, outcome.describe())
        self.assertRegex(
            warnings[0], r"checkpoint \S*ckpt-2400 is unreadable \(.+\); trying the previous one"
        )
        self.assertEqual(self.resumed_step(outcome)[1], 2360)
        self.assert_same_as_reference(self.workdir, flags)

    def test_all_checkpoints_unreadable_exit_1(self):
        flags = _flags("tape", 1)
        self.copy_of_reference(flags)
        for step, part in ((2320, "data"), (2360, "index"), (2400, "data")):
            checkpoint_files.truncate_checkpoint(self.workdir, step, part)
        outcome = self.run_cli(*flags, "--workdir=run")
        self.assert_error_line(outcome, 1, r"no readable checkpoint in \S+ \(tried 3\); rerun with --restart")


class DivergenceTest(ResumeCliTestCase):
    """A run stopped by a non-finite loss resumes from its last good checkpoint."""

    def test_diverged_run_resumes_with_a_lower_learning_rate(self):
        diverged = self.run_cli(*_DIVERGING, "--learning_rate=1.4")
        self.assert_error_line(diverged, 1, r"step 74: non-finite value")
        state = tf.train.get_checkpoint_state(os.path.join(self.workdir, "ckpt"))
        self.assertEqual(os.path.basename(state.model_checkpoint_path), "ckpt-60")
        self.assertTrue(all(np.isfinite(w).all() for w in _final_weights(self.workdir)))
        resumed = self.run_ok(*_DIVERGING, "--learning_rate=0.05")
        self.assertEqual(self.resumed_step(resumed)[1], 60)
        self.assertIn("resume with changed learning_rate: 1.4 -> 0.05", "\n".join(resumed.lines))
        self.assertEqual(checkpoint_files.read_json(self.workdir, "metrics.json")["steps"], 6 * 32)


class RestartTest(ResumeCliTestCase):
    """--restart keeps the old run in previous-<time>/ and trains from step 0."""

    def test_restart_moves_the_old_run_aside(self):
        flags = _flags("tape", 1)
        self.copy_of_reference(flags)
        outcome = self.run_ok(*_replace(flags, "steps", "--steps=80", "--workdir=run", "--restart"))
        self.assertFalse([line for line in outcome.lines if _RESUMING_LINE.match(line)])
        (aside,) = [n for n in os.listdir(self.workdir) if n.startswith("previous-")]
        aside = os.path.join(self.workdir, aside)
        self.assertContainsSubset(["ckpt", "config.json", "data.json", "metrics.json"], os.listdir(aside))
        reference = self.reference(flags)
        self.assertEqual(checkpoint_files.read_json(aside, "metrics.json"), reference.metrics)
        for actual, expected in zip(_final_weights(aside), reference.weights):
            np.testing.assert_array_equal(actual, expected)
        metrics = checkpoint_files.read_json(self.workdir, "metrics.json")
        self.assertEqual(metrics["steps"], 80)
        self.assertEqual([record["epoch"] for record in metrics["history"]], [1, 2])


class ConcurrentRunTest(ResumeCliTestCase):
    """Two runs into one workdir at once: the second exits 2 naming the first; a kill frees the folder."""

    def test_a_second_run_is_refused_while_the_first_holds_the_folder(self):
        flags = (*_flags("tape", 1), "--workdir=run")
        first = _Child(flags, self.cwd, watch_stderr=True)
        started = next((line for line in first.read_lines() if _CHECKPOINT_LINE.search(line)), None)
        try:
            self.assertIsNotNone(started, "the first run never checkpointed")
            second = self.run_cli(*_replace(flags, "learning_rate", "--learning_rate=0.05"))
            self.assert_error_line(
                second,
                2,
                rf"--workdir: \S+/run is in use by another run \(pid {first.proc.pid} on \S+\); wait for it",
            )
        finally:
            first.proc.kill()  # SIGKILL: the OS releases its lock
            killed = first.finish()
        self.assertEqual(killed.returncode, -signal.SIGKILL, killed.describe())
        config = checkpoint_files.read_json(self.workdir, "config.json")
        self.assertEqual(config["learning_rate"], 0.01)  # the refused run wrote nothing
        # The lock is gone. Fewer steps than the killed run trained are refused, naming the
        # count; with that count the run resumes at its end and trains nothing.
        refused = self.run_cli(*_replace(flags, "steps", "--steps=40"))
        match = self.assert_error_line(
            refused,
            2,
            r"--steps=40: \S+/run has already trained (\d+) steps .*resume it with --steps=\1 or more",
        )
        rerun = self.run_ok(*_replace(flags, "steps", f"--steps={match[1]}"))
        self.assertEqual(len([line for line in rerun.lines if _RESUMING_LINE.match(line)]), 1)
