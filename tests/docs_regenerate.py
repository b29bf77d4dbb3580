"""Reruns docs pages and rewrites the outputs they show: python tests/docs_regenerate.py [PAGE ...].

Each page (default: every page of README.md and docs/) runs as tests/docs_test.py runs it; every
output block a page shows is replaced by what its step printed, keeping each number's shown
precision and the `...` and `…` abridgements (tests/docs_pages.py).  An abridged block that no
longer fits is left alone and named: edit it by hand.  Problems other than outputs (a command's
exit code, chatter on stderr) are printed, not fixed.  Exit 1 when anything is left to fix.
"""

import os
import pathlib
import sys

# TensorFlow's set-up for this process, as under pytest (two logical CPUs, quiet C++ logs).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# isort: off
import tf_backprop  # noqa: E402, F401 - imports TensorFlow quietly, before conftest does
import conftest  # noqa: E402, F401
import docs_pages  # noqa: E402
import docs_run  # noqa: E402

# isort: on


def regenerate(name: str) -> list[str]:
    """Rewrites the page's shown outputs; the problems left."""
    path = docs_run.ROOT / name
    lines = path.read_text(encoding="utf-8").split("\n")
    replacements, left = [], []

    def on_output(step, printed):
        try:
            fresh = docs_pages.regenerate(step.output.lines, printed)
        except ValueError as error:
            left.append(f"{name}:{step.output.line}: {error}")
            return
        replacements.append((step.output.line - 1, len(step.output.lines), fresh))

    problems = docs_run.run_page(name, on_output)
    for start, count, fresh in sorted(replacements, reverse=True):
        lines[start : start + count] = fresh
    path.write_text("\n".join(lines), encoding="utf-8")
    return left + problems


def main(argv: list[str]) -> int:
    pages = argv or list(docs_run.PAGES)
    left = []
    for name in pages:
        left += regenerate(str(pathlib.PurePosixPath(name)))
    for problem in left:
        print(problem)
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
