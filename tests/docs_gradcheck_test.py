"""docs/gradcheck.md's Python blocks run in order and print the verdicts and elements the page shows."""

import contextlib
import io
import pathlib
import re

import tensorflow as tf

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "gradcheck.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
# Lines of a pasted output that must come out the same: verdicts, and the failing or kinked
# element's location (values are left out: their last digits depend on the machine).
CHECKED_LINE = re.compile(r"^(PASS: .*|FAIL: .*|(FAIL|kink) .*? at [^:]*:)")


class DocsTest(tf.test.TestCase):
    """docs/gradcheck.md's Python blocks run, and print the verdicts and elements shown."""

    def test_python_blocks_print_what_the_page_shows(self):
        blocks = FENCE.findall(DOC.read_text(encoding="utf-8"))
        namespace, checked = {"__name__": "docs_gradcheck"}, 0
        for (language, code), following in zip(blocks, [*blocks[1:], ("", "")]):
            if language != "python":
                continue
            output = io.StringIO()
            with contextlib.redirect_stdout(output):
                exec(compile(code, str(DOC), "exec"), namespace)  # noqa: S102 - the page's own code
            if following[0] == "text" and output.getvalue():
                printed = output.getvalue().splitlines()
                for line in following[1].splitlines():
                    expected = CHECKED_LINE.match(line)
                    if expected:
                        checked += 1
                        self.assertTrue(any(p.startswith(expected.group(0)) for p in printed), line)
        self.assertGreaterEqual(checked, 8)  # every verdict and failing element on the page


if __name__ == "__main__":
    tf.test.main()
