"""docs/explain.md, docs/article_net.svg and README's "See it" show what the code produces.

The text block after `OUTPUT_MARKER` is `tf-backprop-explain`'s default output, and
docs/article_net.svg its `--format=svg` picture (regenerate it with
`tf-backprop-explain --format=svg --output=docs/article_net.svg --overwrite`); both are compared with what
the library renders now.  tests/cli_explain_test.py checks the CLI prints the same.
"""

import os
import pathlib
import re

import tensorflow as tf
from explain_examples import DEFAULT_TITLE, default_trace

from tf_backprop.explaining import render, svg

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "explain.md"
PICTURE = ROOT / "docs" / "article_net.svg"
OUTPUT_MARKER = "<!-- explain-output: checked by tests/docs_explain_test.py -->"


def output_block(text: str) -> str:
    """The body of the first fenced block after OUTPUT_MARKER."""
    start = text.index(OUTPUT_MARKER)
    match = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M).search(text, start)
    if match is None:
        raise AssertionError(f"no fenced block after {OUTPUT_MARKER!r}")
    return match.group(1)


def first_difference(expected: str, actual: str) -> str | None:
    """The first differing line of two texts, or None when they are equal."""
    if expected == actual:
        return None
    pairs = zip(expected.splitlines(), actual.splitlines())
    line, (a, b) = next(((i, pair) for i, pair in enumerate(pairs, 1) if pair[0] != pair[1]), (0, ("", "")))
    return f"line {line}: doc {a!r} vs code {b!r}" if line else "the texts differ in length"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, re.S | re.M)


class ExplainDocTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        self.text = DOC.read_text(encoding="utf-8")
        self.code_output = render.to_text(default_trace(), DEFAULT_TITLE)

    def test_the_pasted_output_is_the_codes(self):
        self.assertIsNone(first_difference(output_block(self.text), self.code_output))

    def test_an_edited_number_is_caught(self):
        edited = self.text.replace("L = 0.317032", "L = 0.317033", 1)
        self.assertNotEqual(edited, self.text)
        self.assertIn("line 3", first_difference(output_block(edited), self.code_output))

    def test_numbers_quoted_in_the_prose_are_the_outputs(self):
        self.assertIn("θ − 0.01·g: L 0.317032 → 0.244018 with the right g, → 0.401267", self.code_output)
        self.assertIn("`L 0.317 → 0.401`, against `→ 0.244`", self.text)
        self.assertIn("42 forward passes for these 21 parameters", self.code_output)

    def test_the_python_example_runs(self):
        blocks = python_blocks(self.text)
        self.assertLen(blocks, 1)
        cwd = os.getcwd()
        os.chdir(self.get_temp_dir())
        try:
            scope = {}
            exec(compile(blocks[0], str(DOC), "exec"), scope)  # noqa: S102
            self.assertEqual(pathlib.Path("net.svg").read_text(encoding="utf-8"), svg.render(scope["trace"]))
        finally:
            os.chdir(cwd)
        self.assertEqual(render.to_text(scope["trace"]), render.to_text(default_trace()))


class PictureTest(tf.test.TestCase):
    def test_the_committed_picture_is_the_codes(self):
        committed = PICTURE.read_text(encoding="utf-8")
        self.assertIsNone(first_difference(committed, svg.render(default_trace(), DEFAULT_TITLE)))

    def test_the_readme_shows_it(self):
        readme = (ROOT / "README.md").read_text(encoding="utf-8")
        section = readme[readme.index("## See it") :]
        section = section[: section.index("\n## ", 1)]
        self.assertIn("tf-backprop-explain --format=svg --output=net.svg", section)
        self.assertIn("](docs/article_net.svg)", section)
        self.assertIn(
            "![The article's 2-3-3-1 net on one sample](article_net.svg)", DOC.read_text(encoding="utf-8")
        )


if __name__ == "__main__":
    tf.test.main()
