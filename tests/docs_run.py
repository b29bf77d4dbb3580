"""Runs a page's steps (tests/docs_pages.py) as a new user would, in one temporary folder per page.

Each page's folder starts with a copy of examples/ and of the example runs the page names
(`runs/houses`, `runs/penguins`), which are trained once per process by the training.md lines
that write them; those lines are not run again on their page (their results are reused).
Shell lines run in bash (`set -o pipefail`) with the venv's console scripts first on PATH and
without the variables that make the tools chatty; Python blocks run in one namespace per page,
in the page's folder, their stdout captured, Keras's names counted afresh.  Printed paths are shown relative to the folder:
the folder's own path is removed from the output.

Besides the exit code and the shown output, every package command's stderr may hold only the
run's own lines: absl log lines of the package's modules and `tf-backprop-…: warning/error:`
lines (no TensorFlow chatter, no traceback).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import io
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import traceback

import docs_pages
import keras

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = ("README.md", *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")))
EXAMPLE_RUNS = {"runs/houses": "docs/training.md", "runs/penguins": "docs/training.md"}
TIMEOUT = 600  # seconds per command: the slowest takes ~20 s alone, several times that when busy
_QUIETING = ("TF_BACKPROP_VERBOSE_TF", "TF_CPP_MIN_LOG_LEVEL", "TF_CONFIG")
_ABSL_LINE = re.compile(r"^[IWEF]\d{4} [\d:.]+ +\d+ (?P<file>[\w.]+):\d+\] ")
_OWN_LINE = re.compile(r"^tf-backprop-[a-z]+: (warning|error): ")
_OWN_FILES = {p.name for d in ("tf_backprop", "cli") for p in (ROOT / d).rglob("*.py")}


@dataclasses.dataclass
class Result:
    """What a step did: its exit code (Python: 0, or 1 with the traceback in stderr) and output."""

    code: int
    stdout: str
    stderr: str


def read(name: str) -> docs_pages.Page:
    return docs_pages.parse(name, (ROOT / name).read_text(encoding="utf-8"))


def new_folder(prefix: str) -> str:
    folder = tempfile.mkdtemp(prefix=f"docs-{prefix}-")
    atexit.register(shutil.rmtree, folder, True)
    return folder


def shell(command: str, folder: str) -> Result:
    env = {k: v for k, v in os.environ.items() if k not in _QUIETING}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    done = subprocess.run(
        ["bash", "-c", f"set -o pipefail\n{command}"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    return Result(done.returncode, _relative(done.stdout, folder), _relative(done.stderr, folder))


def python(code: str, namespace: dict, folder: str, name: str) -> Result:
    output, cwd = io.StringIO(), os.getcwd()
    os.chdir(folder)
    try:
        with contextlib.redirect_stdout(output):
            exec(compile(code, name, "exec"), namespace)  # noqa: S102 - the page's own code
        return Result(0, _relative(output.getvalue(), folder), "")
    except Exception:  # noqa: BLE001 - reported as the step's failure
        return Result(1, _relative(output.getvalue(), folder), traceback.format_exc(limit=-3))
    finally:
        os.chdir(cwd)


def _relative(text: str, folder: str) -> str:
    for path in {os.path.realpath(folder), folder}:
        text = text.replace(path + os.sep, "").replace(path, ".")
    return text


def foreign_stderr(step: docs_pages.Step, stderr: str) -> list[str]:
    """The stderr lines of a package command that are not the run's own."""
    if step.kind != "shell" or "saved_model_cli" in step.code:
        return []
    foreign = []
    for line in stderr.splitlines():
        absl = _ABSL_LINE.match(line)
        if not (_OWN_LINE.match(line) or (absl and absl.group("file") in _OWN_FILES)):
            foreign.append(line)
    return foreign


class ExampleRuns:
    """The example runs, each trained once by the first line of its page that writes it."""

    def __init__(self):
        self.folder, self.results = None, {}  # (page, line) -> Result

    def producing(self, page: docs_pages.Page) -> dict[int, str]:
        """{line: run} of the page's lines that write an example run."""
        found = {}
        for run, source in EXAMPLE_RUNS.items():
            if source != page.name:
                continue
            step = next(
                (s for s in page.steps if s.kind == "shell" and f"--workdir={run} " in f"{s.code} "), None
            )
            if step is None:
                raise AssertionError(f"{source} has no line that writes {run} (--workdir={run})")
            found[step.line] = run
        return found

    def ensure(self) -> str:
        if self.folder is None:
            folder = new_folder("runs")
            shutil.copytree(ROOT / "examples", os.path.join(folder, "examples"))
            for source in sorted(set(EXAMPLE_RUNS.values())):
                page = read(source)
                for line in self.producing(page):
                    step = next(s for s in page.steps if s.line == line)
                    self.results[(source, line)] = shell(step.code, folder)
            self.folder = folder
        return self.folder

    def copy_into(self, folder: str, text: str) -> None:
        for run in EXAMPLE_RUNS:
            if run in text:
                shutil.copytree(os.path.join(self.ensure(), run), os.path.join(folder, run))


EXAMPLES = ExampleRuns()


def run_page(name: str, on_output=None) -> list[str]:
    """Runs a page's steps in order; the problems found, each naming the page and line.

    on_output(step, printed lines): called for each step whose output the page shows
    (tests/docs_regenerate.py rewrites them).
    """
    page, text = read(name), (ROOT / name).read_text(encoding="utf-8")
    problems = list(page.problems)
    folder = new_folder(pathlib.Path(name).stem)
    shutil.copytree(ROOT / "examples", os.path.join(folder, "examples"))
    EXAMPLES.copy_into(folder, text)
    produced = EXAMPLES.producing(page)
    namespace = {"__name__": f"docs_{pathlib.Path(name).stem}"}
    keras.utils.clear_session()  # layer and model names as in a fresh interpreter ('sequential', 'dense')
    for step in page.steps:
        if step.kind == "python":
            result = python(step.code, namespace, folder, f"{name}:{step.line}")
        elif step.line in produced:
            EXAMPLES.ensure()
            result = EXAMPLES.results[(name, step.line)]
        else:
            result = shell(step.code, folder)
        problems += check_step(name, step, result, compare_output=on_output is None)
        if on_output is not None and step.output is not None and result.code == step.exit_code:
            on_output(step, result.stdout.splitlines())
    return problems


def check_step(name: str, step: docs_pages.Step, result: Result, compare_output: bool = True) -> list[str]:
    """The step's problems: its exit code, foreign stderr lines, and (compare_output) what it
    printed against what the page shows."""
    where = f"{name}:{step.line}"
    if result.code != step.exit_code:
        tail = "\n    ".join((result.stderr or result.stdout).strip().splitlines()[-6:])
        return [
            f"{where}: exit {result.code}, expected {step.exit_code}: {step.code.strip()[:200]}\n    {tail}"
        ]
    problems = [
        f"{where}: stderr line not the run's own: {line!r}" for line in foreign_stderr(step, result.stderr)
    ]
    if step.output is not None and compare_output:
        for problem in docs_pages.compare(step.output.lines, result.stdout.splitlines()):
            offset, _, what = problem.partition(": ")
            problems.append(f"{name}:{step.output.line + int(offset[1:])}: {what}")
    return problems
