"""Docs that run: every example of README.md and docs/*.md does what its page says.

Each page runs in a temporary folder of its own (tests/docs_run.py): its Python blocks, the
shell lines that call a package command, its transcripts; exit codes, the output each shows
(numbers to the digits shown) and the commands' stderr are checked.  The rules and the marks
are in tests/docs_pages.py and README.md ("Docs that run").  The other tests here plant the
faults the harness must catch: a changed number, a wrong flag, an unmarked line, chatter.
"""

from __future__ import annotations

import ast
import re

import docs_pages
import docs_run
import tensorflow as tf
from absl.testing import parameterized

ROOT = docs_run.ROOT


class PagesTest(parameterized.TestCase, tf.test.TestCase):
    """Every page's examples run as written."""

    @parameterized.parameters(*docs_run.PAGES)
    def test_page_runs_as_written(self, name):
        problems = docs_run.run_page(name)
        self.assertEqual(problems, [], "\n".join(problems))


class CoverageTest(tf.test.TestCase):
    """What the harness finds on the pages: nothing silently left out."""

    def test_every_page_is_read(self):
        self.assertCountEqual(
            docs_run.PAGES, ["README.md", *(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))]
        )

    def test_the_pages_steps_and_shown_outputs(self):
        pages = {name: docs_run.read(name) for name in docs_run.PAGES}
        gradcheck = pages["docs/gradcheck.md"].steps
        self.assertGreaterEqual(sum(s.kind == "python" and s.output is not None for s in gradcheck), 11)
        self.assertGreaterEqual(sum(len(p.steps) for p in pages.values()), 45)
        for name, page in pages.items():
            for line, reason in page.illustrative:
                self.assertRegex(reason, r"\w{3}", f"{name}:{line}")

    def test_ci_commands_are_marked_not_run(self):
        """README's two opening commands would install and rerun this suite: marked, visibly."""
        readme = docs_run.read("README.md")
        first_lines = sorted(line for line, _ in readme.illustrative)[:2]
        self.assertEqual(first_lines, [4, 9])
        self.assertFalse(any("pip install" in step.code for step in readme.steps))

    def test_every_example_run_is_written_by_its_page(self):
        for run, source in docs_run.EXAMPLE_RUNS.items():
            self.assertIn(run, docs_run.EXAMPLES.producing(docs_run.read(source)).values())


class FaultsTest(tf.test.TestCase):
    """The harness catches drift: each check fails on a planted fault."""

    def test_a_changed_number_in_a_shown_output_fails(self):
        page = docs_run.read("docs/gradcheck.md")
        step = page.steps[0]  # the log-sum-exp check and its pasted report
        folder = docs_run.new_folder("fault")
        result = docs_run.python(step.code, {}, folder, "docs/gradcheck.md")
        self.assertEqual(docs_run.check_step(page.name, step, result), [])
        line = next(i for i, text in enumerate(step.output.lines) if "4.87e-10" in text)
        step.output.lines[line] = step.output.lines[line].replace("4.87e-10", "4.88e-10")
        (problem,) = docs_run.check_step(page.name, step, result)
        self.assertIn(
            f"docs/gradcheck.md:{step.output.line + line}: shown 4.88e-10, printed 4.87e-10", problem
        )

    def test_a_wrong_flag_fails(self):
        page = docs_pages.parse("page.md", "```sh\ntf-backprop-gradcheck --layerz=2,3,1\n```\n")
        (step,) = page.steps
        result = docs_run.shell(step.code, docs_run.new_folder("fault"))
        (problem,) = docs_run.check_step(page.name, step, result)
        self.assertRegex(problem, r"^page\.md:2: exit 2, expected 0: tf-backprop-gradcheck --layerz")
        self.assertIn("layerz", problem)

    def test_changed_text_or_a_missing_line_fails(self):
        shown = ["trained 800 steps; test loss 0.04304", "outputs in runs/houses: config.json"]
        self.assertEqual(docs_pages.compare(shown, shown), [])
        self.assertNotEqual(docs_pages.compare(shown, ["trained 800 steps; test loss 0.04304"]), [])
        self.assertNotEqual(docs_pages.compare(shown, [shown[0], "outputs in runs/house: config.json"]), [])
        self.assertNotEqual(docs_pages.compare(shown, [*shown, "one more line"]), [])

    def test_unmarked_lines_and_reasonless_marks_are_problems(self):
        text = (
            "```sh\npip install foo\ntensorboard --logdir runs/  # illustrative:\n"
            "docker run x  # illustrative: needs docker\n```\n"
            "```python\n# illustrative:\nprint(1)\n```\n"
        )
        page = docs_pages.parse("page.md", text)
        self.assertLen(page.problems, 4)
        self.assertIn("page.md:2: `pip install foo` calls no package command", page.problems[0])
        self.assertIn("page.md:3: an illustrative mark needs a reason", page.problems[1])
        self.assertIn("page.md:7: an illustrative mark needs a reason", page.problems[3])
        self.assertEqual(page.illustrative, [(4, "needs docker")])

    def test_tensorflow_chatter_on_stderr_is_caught(self):
        step = docs_pages.Step("shell", "tf-backprop-train", 1)
        own = (
            "I1129 15:04:37.291274 140673936714624 splits.py:32] Loaded regression: 1000 rows\n"
            'tf-backprop-predict: warning: new.csv: copying column(s) "id" through unchanged\n'
        )
        self.assertEqual(docs_run.foreign_stderr(step, own), [])
        chatter = "E0000 00:00:1795964685.735258   30513 cuda_platform.cc:52] failed call to cuInit: (303)"
        self.assertEqual(docs_run.foreign_stderr(step, own + chatter), [chatter])
        sharding = "I1129 15:04:40.574412 140673936714624 checkpoint.py:138] Sharding callback duration: 5"
        self.assertEqual(
            docs_run.foreign_stderr(step, sharding.replace("checkpoint.py", "async_checkpoint_helper.py")),
            [sharding.replace("checkpoint.py", "async_checkpoint_helper.py")],
        )


class ComparisonTest(tf.test.TestCase):
    """Shown precision, `...` and `…`, and regeneration."""

    def test_numbers_agree_to_the_digits_shown(self):
        self.assertEqual(docs_pages.compare(["rmse 0.17"], ["rmse 0.168"]), [])
        self.assertEqual(docs_pages.compare(["max abs 1.15e-09"], ["max abs 1.1523e-09"]), [])
        self.assertNotEqual(docs_pages.compare(["rmse 0.16"], ["rmse 0.168"]), [])
        self.assertNotEqual(docs_pages.compare(["1000 steps"], ["1001 steps"]), [])
        self.assertEqual(docs_pages.compare(["a  −0.5"], ["a -0.5"]), [])

    def test_skipped_lines_and_elided_text(self):
        shown = ["first", "...", "x 1.5…  ok", "...", "last 3"]
        self.assertEqual(
            docs_pages.compare(shown, ["first", "a", "b", "x 1.5123 more  ok", "c", "last 3"]), []
        )
        self.assertNotEqual(docs_pages.compare(shown, ["first", "x 1.6 ok", "last 3"]), [])
        self.assertNotEqual(docs_pages.compare(shown, ["first", "x 1.5 ok", "last 3", "after"]), [])

    def test_regeneration_keeps_precision_and_abridgements(self):
        shown = ["...", "loss 0.17 rmse 1.00e-03 p 2.0…", "end"]
        printed = ["head", "loss 0.2134 rmse 2.5e-03 p 3.14159", "end"]
        self.assertEqual(
            docs_pages.regenerate(shown, printed), ["...", "loss 0.21 rmse 2.50e-03 p 3.1…", "end"]
        )
        self.assertEqual(docs_pages.regenerate(["a 1"], ["b", "c"]), ["b", "c"])
        with self.assertRaisesRegex(ValueError, "edit it by hand"):
            docs_pages.regenerate(["...", "a 1"], ["b"])


def _cli_flags() -> dict[str, list[str]]:
    """{cli module: the flags it defines with a literal name} (train's are generated: below)."""
    defined = {}
    for path in sorted((ROOT / "cli").glob("*.py")):
        calls = [n for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))) if isinstance(n, ast.Call)]
        names = [
            call.args[0].value
            for call in calls
            if isinstance(call.func, ast.Attribute)
            and call.func.attr.startswith("DEFINE_")
            and call.args
            and isinstance(call.args[0], ast.Constant)
        ]
        defined[path.stem] = names
    return defined


class FlagsDocumentedTest(tf.test.TestCase):
    """Every flag of every command is named on a page (train's config flags: tests/cli_train_test.py)."""

    def test_every_flag_of_every_command_is_documented(self):
        text = "\n".join(
            p.read_text(encoding="utf-8") for p in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]
        )
        flags = _cli_flags()
        self.assertIn("restart", flags["train"])
        self.assertIn("overwrite", flags["predict"])
        undocumented = [
            f"{cli}: --{name}"
            for cli, names in flags.items()
            for name in names
            if not re.search(rf"--(\[no\])?{name}\b", text)
        ]
        self.assertEqual(undocumented, [])


if __name__ == "__main__":
    tf.test.main()
