"""The docstring examples of the public functions the README names run and print what they say."""

from __future__ import annotations

import doctest

import pytest

from medauc.evaluate import auc_ci, compare_files, delong_test, read_predictions


@pytest.mark.parametrize("function", [delong_test, auc_ci, compare_files, read_predictions], ids=lambda f: f.__name__)
def test_docstring_example_runs(function):
    tests = doctest.DocTestFinder(recurse=False).find(function, function.__name__, globs={})
    examples = sum(len(t.examples) for t in tests)
    assert examples >= 3, f"{function.__name__} has no Examples section with >>> lines"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for t in tests:
        runner.run(t)
    result = runner.summarize(verbose=False)
    assert result.failed == 0 and result.attempted == examples
