"""The README's promises that can rot: its test command is the one CI runs, its worked
example runs and gives the closed form, its performance tables are the measured ones."""

import pathlib
import re

import numpy as np

from conftest import needs_backends

ROOT = pathlib.Path(__file__).resolve().parents[2]  # tests/app/ -> the repo
README = (ROOT / "README.md").read_text(encoding="utf-8")
TEST_COMMAND = "DECAY_REQUIRE_BACKENDS=all python -m pytest -q"


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert TEST_COMMAND in README
    assert re.search(r"^" + re.escape(TEST_COMMAND) + r"\s*$", ci, re.M), "CI must run the README's test command"


def test_performance_tables_are_the_measured_ones():
    # benchmarks/report.py renders each table from benchmarks/results/*.json; a re-run
    # benchmark without an updated README (or a hand-edited figure) fails here.
    import importlib.util

    spec = importlib.util.spec_from_file_location("report", ROOT / "benchmarks" / "report.py")
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    tables = report.tables()
    assert len(tables) == len(report.SECTIONS), "a results file is missing from benchmarks/results/"
    for table in tables:
        assert table in README, f"README's Performance section is out of date; run benchmarks/report.py:\n{table}"


def test_quickstart_has_two_commands():
    quickstart = README.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```sh\n(.*?)\n```", quickstart, re.S)
    assert len(commands) == 2
    assert commands[0].endswith("python -m decay")
    assert commands[1].endswith(TEST_COMMAND)


@needs_backends("torch", "tensorflow", why="the README's Python examples use PyTorch and run on every backend")
def test_readme_python_examples_run():
    blocks = re.findall(r"```python\n(.*?)\n```", README, re.S)
    # Self-contained examples start with their imports; the others are fragments.
    runnable = [b for b in blocks if b.startswith("import ") and "rule.step(params, grads, state)" not in b]
    assert len(runnable) >= 2
    namespaces = []
    for block in runnable:
        namespaces.append({})
        exec(compile(block, "README.md", "exec"), namespaces[-1])
    # The PyTorch block (the article's example) leaves x behind: check it against the closed form.
    x = next(ns["x"] for ns in namespaces if "torch" in ns and "x" in ns).detach().numpy()
    np.testing.assert_allclose(x, np.array([1.0, 2.0, 3.0]) * 0.978**100, rtol=1e-12)
