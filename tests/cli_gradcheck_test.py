"""tf-backprop-gradcheck, run as a subprocess: exit codes, text and JSON output, one-line errors."""

import json
import subprocess
import sys

import commands
import tensorflow as tf

TIMEOUT = 120  # seconds; a run takes a few (mostly importing TensorFlow)


def _run(*flags: str, cwd: str, fresh: bool = False) -> subprocess.CompletedProcess:
    """The command, forked from a warm interpreter unless `fresh` (commands.run)."""
    command = [sys.executable, "-m", "tf_backprop.cli.gradcheck", *flags]
    return commands.run(command, cwd=cwd, timeout=TIMEOUT, fresh=fresh)


class GradcheckCliTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        self.cwd = self.get_temp_dir()

    def test_default_checks_the_article_net(self):
        result = _run(cwd=self.cwd)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("MLP 2-3-3-1 (relu → linear), loss half_mse", result.stdout)
        for expected in ["dense_1/kernel", "tape ↔ manual", "tape ↔ numeric", "manual ↔ numeric", "PASS"]:
            self.assertIn(expected, result.stdout)
        self.assertNotIn("Traceback", result.stderr)

    def test_json_fast_mode_with_class_labels(self):
        flags = ["--json", "--layers=6,16,4", "--activation=tanh", "--loss=categorical_crossentropy"]
        result = _run(*flags, "--mode=fast", "--l2=0.01", cwd=self.cwd)
        self.assertEqual(result.returncode, 0, result.stderr)
        report = json.loads(result.stdout)
        self.assertTrue(report["passed"])
        self.assertEqual((report["mode"], report["dtype"]), ("fast", "float64"))
        self.assertEqual([e["name"] for e in report["entries"]][:2], ["dense_1/kernel", "dense_1/bias"])
        self.assertLen(report["entries"][0]["comparisons"], 3)
        more = json.loads(_run(*flags, "--mode=fast", "--directions=6", "--samples=9", cwd=self.cwd).stdout)
        self.assertEqual(more["entries"][0]["comparisons"][1]["checked"], 6 + 9)  # dense_1/kernel: 96

    def test_a_check_that_could_not_verify_exits_1(self):
        # A step so small that round-off swamps the differences: INCONCLUSIVE is not a pass.
        result = _run("--activation=tanh", "--eps=1e-14", cwd=self.cwd)
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertIn("INCONCLUSIVE", result.stdout)

    def test_a_large_step_is_no_fail_of_a_smooth_net(self):
        # Its truncation error (8.8e-5 relative at eps 0.01) FAILed the net's right gradients;
        # the half step shows it, and the extrapolated difference agrees.
        result = _run("--activation=tanh", "--eps=0.01", cwd=self.cwd)
        self.assertEqual(result.returncode, 0, result.stdout)
        self.assertIn("PASS", result.stdout)

    def test_a_step_too_large_is_refused_not_passed(self):
        # It used to PASS with every hidden-layer difference "a kink" (42 kinks at 1e10, 40 at 0.5).
        for eps in ("1e10", "0.5"):
            with self.subTest(eps=eps):
                result = _run(f"--eps={eps}", cwd=self.cwd)
                self.assertEqual(result.returncode, 2, result.stderr)
                self.assertEqual(result.stdout, "")
                lines = result.stderr.strip().splitlines()
                self.assertLen(lines, 1, result.stderr)
                self.assertIn("eps: ", lines[0])
                self.assertIn("would move dense_1/kernel", lines[0])

    def test_second_order_compares_three_sources(self):
        result = _run("--order=2", "--json", cwd=self.cwd)
        self.assertEqual(result.returncode, 0, result.stderr)
        report = json.loads(result.stdout)
        self.assertEqual(report["verdict"], "PASS")
        self.assertIn("second order", report["title"])
        labels = [c["sources"] for c in report["entries"][0]["comparisons"]]
        self.assertEqual(labels, [["tape", "manual"], ["tape", "numeric"], ["manual", "numeric"]])
        self.assertEqual(report["entries"][0]["comparisons"][0]["checked"], 25 * 6)  # [n, n_i] block

    def test_atol_and_rtol_reach_the_comparisons_with_the_differences(self):
        # The report's advice for tiny gradients is "pass a smaller atol": the command had no flag.
        result = _run("--json", "--atol=1e-6", "--rtol=1e-3", cwd=self.cwd)
        self.assertEqual(result.returncode, 0, result.stderr)
        for comparison in json.loads(result.stdout)["entries"][0]["comparisons"][1:]:  # ↔ numeric
            self.assertEqual((comparison["atol"], comparison["rtol"]), (1e-6, 1e-3))

    def test_bad_flags_exit_2_with_one_line(self):
        cases = {
            "--layers=2,0,1": "error: --layers: ",  # the flag, not the library's layer_sizes
            "--activation=nope": "error: --activation: unknown name 'nope'",
            "--initializer=nope": "error: --initializer: unknown name 'nope'",  # not kernel_initializer
            "--eps=0": "error: --eps: expected a positive finite number",
            "--batch_size=abc": "--batch_size",  # absl's own parse error
            "--order=3": "error: flag --order: expected one of 1, 2, got '3'",
            "--mode=exact": "error: flag --mode: expected one of full, fast, got 'exact'",
            "--dtype=float16": "error: flag --dtype: expected one of float32, float64, got 'float16'",
            "--loss=nope": "error: flag --loss: expected one of mse, half_mse,",
            "--atol=0": "error: --atol: expected a positive finite number, got 0.0",
            "--rtol=1": "error: --rtol: expected a number below 1",
            "--directions=0": "error: --directions: expected an integer ≥ 1, got 0",
        }
        for index, (flag, expected) in enumerate(cases.items()):
            with self.subTest(flag=flag):
                result = _run(flag, cwd=self.cwd, fresh=index == 0)  # one where TensorFlow imports
                self.assertEqual(result.returncode, 2, result.stderr)
                self.assertEqual(result.stdout, "")
                lines = result.stderr.strip().splitlines()
                self.assertLen(lines, 1, result.stderr)
                self.assertIn(expected, lines[0])
                self.assertNotIn("Traceback", result.stderr)


if __name__ == "__main__":
    tf.test.main()
