"""training.Loop's progress line: on a terminal it replaces the per-epoch log lines.

A pipe is never a terminal, so the CLIs' subprocess tests cannot see the line; here the loop
runs with progress=True (what a terminal selects) and stdout captured.
"""

import contextlib
import io

import tensorflow as tf
from absl import logging
from training_runs import small_config

from tf_backprop import training

_EPOCHS, _STEPS_PER_EPOCH = 3, 16  # 200 rows: 160 for training, batch 10


class ProgressTest(tf.test.TestCase):
    def run_loop(self, progress: bool) -> tuple[str, list[str]]:
        """(stdout, absl INFO messages) of a 3-epoch run, one engine call per epoch."""
        cfg = small_config(None, n_samples=200, steps_per_call=_STEPS_PER_EPOCH)
        loop = training.build(cfg).loop(progress=progress)
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout), self.assertLogs("absl", "INFO") as logs:
            loop.run()
            logging.info("end")  # assertLogs needs one line in any case
        return stdout.getvalue(), [record.getMessage() for record in logs.records]

    def test_the_line_replaces_the_epoch_log_lines(self):
        stdout, messages = self.run_loop(progress=True)
        total = _EPOCHS * _STEPS_PER_EPOCH
        self.assertEqual(stdout.count("\r["), _EPOCHS)  # rewritten after each call
        self.assertTrue(stdout.endswith("\n"))
        last = stdout.rstrip("\n").rsplit("\r", 1)[1]
        self.assertRegex(last, rf"^\[=+\] {total}/{total} steps, epoch {_EPOCHS}/{_EPOCHS}  loss \S+ rmse")
        self.assertRegex(last, r"steps/s$")
        self.assertEqual([m for m in messages if m.startswith("epoch ")], [])

    def test_without_it_each_epoch_is_one_log_line(self):
        stdout, messages = self.run_loop(progress=False)
        self.assertEqual(stdout, "")
        self.assertLen([m for m in messages if m.startswith("epoch ")], _EPOCHS)


if __name__ == "__main__":
    tf.test.main()
