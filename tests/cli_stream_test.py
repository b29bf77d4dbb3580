"""tf-backprop-train --stream as a user runs it: killed and rerun, bad shards, bad flags.

A streamed run keeps its input pipeline's position with every checkpoint, so a run SIGKILLed at
random checkpoints (read off its log, as cli_resume_test does) and rerun ends bit-identical —
weights and history — to an uninterrupted streamed run.
"""

from __future__ import annotations

import gzip
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile

import commands
import numpy as np
import tensorflow as tf
from cli_resume_test import ResumeCliTestCase
from cli_resume_test import tearDownModule as _close_reference_runs

_TIMEOUT = 300
_KILL_RANGE = (80, 400)
_SHARDS: str | None = None  # the module's data: a glob of 3 shards (one gzip) in a temporary folder


def setUpModule():
    global _SHARDS
    folder = tempfile.mkdtemp(prefix="cli_stream_test_")
    rng = np.random.default_rng(0)
    for s in range(3):
        x = rng.uniform(-2, 2, size=(400, 2))
        y = np.sin(x[:, 0]) * np.cos(x[:, 1]) + 0.05 * rng.standard_normal(400)
        text = "x1,x2,y\n" + "".join(f"{a!r},{b!r},{c!r}\n" for (a, b), c in zip(x.tolist(), y.tolist()))
        name = os.path.join(folder, f"part-{s}.csv" + (".gz" if s == 1 else ""))
        with (gzip.open if s == 1 else open)(name, "wt") as handle:
            handle.write(text)
    _SHARDS = os.path.join(folder, "part-*")


def tearDownModule():
    _close_reference_runs()
    if _SHARDS:
        shutil.rmtree(os.path.dirname(_SHARDS), ignore_errors=True)


def _flags() -> tuple[str, ...]:
    # ~960 training rows: 96 steps per epoch; 60 checkpoints, most of them mid-epoch.
    return (
        f"--data=csv:{_SHARDS}",
        "--target=y",
        "--stream",
        "--steps=2400",
        "--checkpoint_every=40",
        "--steps_per_call=8",
        "--batch_size=10",
        "--hidden=4,4",
    )


class StreamResumeTest(ResumeCliTestCase):
    def test_killed_twice_and_rerun_ends_bit_identical(self):
        flags = _flags()
        self.reference(flags)
        rng = random.Random("stream")
        resume_at = None
        for _ in range(2):
            at_step = (resume_at or 0) + rng.randrange(*_KILL_RANGE)
            outcome, seen = self.interrupt((*flags, "--workdir=run"), at_step, signal.SIGKILL)
            self.assertEqual(outcome.returncode, -signal.SIGKILL, outcome.describe())
            if resume_at is not None:
                self.assertEqual(self.resumed_step(outcome)[1], resume_at)
            state = tf.train.get_checkpoint_state(os.path.join(self.workdir, "ckpt"))
            resume_at = int(state.model_checkpoint_path.rsplit("-", 1)[1])
            self.assertBetween(resume_at, seen, 2399)
            # Its input position was saved before it, at the same step.
            self.assertTrue(
                os.path.exists(os.path.join(self.workdir, "ckpt", "input-0", f"ckpt-{resume_at}.index"))
            )
        final = self.run_ok(*flags, "--workdir=run")
        self.assertEqual(self.resumed_step(final)[1], resume_at)
        self.assertIn("scanned before", "\n".join(final.lines))  # the statistics pass was not redone
        self.assert_same_as_reference(self.workdir, flags)


class StreamErrorTest(tf.test.TestCase):
    def run_cli(self, *flags: str) -> tuple[subprocess.CompletedProcess, str]:
        cwd = self.create_tempdir().full_path
        env = {
            k: v for k, v in os.environ.items() if k not in ("TF_BACKPROP_VERBOSE_TF", "TF_CPP_MIN_LOG_LEVEL")
        }
        result = commands.run(
            [sys.executable, "-m", "tf_backprop.cli.train", *flags], cwd=cwd, env=env, timeout=_TIMEOUT
        )
        self.assertNotIn("Traceback", result.stderr)
        return result, cwd

    def test_a_bad_cell_in_a_shard_exits_2_naming_it_and_leaves_no_run_folder(self):
        folder = self.create_tempdir().full_path
        for name, text in (("a.csv", "x1,y\n1,2\n3,4\n"), ("b.csv", "x1,y\n5,6\n\nn/a,7\n")):
            with open(os.path.join(folder, name), "w") as handle:
                handle.write(text)
        result, cwd = self.run_cli(f"--data=csv:{folder}/*.csv", "--target=y", "--stream", "--workdir=run")
        self.assertEqual(result.returncode, 2, result.stderr)
        lines = result.stderr.strip().splitlines()
        self.assertEqual(
            lines[-1],
            f'tf-backprop-train: error: {folder}/b.csv:4:1 (column "x1"): expected a number, got "n/a"',
        )
        self.assertTrue(all(line.startswith("I") for line in lines[:-1]), result.stderr)  # absl log lines
        self.assertEqual(os.listdir(cwd), [])

    def test_a_missing_file_exits_2_in_one_line_and_makes_no_folder(self):
        result, cwd = self.run_cli("--data=csv:missing.csv", "--target=y", "--stream", "--workdir=a/run")
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertEqual(
            result.stderr.strip().splitlines()[-1],
            "tf-backprop-train: error: missing.csv: cannot read the file (No such file or directory)",
        )
        self.assertEqual(os.listdir(cwd), [])

    def test_stream_with_a_synthetic_source_exits_2_naming_the_flag(self):
        result, cwd = self.run_cli("--stream", "--data=xor")
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertEqual(
            result.stderr.strip(),
            "tf-backprop-train: error: --stream: only CSV sources stream, got --data=xor",
        )
        self.assertEqual(os.listdir(cwd), [])


if __name__ == "__main__":
    tf.test.main()
