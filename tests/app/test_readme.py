"""The documentation's promises that can rot: every Python block of the README and of
docs/ runs as written and prints what the page shows, the test command is the one CI
runs, the performance tables are the measured ones."""

import contextlib
import io
import linecache
import pathlib
import re

import pytest

from conftest import needs_backends

ROOT = pathlib.Path(__file__).resolve().parents[2]  # tests/app/ -> the repo
README = (ROOT / "README.md").read_text(encoding="utf-8")
PAGES = ["README.md"] + sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))
TEST_COMMAND = "DECAY_REQUIRE_BACKENDS=all python -m pytest -q -n 2"
# A Python block followed (after blank lines only) by a ```text block: that is its output.
BLOCK = re.compile(r"```python\n(.*?)\n```[ \t]*\n(?:\s*\n)*(?:```text\n(.*?)\n```)?", re.S)


def blocks(page):
    """``(line, code, shown output or None)`` for every Python block of ``page``."""
    text = (ROOT / page).read_text(encoding="utf-8")
    out = []
    for match in BLOCK.finditer(text):
        out.append((text.count("\n", 0, match.start()) + 1, match.group(1), match.group(2)))
    assert text.count("```python") == len(out), f"{page}: a Python block the pattern missed"
    return out


def run_block(page, line, code):
    """Run one block in a fresh namespace, as a user pasting it would; its stdout."""
    stdout = io.StringIO()
    filename = f"<{page}:{line}>"
    # Its source where inspect looks for it (tf.function's AutoGraph reads it).
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    with contextlib.redirect_stdout(stdout):
        exec(compile(code, filename, "exec"), {"__name__": "__doc_block__"})
    return stdout.getvalue()


@needs_backends("torch", "tensorflow", why="the pages' examples use PyTorch and Keras")
@pytest.mark.parametrize("page", PAGES)
def test_every_python_block_runs_and_prints_what_the_page_shows(page):
    for line, code, shown in blocks(page):
        printed = run_block(page, line, code)
        if shown is not None:
            assert printed.rstrip() == shown.rstrip(), f"{page}:{line} printed\n{printed}\nthe page shows\n{shown}"
        else:
            assert printed == "", f"{page}:{line} prints, and the page does not show it:\n{printed}"


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert TEST_COMMAND in README
    assert re.search(r"^" + re.escape(TEST_COMMAND) + r"\s*$", ci, re.M), "CI must run the README's test command"


def test_performance_tables_are_the_measured_ones():
    # benchmarks/report.py renders each table from benchmarks/results/*.json; a re-run
    # benchmark without an updated page (or a hand-edited figure) fails here.
    import importlib.util

    spec = importlib.util.spec_from_file_location("report", ROOT / "benchmarks" / "report.py")
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    tables = report.tables()
    page = (ROOT / "docs" / "performance.md").read_text(encoding="utf-8")
    assert len(tables) == len(report.SECTIONS), "a results file is missing from benchmarks/results/"
    for table in tables:
        assert table in page, f"docs/performance.md is out of date; run benchmarks/report.py:\n{table}"


def test_quickstart_has_two_commands():
    quickstart = README.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```sh\n(.*?)\n```", quickstart, re.S)
    assert len(commands) == 2
    assert commands[0].endswith("python -m decay")
    assert commands[1].endswith(TEST_COMMAND)


def test_links_to_docs_exist():
    # docs/guarantees.md is written with issue 13's work; every other link must resolve.
    for page in PAGES:
        text = (ROOT / page).read_text(encoding="utf-8")
        base = (ROOT / page).parent
        for target in re.findall(r"\]\(([^)#:]+\.(?:md|png))\)", text):
            if target.endswith("guarantees.md"):
                continue
            assert (base / target).exists(), f"{page} links to {target}, which does not exist"


def _comparable(text):
    """The table without what varies between machines: ms per step, and the size of
    round-off differences (1.2e-16); losses, norms, exactness and verdicts stay."""
    lines = []
    for line in text.strip().splitlines():
        line = re.sub(r"\s+[\d.]+$", "", line) if re.match(r"^(numpy|torch|tensorflow) ", line) else line
        lines.append(re.sub(r"\d\.\de-\d\d", "<round-off>", line))
    return lines


@needs_backends("torch", "tensorflow", why="the page shows the default run on every backend with --natives")
def test_command_line_page_shows_the_default_run():
    # The one run at the default 1,000 steps: it must exit 0 (agree) and print what the page shows.
    import torch

    from decay.app import compare

    threads = torch.get_num_threads()
    try:
        compare.limit_threads(["torch"])
        result = compare.run(compare.Config(natives=True), progress=False)
    finally:
        torch.set_num_threads(threads)
    page = (ROOT / "docs" / "command-line.md").read_text(encoding="utf-8")
    shown = re.search(r"```text\n\$ python -m decay --natives --plot docs/compare.png\n(.*?)\n```", page, re.S)
    assert result.agree and not result.diverged
    assert _comparable(compare.format_table(result)) == _comparable(shown.group(1))
