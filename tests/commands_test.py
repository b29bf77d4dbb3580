"""commands.run: a command forked from the warm interpreter ends as the same command run fresh."""

import json
import os
import subprocess
import sys
import unittest
from unittest import mock

import command_zygote
import commands
import tensorflow as tf

TIMEOUT = 180  # seconds
_BIN = os.path.dirname(sys.executable)


def _module(name: str, *flags: str) -> list[str]:
    return [sys.executable, "-m", f"tf_backprop.cli.{name}", *flags]


class SameAsFreshTest(tf.test.TestCase):
    """Exit status, stdout and stderr as the fresh process gives them."""

    def assert_same_both_ways(self, args: list[str], **kwargs) -> subprocess.CompletedProcess:
        cwd = self.create_tempdir().full_path
        forked = commands.run(args, cwd=cwd, timeout=TIMEOUT, **kwargs)
        fresh = commands.run(args, cwd=cwd, timeout=TIMEOUT, fresh=True, **kwargs)
        self.assertEqual(
            (forked.returncode, forked.stdout, forked.stderr), (fresh.returncode, fresh.stdout, fresh.stderr)
        )
        return forked

    def test_a_bad_flag(self):
        result = self.assert_same_both_ways(_module("gradcheck", "--eps=0"))
        self.assertEqual(result.returncode, 2)

    def test_a_successful_run_to_stdout(self):
        result = self.assert_same_both_ways(_module("explain", "--format=json"))
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("layers", json.loads(result.stdout))

    def test_a_console_script_names_itself(self):
        result = self.assert_same_both_ways([os.path.join(_BIN, "tf-backprop-predict"), "--input=x.csv"])
        self.assertEqual(result.stderr, "tf-backprop-predict: error: flag --model is required\n")

    def test_the_same_command_twice(self):
        """Each child starts from the zygote's state, not the last command's (its flags)."""
        for _ in range(2):
            self.assertEqual(self.assert_same_both_ways(_module("gradcheck", "--order=3")).returncode, 2)


class RequestTest(tf.test.TestCase):
    """What a forked command is given: its folder and environment."""

    def test_runs_in_its_folder(self):
        cwd = self.create_tempdir().full_path
        with open(os.path.join(cwd, "my.flags"), "w", encoding="utf-8") as handle:
            handle.write("--eps=0\n")
        result = commands.run(_module("gradcheck", "--flagfile=my.flags"), cwd=cwd, timeout=TIMEOUT)
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertIn("--eps", result.stderr)

    def test_reads_its_environment(self):
        env = {**os.environ, "TF_CONFIG": "{not json"}  # read by the command, not the import
        cwd = self.create_tempdir().full_path
        result = commands.run(_module("train", "--strategy=multi_worker"), cwd=cwd, env=env, timeout=TIMEOUT)
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertIn("TF_CONFIG: not valid JSON", result.stderr)

    def test_a_timeout_kills_it_and_the_next_command_runs(self):
        cwd = self.create_tempdir().full_path
        with self.assertRaises(subprocess.TimeoutExpired):
            commands.run(_module("train", "--epochs=100000", "--workdir=run"), cwd=cwd, timeout=0.5)
        result = commands.run(_module("gradcheck", "--eps=0"), cwd=cwd, timeout=TIMEOUT)
        self.assertEqual(result.returncode, 2, result.stderr)


@unittest.skipIf(not commands.forks_with(dict(os.environ)), f"{commands.FRESH_ENV} is set")
class WhichWayTest(tf.test.TestCase):
    def test_the_package_commands_fork(self):
        self.assertEqual(commands.command_module(_module("train", "--epochs=1")), "tf_backprop.cli.train")
        self.assertEqual(
            commands.command_module([os.path.join(_BIN, "tf-backprop-explain")]), "tf_backprop.cli.explain"
        )

    def test_other_commands_run_fresh(self):
        for args in ([sys.executable, "-c", "pass"], ["tf-backprop-train"], ["/bin/tf-backprop-train"]):
            with self.subTest(args=args):
                self.assertIsNone(commands.command_module(args))

    def test_an_environment_the_import_reads_differently_runs_fresh(self):
        env = dict(os.environ)
        self.assertTrue(commands.forks_with(env))
        env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the package's import sets it to 2
        self.assertTrue(commands.forks_with(env))
        self.assertTrue(commands.forks_with({**env, "TF_CONFIG": "{}"}))  # read by the command
        for name, value in (
            ("TF_BACKPROP_VERBOSE_TF", "1"),
            ("XLA_FLAGS", "--xla_dump_to=x"),
            ("TF_CPP_MIN_LOG_LEVEL", "0"),
            ("TMPDIR", "/elsewhere"),
            ("LC_ALL", "C"),
            ("KERAS_BACKEND", "jax"),
        ):
            with self.subTest(name=name):
                self.assertFalse(commands.forks_with({**env, name: value}))

    def test_the_switch_runs_every_command_fresh(self):
        env = dict(os.environ)  # without the switch: the command's own environment is as usual
        with mock.patch.dict(os.environ, {commands.FRESH_ENV: "1"}):
            self.assertFalse(commands.forks_with(env))


class MissingSupportTest(tf.test.TestCase):
    def test_a_system_without_pidfd_open_is_named(self):
        """Where it is missing the zygote says so, and every command runs fresh."""
        self.assertIsNone(command_zygote.missing_support())
        with mock.patch.object(os, "pidfd_open", side_effect=OSError(38, "Function not implemented")):
            self.assertIn("pidfd_open", command_zygote.missing_support())


if __name__ == "__main__":
    tf.test.main()
