"""XLA_FLAGS for the run's size: the elemental emitters for a small step, nothing else touched."""

import glob
import os
import subprocess
import sys

import tensorflow as tf
from absl.testing import parameterized

from tf_backprop import training
from tf_backprop.training import plan as plan_lib
from tf_backprop.training import xla_flags

ARTICLE = (2, 3, 3, 1)
ELEMENTAL = "--xla_cpu_use_fusion_emitters=false"


def _plan(layers=ARTICLE, batch_size: int = 10) -> plan_lib.Plan:
    cfg = training.TrainConfig(layers=layers, batch_size=batch_size)
    return training.make_plan(cfg, 100 * batch_size, layers)


class PlanTest(tf.test.TestCase):
    def test_the_article_net_prefers_the_elemental_emitters(self):
        plan = _plan()
        self.assertEqual(plan.step_flops, 6 * 10 * (2 * 3 + 3 * 3 + 3 * 1))
        self.assertTrue(plan.prefers_elemental_emitters)

    def test_a_step_past_the_bound_keeps_the_fusion_emitters(self):
        # A 1-n net at batch 1: 6n FLOPs a step, just inside the bound and just past it.
        at_bound = plan_lib.ELEMENTAL_MAX_STEP_FLOPS // 6
        self.assertTrue(_plan((1, at_bound), 1).prefers_elemental_emitters)
        self.assertFalse(_plan((1, at_bound + 1), 1).prefers_elemental_emitters)
        self.assertFalse(_plan((64, 256, 256, 1), 256).prefers_elemental_emitters)


class PreferForTest(tf.test.TestCase, parameterized.TestCase):
    def test_a_small_step_adds_the_flag_to_the_users_flags(self):
        environ = {"XLA_FLAGS": "--xla_dump_to=/tmp/x"}
        with self.assertLogs("absl", "INFO") as logs:
            self.assertTrue(xla_flags.prefer_for(_plan(), ["/CPU:0"], environ, "2.21.0"))
        self.assertEqual(environ["XLA_FLAGS"], f"--xla_dump_to=/tmp/x {ELEMENTAL}")
        self.assertIn("elemental emitters", logs.output[0])
        environ = {}
        devices = [
            "/job:localhost/replica:0/task:0/device:CPU:0",
            "/job:localhost/replica:0/task:0/device:CPU:1",
        ]
        self.assertTrue(xla_flags.prefer_for(_plan(), devices, environ, "2.20.0"))
        self.assertEqual(environ, {"XLA_FLAGS": ELEMENTAL})
        environ = {}
        self.assertTrue(xla_flags.prefer_for(_plan(), ["/CPU:0"], environ, "2.20.0-rc1"))
        self.assertEqual(environ, {"XLA_FLAGS": ELEMENTAL})

    @parameterized.named_parameters(
        ("a_larger_step", (64, 256, 256, 1), 256, {}, "2.21.0", "/CPU:0"),
        (
            "the_users_own_choice",
            ARTICLE,
            10,
            {"XLA_FLAGS": "--xla_cpu_use_fusion_emitters=true"},
            "2.21.0",
            "/CPU:0",
        ),
        ("a_tensorflow_whose_xla_lacks_the_flag", ARTICLE, 10, {}, "2.19.1", "/CPU:0"),
        ("a_release_candidate_before_it", ARTICLE, 10, {}, "2.19.0rc1", "/CPU:0"),
        ("an_older_major_minor", ARTICLE, 10, {}, "2.9.3", "/CPU:0"),
        ("a_gpu", ARTICLE, 10, {}, "2.21.0", "/GPU:0"),
        ("mirrored_gpus", ARTICLE, 10, {}, "2.21.0", "/job:localhost/replica:0/task:0/device:GPU:1"),
    )
    def test_leaves_xla_flags_alone_for(self, layers, batch_size, environ, version, device):
        before = dict(environ)
        self.assertFalse(
            xla_flags.prefer_for(_plan(layers, batch_size), ["/CPU:0", device], environ, version)
        )
        self.assertEqual(environ, before)


class CommandTest(tf.test.TestCase):
    """What XLA itself took up in tf-backprop-train: its dump lists the options not at default."""

    def _train(self, cwd: str, *flags: str, **environ: str) -> subprocess.CompletedProcess:
        """A short tf-backprop-train run in `cwd`, into cwd/run."""
        command = [sys.executable, "-m", "tf_backprop.cli.train", "--epochs=1", "--n_samples=200"]
        result = subprocess.run(
            [*command, "--noexport", "--workdir=run", *flags],
            cwd=cwd, env={**os.environ, **environ}, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        self.assertEqual(result.returncode, 0, result.stderr)
        return result

    def _run(self, *flags: str, xla_flags: str = "") -> tuple[str, str]:
        """(XLA's options as dumped, metrics.json) of a short run with `flags`."""
        cwd = self.create_tempdir().full_path
        dump = os.path.join(cwd, "xla")
        result = self._train(cwd, *flags, XLA_FLAGS=f"--xla_dump_to={dump} {xla_flags}")
        options = glob.glob(os.path.join(dump, "*debug_options"))
        self.assertNotEmpty(options, result.stderr)
        with open(options[0], encoding="utf-8") as handle:
            dumped = handle.read()
        with open(os.path.join(cwd, "run", "metrics.json"), encoding="utf-8") as handle:
            return dumped, handle.read()

    def test_the_default_run_compiles_with_the_elemental_emitters_to_the_same_bits(self):
        options, metrics = self._run()
        self.assertIn("xla_cpu_use_fusion_emitters: false", options)
        options, fusion_metrics = self._run(xla_flags="--xla_cpu_use_fusion_emitters=true")
        self.assertNotIn("xla_cpu_use_fusion_emitters", options)  # the user's choice: XLA's default
        self.assertEqual(metrics, fusion_metrics)

    def test_the_default_run_compiles_one_xla_program(self):
        # Its step loop, compiled on a second thread while the first call is traced and launched
        # from a graph as the call launches it: one program, not one per launch.
        cwd = self.create_tempdir().full_path
        dump = os.path.join(cwd, "xla")
        result = self._train(cwd, XLA_FLAGS=f"--xla_dump_to={dump}")
        programs = glob.glob(os.path.join(dump, "*.before_optimizations.txt"))
        self.assertLen(programs, 1, result.stderr)

    def test_a_larger_net_keeps_the_fusion_emitters(self):
        options, _ = self._run("--hidden=256,256", "--batch_size=64")
        self.assertNotIn("xla_cpu_use_fusion_emitters", options)

    def test_replicas_on_logical_cpus_leave_xla_flags_alone(self):
        # They compile nothing with XLA: the flag would be news about nothing.
        result = self._train(
            self.create_tempdir().full_path, "--strategy=mirrored", "--cpu_replicas=2", "--batch_size=20"
        )
        self.assertIn("MirroredStrategy", result.stderr)
        self.assertNotIn("emitters", result.stderr)
