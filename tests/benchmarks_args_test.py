"""The benchmark scripts' own arguments: a bad one is one line and exit 2, before any work; and their tables' rates."""

import os
import subprocess
import sys
import unittest

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
TIMEOUT = 60


class ArgsTestCase(unittest.TestCase):
    def assert_refused(self, script: str, args: list[str], message: str) -> None:
        """`script args` exits 2, printing nothing on stdout and on stderr one line: the
        script's name, "error:" and a text matching `message` (a regex)."""
        done = subprocess.run(
            [sys.executable, os.path.join(BENCHMARKS, script), *args],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        self.assertEqual(done.returncode, 2, done.stderr)
        self.assertEqual(done.stdout, "")
        self.assertRegex(done.stderr, rf"^{script.replace('.', '[.]')}: error: {message}\n$")


class CompileBenchArgsTest(ArgsTestCase):
    def test_a_bad_turns_argument_is_one_line_and_exit_2(self):
        for args in (["--turns=x"], ["--turns=0"], ["-t", "3"], ["--turns=2", "extra"]):
            with self.subTest(args=args):
                self.assert_refused(
                    "compile_bench.py", args, r"expected --turns=N, N a positive integer; got '.+'"
                )


class PerModelArgsTest(ArgsTestCase):
    """train_bench and loop_floor share per_model.main's --models=I,J,..."""

    def test_a_bad_models_argument_is_one_line_and_exit_2(self):
        for script, n_models in (("train_bench.py", 5), ("loop_floor.py", 2)):
            for args in (
                ["--models=x"],
                [f"--models={n_models}"],
                ["--models="],
                ["--models=0,"],
                ["-m", "1"],
                ["--models=0", "extra"],
            ):
                with self.subTest(script=script, args=args):
                    self.assert_refused(
                        script,
                        args,
                        rf"expected --models=I,J,\.\.\. with each I in 0\.\.{n_models - 1}; got '.+'",
                    )


class ImportBenchArgsTest(ArgsTestCase):
    def test_a_bad_argument_is_one_line_and_exit_2(self):
        for args, expected in (
            (["--turns=x"], r"expected --turns=N, N a positive integer; got '--turns=x'"),
            (["--turns=0"], r"expected --turns=N, N a positive integer; got '--turns=0'"),
            (["-t"], r"expected --turns=N or a Python interpreter's path; got '-t'"),
            (["no/such/python"], r"no/such/python: not an executable Python interpreter"),
            (["true"], r"true: not an executable Python interpreter"),  # exits 0 for any argument
            (["echo"], r"echo: not an executable Python interpreter"),
        ):
            with self.subTest(args=args):
                self.assert_refused("import_bench.py", args, expected)


class RateTest(unittest.TestCase):
    """per_model.rate: one decimal below 100 steps/s, whole numbers from 100 on."""

    def test_the_decimal_is_decided_on_the_rounded_rate(self):
        sys.path.insert(0, BENCHMARKS)
        try:
            import per_model
        finally:
            sys.path.remove(BENCHMARKS)
        cases = {None: "-", 15.04: "15.0", 99.94: "99.9", 99.96: "100", 100.4: "100", 222105.2: "222,105"}
        for rate, shown in cases.items():
            with self.subTest(rate=rate):
                self.assertEqual(per_model.rate(rate), shown)
