"""What the docs harness reads from a Markdown page, and how it compares shown and printed output.

Pure text, no TensorFlow: tests/docs_test.py runs what this finds (tests/docs_run.py), and
tests/docs_regenerate.py rewrites the outputs a page shows.

A page's runnable parts, in page order:

* a ```python block runs in the page's namespace; the ```text block right after it (nothing but
  blank lines between) is its output;
* a ```bash / ```sh block: each line that calls a package command (`tf-backprop-…`,
  `saved_model_cli`) runs in bash; any other line (`pip install`, `docker …`) must be marked;
* a transcript: a fenced block whose first line starts with `$ ` — each `$ command` runs, and
  the lines under it, up to the next `$ `, are its stdout.

Marks, visible on the page as comments:

* `# illustrative: REASON` as a block's first line leaves the block out; at the end of a shell
  line, that line (REASON must say why: needs a GPU, docker, a second machine…);
* `# exits N` in a command's comment: the exit code it must end with (default 0).

Shown output is compared line by line: a line `...` stands for any number of lines; `…` inside
a line for any text; every number must equal the printed one to the precision shown (`0.17`
matches 0.168, not 0.16); other text must be equal, runs of spaces aside.
"""

from __future__ import annotations

import dataclasses
import math
import re

PACKAGE_COMMAND = re.compile(r"(?<![\w/.-])(tf-backprop-[a-z]+|saved_model_cli)(?![\w-])")
ILLUSTRATIVE = re.compile(r"#.*?\billustrative:\s*(\S.*?)\)?$")
EXITS = re.compile(r"#.*?\bexits (\d+)\b")
FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)
SHELL_LANGUAGES = ("bash", "sh", "shell")
SKIP_LINES = "..."  # a whole line: any number of printed lines
ANY_TEXT = "…"  # inside a line: any text
NUMBER = r"[-−]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_TOKEN = re.compile(rf"(?P<number>{NUMBER})|(?P<any>{ANY_TEXT})|(?P<space>\s+)|(?P<text>.)")


@dataclasses.dataclass
class Output:
    """Lines a page shows as a run's output; `line` is the first one's line number (1-based)."""

    line: int
    lines: list[str]


@dataclasses.dataclass
class Step:
    """One runnable thing of a page: a shell command or a Python block.

    kind: "shell" or "python"; code: the command (continuations joined) or the block's source;
    line: where it starts on the page; exit_code: the one it must end with (shell only);
    output: what the page shows it prints, if anything.
    """

    kind: str
    code: str
    line: int
    exit_code: int = 0
    output: Output | None = None


@dataclasses.dataclass
class Page:
    """A page's steps in order, what it leaves out with the reasons, and what it gets wrong."""

    name: str
    steps: list[Step]
    illustrative: list[tuple[int, str]]  # (line, reason)
    problems: list[str]  # unmarked lines that cannot run, marks without a reason


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def parse(name: str, text: str) -> Page:
    """The page's steps, marks and problems, in page order."""
    page = Page(name, [], [], [])
    matches = list(FENCE.finditer(text))
    taken = set()  # indices of blocks read as a python block's output
    for index, match in enumerate(matches):
        if index in taken:
            continue
        language, body = match.group(1), match.group(2)
        body_line = _line_of(text, match.start(2))
        lines = body.splitlines()
        mark = ILLUSTRATIVE.match(lines[0].strip()) if lines else None
        if lines and lines[0].strip().startswith("#") and "illustrative" in lines[0] and mark is None:
            page.problems.append(f"{name}:{body_line}: an illustrative mark needs a reason")
        if mark and (language in ("python", *SHELL_LANGUAGES) or _is_transcript(lines)):
            page.illustrative.append((body_line, mark.group(1)))
            continue
        if language == "python":
            step = Step("python", body, body_line)
            following = matches[index + 1] if index + 1 < len(matches) else None
            if (
                following
                and following.group(1) == "text"
                and not text[match.end() : following.start()].strip()
            ):
                step.output = Output(_line_of(text, following.start(2)), following.group(2).splitlines())
                taken.add(index + 1)
            page.steps.append(step)
        elif language in SHELL_LANGUAGES:
            _shell_block(page, lines, body_line)
        elif _is_transcript(lines):
            _transcript(page, lines, body_line)
    return page


def _is_transcript(lines: list[str]) -> bool:
    return bool(lines) and lines[0].startswith("$ ")


def _logical_lines(lines: list[str], first: int) -> list[tuple[int, str]]:
    """(line number, text) with backslash continuations joined."""
    joined, start, parts = [], None, []
    for number, line in enumerate(lines, first):
        start = number if start is None else start
        if line.rstrip().endswith("\\"):
            parts.append(line.rstrip()[:-1].rstrip())
            continue
        parts.append(line.strip())
        joined.append((start, " ".join(p for p in parts if p)))
        start, parts = None, []
    if parts:
        joined.append((start, " ".join(parts)))
    return joined


def _shell_block(page: Page, lines: list[str], first: int) -> None:
    for number, line in _logical_lines(lines, first):
        if not line or line.startswith("#"):
            continue
        step = _command(page, number, line)
        if step is None:
            continue
        if not PACKAGE_COMMAND.search(line):
            page.problems.append(
                f"{page.name}:{number}: `{line}` calls no package command; run it some other way or "
                f"mark it `# illustrative: <why it is not run>`"
            )
            continue
        page.steps.append(step)


def _command(page: Page, number: int, line: str) -> Step | None:
    """The step of one shell line, or None when it is marked illustrative."""
    mark = ILLUSTRATIVE.search(line)
    if mark:
        page.illustrative.append((number, mark.group(1)))
        return None
    if "illustrative" in line.partition("#")[2]:
        page.problems.append(f"{page.name}:{number}: an illustrative mark needs a reason")
    exits = EXITS.search(line)
    return Step("shell", line, number, int(exits.group(1)) if exits else 0)


def _transcript(page: Page, lines: list[str], first: int) -> None:
    step = None
    for number, line in enumerate(lines, first):
        if line.startswith("$ "):
            step = _command(page, number, line[2:].strip())
            if step is not None:
                step.output = Output(number + 1, [])
                page.steps.append(step)
        elif step is not None:
            step.output.lines.append(line)
    for step in page.steps:
        if step.output is not None:
            _trim(step.output.lines)


def _trim(lines: list[str]) -> list[str]:
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


# ----------------------------------------------------------------------------- comparison
@dataclasses.dataclass
class _Pattern:
    regex: re.Pattern
    numbers: list[str]  # the shown numbers, in order


def _pattern(shown: str) -> _Pattern:
    parts, numbers = [], []
    for token in _TOKEN.finditer(shown.strip()):
        if token.group("number"):
            parts.append(f"({NUMBER})")
            numbers.append(token.group("number"))
        elif token.group("any"):
            parts.append(".*?")
        elif token.group("space"):
            parts.append(r"\s+")
        else:
            parts.append(re.escape(token.group("text")))
    return _Pattern(re.compile("".join(parts)), numbers)


def _value(number: str) -> float:
    return float(number.replace("−", "-"))


def _half_unit(number: str) -> float:
    """Half a unit in the last digit shown: the largest rounding error of `number`."""
    mantissa, _, exponent = number.lower().partition("e")
    decimals = len(mantissa.partition(".")[2])
    return 0.5 * 10.0 ** (int(exponent or 0) - decimals)


def _numbers_agree(shown: str, printed: str) -> bool:
    value, tolerance = _value(printed), _half_unit(shown)
    return math.isfinite(value) and abs(value - _value(shown)) <= tolerance * (1 + 1e-9)


def _line_match(shown: str, printed: str) -> re.Match | None:
    return _pattern(shown).regex.fullmatch(printed.strip())


def _place(shown: list[str], printed: list[str]) -> list[tuple[int, int]] | str:
    """(shown index, printed index) for every shown line but `...`, or what does not fit."""
    segments, current = [], []
    for index, line in enumerate(shown):
        if line.strip() == SKIP_LINES:
            segments.append(current)
            current = []
        else:
            current.append(index)
    segments.append(current)
    pairs, cursor = [], 0
    for number, segment in enumerate(segments):
        first, last = number == 0, number == len(segments) - 1
        starts = [cursor] if first else range(cursor, len(printed) - len(segment) + 1)
        start = next((s for s in starts if _fits(shown, segment, printed, s, last)), None)
        if start is None:
            return _misfit(shown, segment, printed, cursor)
        pairs += [(index, start + offset) for offset, index in enumerate(segment)]
        cursor = start + len(segment)
    return pairs


def _fits(shown: list[str], segment: list[int], printed: list[str], start: int, last: bool) -> bool:
    if start + len(segment) > len(printed) or (last and start + len(segment) != len(printed)):
        return False
    return all(_line_match(shown[i], printed[start + k]) for k, i in enumerate(segment))


def _misfit(shown: list[str], segment: list[int], printed: list[str], cursor: int) -> str:
    """The first shown line of a segment that matches no printed line where it should."""
    for offset, index in enumerate(segment):
        at = cursor + offset
        got = printed[at] if at < len(printed) else "(no more output)"
        if at >= len(printed) or not _line_match(shown[index], got):
            return f"+{index}: shown {shown[index].strip()!r}, printed {got.strip()!r}"
    return f"+{segment[-1] if segment else 0}: the output has {len(printed) - cursor - len(segment)} more line(s)"


def compare(shown: list[str], printed: list[str]) -> list[str]:
    """What differs, each as `+K: …` (K: the shown line's offset in its block); [] when it matches."""
    printed = _trim(list(printed))
    placed = _place(shown, printed)
    if isinstance(placed, str):
        return [placed]
    problems = []
    for index, at in placed:
        match = _line_match(shown[index], printed[at])
        pattern = _pattern(shown[index])
        for number, got in zip(pattern.numbers, match.groups()):
            if not _numbers_agree(number, got):
                problems.append(f"+{index}: shown {number}, printed {got} (in {printed[at].strip()!r})")
    return problems


def regenerate(shown: list[str], printed: list[str]) -> list[str]:
    """The shown lines with what the code prints now, keeping the shown precision, `...` and `…`.

    A block without `...` or `…` whose lines no longer fit is replaced by the whole output;
    ValueError when an abridged one no longer fits (edit it by hand).
    """
    printed = _trim(list(printed))
    placed = _place(shown, printed)
    if isinstance(placed, str):
        if any(line.strip() == SKIP_LINES or ANY_TEXT in line for line in shown):
            raise ValueError(f"abridged output no longer fits ({placed}); edit it by hand")
        return printed
    fresh = list(shown)
    for index, at in placed:
        match = _line_match(shown[index], printed[at])
        numbers = _pattern(shown[index]).numbers
        if all(_numbers_agree(n, g) for n, g in zip(numbers, match.groups())):
            continue
        fresh[index] = _renumbered(
            shown[index], [_rounded_like(n, g) for n, g in zip(numbers, match.groups())]
        )
    return fresh


def _renumbered(line: str, numbers: list[str]) -> str:
    values = iter(numbers)
    return re.sub(NUMBER, lambda _: next(values), line)


def _rounded_like(shown: str, printed: str) -> str:
    """`printed` written with as many digits as `shown` has."""
    value = _value(printed)
    mantissa, _, exponent = shown.lower().partition("e")
    decimals = len(mantissa.partition(".")[2])
    if exponent:
        text = f"{value:.{decimals}e}"
    else:
        text = f"{value:.{decimals}f}"
        if "." in mantissa and not decimals:
            text += "."
    return text.replace("-", "−") if "−" in shown else text
